"""The training engine: learning, determinism, exact resume, atomic checkpoints, early stopping,
validation hygiene and parameter checks. Tiny models on structured random data, one thread."""

from __future__ import annotations

import csv
import math
import random

import numpy as np
import pytest
import torch

from bcikit.train import (CHECKPOINT_NAME, HISTORY_KEYS, Trainer, load_checkpoint,
                          resolve_device, resolve_precision, save_checkpoint, set_seed)

N_CHANS, N_TIMES = 4, 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_data(seed: int, n: int = 160, sep: float = 0.6):
    """Two classes that differ by +/- a fixed spatio-temporal pattern (linearly separable)."""
    rng = np.random.default_rng(1000 + seed)
    pattern = np.random.default_rng(7).standard_normal((N_CHANS, N_TIMES))
    y = rng.integers(0, 2, n)
    X = rng.standard_normal((n, N_CHANS, N_TIMES)) + sep * (2 * y - 1)[:, None, None] * pattern
    return X.astype(np.float32), y.astype(np.int64)


class TinyNet(torch.nn.Module):
    def __init__(self, dropout: float = 0.25):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(N_CHANS * N_TIMES, 16), torch.nn.ReLU(),
            torch.nn.Dropout(dropout), torch.nn.Linear(16, 2))

    def forward(self, X):
        return self.net(X)


class AugNet(TinyNet):
    """Training steps draw from numpy's and Python's global generators (augmentation), so an
    exact resume needs every generator state restored, not only torch's."""

    def training_loss(self, X, y):
        noise = torch.from_numpy(np.random.standard_normal(tuple(X.shape)).astype(np.float32))
        logits = self(X + (0.1 + 0.2 * random.random()) * noise)
        return torch.nn.functional.cross_entropy(logits, y), logits


def make_model(seed: int = 0, cls=TinyNet) -> torch.nn.Module:
    torch.manual_seed(seed)
    return cls()


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def no_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def same_history(h1, h2) -> bool:
    """Row by row equal, NaN == NaN."""
    if len(h1) != len(h2):
        return False
    for r1, r2 in zip(no_time(h1), no_time(h2)):
        if r1.keys() != r2.keys():
            return False
        for k in r1:
            a, b = r1[k], r2[k]
            if not (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))):
                return False
    return True


class Killer:
    """Simulates a kill: raises KeyboardInterrupt at the end of epoch ``at``."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.at:
            raise KeyboardInterrupt


class Snapshots:
    """Copies the weights at the end of every epoch."""

    def __init__(self):
        self.states = {}

    def on_epoch_end(self, trainer, epoch, logs):
        self.states[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


# ---------------------------------------------------------------------------------- learning
def test_learns_separable_problem(global_random_seed):
    X, y = make_data(global_random_seed, n=240)
    Xtr, ytr, Xva, yva, Xte, yte = X[:160], y[:160], X[160:200], y[160:200], X[200:], y[200:]
    trainer = Trainer(make_model(global_random_seed), epochs=8, batch_size=32, lr=3e-3,
                      seed=global_random_seed, device="cpu", verbose=False)
    assert trainer.fit(Xtr, ytr, Xva, yva) is trainer
    assert trainer.device_ == torch.device("cpu") and trainer.precision_ == "fp32"
    assert trainer.keep_on_device_ is True and trainer.n_epochs_run_ == 8
    h = trainer.history_
    assert [row["epoch"] for row in h] == list(range(1, 9))
    assert all(set(row) == set(HISTORY_KEYS) for row in h)
    assert h[-1]["train_loss"] < 0.5 * h[0]["train_loss"]
    assert h[-1]["val_accuracy"] > 0.9
    # held-out trials: chance is 0.5; 40 trials -> 3 SE of chance is 0.74
    proba = trainer.predict_proba(Xte)
    assert proba.shape == (40, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    pred = trainer.predict(Xte)
    np.testing.assert_array_equal(pred, proba.argmax(1))
    acc = float(np.mean(pred == yte))
    assert acc > 0.9
    metrics = trainer.evaluate(Xte, yte)
    assert metrics["accuracy"] == pytest.approx(acc)
    ref = torch.nn.functional.cross_entropy(torch.log(torch.from_numpy(proba)),
                                            torch.from_numpy(yte)).item()
    assert metrics["loss"] == pytest.approx(ref, rel=1e-4)
    # the validation metrics in the history are what evaluate() gives for the final weights
    assert h[-1]["val_loss"] == pytest.approx(trainer.evaluate(Xva, yva)["loss"], rel=1e-6)


def test_bf16_autocast_on_cpu_learns(global_random_seed):
    X, y = make_data(global_random_seed, n=200)
    trainer = Trainer(make_model(global_random_seed), epochs=6, batch_size=32, lr=3e-3,
                      precision="bf16", device="cpu", seed=0, verbose=False).fit(X[:160], y[:160])
    assert trainer.precision_ == "bf16"
    assert np.mean(trainer.predict(X[160:]) == y[160:]) > 0.85


def test_training_loss_hook_and_loss_override():
    X, y = make_data(0, n=64)

    class Counting(TinyNet):
        calls = 0

        def training_loss(self, X, y):
            type(self).calls += 1
            logits = self(X)
            return torch.nn.functional.cross_entropy(logits, y), logits

    trainer = Trainer(make_model(0, Counting), epochs=2, batch_size=16, device="cpu",
                      verbose=False).fit(X, y)
    assert Counting.calls == 2 * 4  # used for every training step
    Counting.calls = 0
    seen = []

    def custom(model, Xb, yb):  # no logits: accuracy cannot be computed
        seen.append(len(Xb))
        return torch.nn.functional.cross_entropy(model(Xb), yb), None

    trainer = Trainer(make_model(0, Counting), epochs=1, batch_size=16, device="cpu",
                      loss=custom, verbose=False).fit(X, y, X[:10], y[:10])
    assert Counting.calls == 0 and seen == [16, 16, 16, 16, 10]  # 4 steps, then validation
    assert math.isnan(trainer.history_[0]["train_accuracy"])
    assert math.isnan(trainer.history_[0]["val_accuracy"])
    with pytest.raises(ValueError, match="val_accuracy"):
        Trainer(make_model(0), epochs=1, batch_size=16, device="cpu", loss=custom,
                monitor="val_accuracy", verbose=False).fit(X, y, X[:10], y[:10])


def test_scheduler_and_grad_clip():
    X, y = make_data(1, n=64)
    trainer = Trainer(make_model(1), epochs=4, batch_size=16, lr=1e-2, scheduler="cosine",
                      grad_clip=0.5, optimizer="sgd", device="cpu", verbose=False).fit(X, y)
    lrs = [row["lr"] for row in trainer.history_]
    assert lrs[0] == 1e-2
    # cosine over 4 epochs x 4 steps, value at the start of each epoch
    expected = [1e-2 * (1 + math.cos(math.pi * 4 * e / 16)) / 2 for e in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)

    seen = {}

    def sched(optimizer, steps_per_epoch, epochs):
        seen.update(steps_per_epoch=steps_per_epoch, epochs=epochs)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 ** (s // steps_per_epoch))

    trainer = Trainer(make_model(1), epochs=3, batch_size=16, lr=1e-2, scheduler=sched,
                      device="cpu", verbose=False).fit(X, y)
    assert seen == {"steps_per_epoch": 4, "epochs": 3}
    np.testing.assert_allclose([r["lr"] for r in trainer.history_], [1e-2, 5e-3, 2.5e-3])


# ------------------------------------------------------------------------------ determinism
def test_same_seed_same_weights_different_seed_different(global_random_seed):
    X, y = make_data(global_random_seed, n=96)

    def run(seed):
        return Trainer(make_model(0), epochs=3, batch_size=16, seed=seed, device="cpu",
                       verbose=False).fit(X, y, X[:20], y[:20])

    a, b, c = run(global_random_seed), run(global_random_seed), run(global_random_seed + 10)
    assert state_equal(a.model.state_dict(), b.model.state_dict())
    assert same_history(a.history_, b.history_)
    assert not state_equal(a.model.state_dict(), c.model.state_dict())


def test_device_batching_and_dataloader_give_identical_batches(tmp_path):
    X, y = make_data(3, n=100)
    np.save(tmp_path / "X.npy", X)
    X_mm = np.load(tmp_path / "X.npy", mmap_mode="r")  # memory-mapped, read-only

    def run(X_in, keep):
        return Trainer(make_model(0), epochs=2, batch_size=16, seed=5, device="cpu",
                       keep_on_device=keep, verbose=False).fit(X_in, y)

    ref = run(X, True)
    for X_in, keep in ((X, False), (X_mm, False), (X_mm, "auto"), (torch.from_numpy(X), True)):
        other = run(X_in, keep)
        assert other.keep_on_device_ is (keep if keep != "auto" else True)
        assert state_equal(ref.model.state_dict(), other.model.state_dict())


def test_set_seed_seeds_every_generator():
    set_seed(11)
    a = (random.random(), np.random.random(), torch.rand(1).item())
    set_seed(11)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == a
    with pytest.raises(ValueError, match="'seed'"):
        set_seed(-1)


# ----------------------------------------------------------------------- checkpoint, resume
def test_resume_after_kill_is_bitwise_exact(tmp_path, global_random_seed):
    X, y = make_data(global_random_seed, n=90)
    Xtr, ytr, Xva, yva = X[:70], y[:70], X[70:], y[70:]
    kwargs = dict(epochs=6, batch_size=16, lr=3e-3, scheduler="cosine", patience=10,
                  seed=global_random_seed, device="cpu", verbose=False)

    full = Trainer(make_model(0, AugNet), checkpoint_dir=tmp_path / "full", **kwargs)
    full.fit(Xtr, ytr, Xva, yva)

    killed = Trainer(make_model(0, AugNet), checkpoint_dir=tmp_path / "run",
                     callbacks=[Killer(at=3)], **kwargs)
    with pytest.raises(KeyboardInterrupt):
        killed.fit(Xtr, ytr, Xva, yva)
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 2  # epoch 3's checkpoint is written after its callbacks
    assert len(ckpt["history"]) == 2 and len(ckpt["rng"]) == 1

    # a fresh process would build a fresh model: its initial weights must not matter
    resumed = Trainer(make_model(123, AugNet), checkpoint_dir=tmp_path / "run", **kwargs)
    resumed.fit(Xtr, ytr, Xva, yva)
    assert resumed.n_epochs_run_ == 6 and full.n_epochs_run_ == 6
    assert state_equal(resumed.model.state_dict(), full.model.state_dict())
    assert same_history(resumed.history_, full.history_)
    assert resumed.best_epoch_ == full.best_epoch_

    # a finished run resumes to the same place without training further
    again = Trainer(make_model(5, AugNet), checkpoint_dir=tmp_path / "run", **kwargs)
    again.fit(Xtr, ytr, Xva, yva)
    assert state_equal(again.model.state_dict(), full.model.state_dict())
    assert same_history(again.history_, full.history_)


def test_resume_refuses_foreign_or_unwanted_checkpoint(tmp_path):
    X, y = make_data(0, n=48)
    Trainer(make_model(0), epochs=1, batch_size=16, device="cpu", checkpoint_dir=tmp_path,
            verbose=False).fit(X, y)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(FileExistsError, match="resume=False"):
        Trainer(make_model(0), epochs=2, batch_size=16, device="cpu", checkpoint_dir=tmp_path,
                resume=False, verbose=False).fit(X, y)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(make_model(0), epochs=2, batch_size=8, device="cpu", checkpoint_dir=tmp_path,
                verbose=False).fit(X, y)
    with pytest.raises(ValueError, match="n_train"):
        Trainer(make_model(0), epochs=2, batch_size=16, device="cpu", checkpoint_dir=tmp_path,
                verbose=False).fit(X[:40], y[:40])
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    X, y = make_data(2, n=48)
    kwargs = dict(batch_size=16, device="cpu", checkpoint_dir=tmp_path, verbose=False)
    Trainer(make_model(0), epochs=2, **kwargs).fit(X, y)
    path = tmp_path / CHECKPOINT_NAME
    before = path.read_bytes()

    real_save = torch.save

    def failing_save(obj, f, *args, **kw):
        f.write(b"half a checkpoint")  # some bytes reach the disk, then the write dies
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        Trainer(make_model(0), epochs=4, **kwargs).fit(X, y)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before  # the previous checkpoint is intact...
    assert load_checkpoint(path)["epoch"] == 2  # ...and readable
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]  # no temp file left

    # direct use: a failed save leaves the old file; a good one replaces it
    with monkeypatch.context() as m:
        m.setattr(torch, "save", failing_save)
        with pytest.raises(OSError):
            save_checkpoint({"x": torch.ones(2)}, path)
    assert path.read_bytes() == before
    save_checkpoint({"x": torch.arange(3)}, path)
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------- early stopping, splits
@pytest.mark.parametrize("monitor", ["val_loss", "val_accuracy"])
def test_early_stopping_restores_best_weights(global_random_seed, monitor):
    X, y = make_data(global_random_seed, n=160)
    # flipped validation labels: the better the model learns the training set, the worse the
    # validation loss, so the stop is early and the best epoch is known from the history
    Xva, yva = X[120:], 1 - y[120:]
    snaps = Snapshots()
    trainer = Trainer(make_model(global_random_seed), epochs=30, batch_size=16, lr=3e-3,
                      patience=3, monitor=monitor, seed=global_random_seed, device="cpu",
                      callbacks=[snaps], verbose=False).fit(X[:120], y[:120], Xva, yva)
    h = trainer.history_
    if monitor == "val_loss":
        best = int(np.argmin([r["val_loss"] for r in h])) + 1
    else:  # highest accuracy, ties -> lower loss -> earlier epoch
        best = min(h, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["epoch"]))["epoch"]
    assert trainer.best_epoch_ == best
    assert trainer.n_epochs_run_ == best + 3 < 30 and len(h) == best + 3
    assert state_equal(trainer.model.state_dict(), snaps.states[best])
    assert not state_equal(trainer.model.state_dict(), snaps.states[best + 3])


def test_validation_data_never_drive_gradient_steps(global_random_seed):
    X, y = make_data(global_random_seed, n=120)
    rng = np.random.default_rng(global_random_seed)
    Xva = rng.standard_normal((40, N_CHANS, N_TIMES)).astype(np.float32) * 5
    yva = rng.integers(0, 2, 40)

    def run(*valid):
        return Trainer(make_model(0), epochs=3, batch_size=16, seed=1, device="cpu",
                       verbose=False).fit(X[:80], y[:80], *valid)

    without, with_valid = run(), run(Xva, yva)
    assert state_equal(without.model.state_dict(), with_valid.model.state_dict())
    assert all(math.isnan(r["val_loss"]) for r in without.history_)
    assert all(math.isfinite(r["val_loss"]) for r in with_valid.history_)
    assert without.best_epoch_ == 3


# ------------------------------------------------------------------------------- history
def test_history_csv_round_trip(tmp_path):
    X, y = make_data(4, n=48)
    trainer = Trainer(make_model(0), epochs=3, batch_size=16, device="cpu",
                      verbose=False).fit(X, y, X[:16], y[:16])
    path = tmp_path / "history.csv"
    trainer.save_history(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(HISTORY_KEYS)
    assert len(rows) == 3
    for row, ref in zip(rows, trainer.history_):
        assert int(row["epoch"]) == ref["epoch"]
        for k in HISTORY_KEYS[1:]:
            assert float(row[k]) == ref[k]  # written with full precision
    with pytest.raises(FileExistsError, match="history.csv"):
        trainer.save_history(path)
    trainer.save_history(path, overwrite=True)
    with pytest.raises(RuntimeError, match="fit"):
        Trainer(make_model(0)).save_history(tmp_path / "other.csv")


def test_progress_bar_quiet_unless_asked(capsys):
    X, y = make_data(0, n=32)
    Trainer(make_model(0), epochs=2, batch_size=16, device="cpu").fit(X, y)
    assert capsys.readouterr().err == ""  # not a terminal: quiet
    Trainer(make_model(0), epochs=2, batch_size=16, device="cpu", verbose=True).fit(X, y)
    assert "Training" in capsys.readouterr().err


# ------------------------------------------------------------------------ parameter checks
@pytest.mark.parametrize("kwargs, name, err", [
    ({"device": "tpu"}, "device", ValueError),
    ({"device": "cuda:99"}, "device", ValueError),
    ({"device": 3}, "device", TypeError),
    ({"epochs": 0}, "epochs", ValueError),
    ({"epochs": 2.5}, "epochs", TypeError),
    ({"precision": "fp8"}, "precision", ValueError),
    ({"batch_size": 0}, "batch_size", ValueError),
    ({"lr": 0.0}, "lr", ValueError),
    ({"optimizer": "rmsprop"}, "optimizer", ValueError),
    ({"weight_decay": -1.0}, "weight_decay", ValueError),
    ({"scheduler": "step"}, "scheduler", ValueError),
    ({"loss": "mse"}, "loss", TypeError),
    ({"patience": 0}, "patience", ValueError),
    ({"monitor": "val_f1"}, "monitor", ValueError),
    ({"seed": -1}, "seed", ValueError),
    ({"keep_on_device": "sometimes"}, "keep_on_device", ValueError),
    ({"grad_clip": -1.0}, "grad_clip", ValueError),
    ({"resume": "yes"}, "resume", TypeError),
    ({"callbacks": [object()]}, "callbacks", TypeError),
    ({"verbose": "loud"}, "verbose", TypeError),
])
def test_bad_parameters_name_the_parameter(kwargs, name, err):
    X, y = make_data(0, n=32)
    trainer = Trainer(make_model(0), **kwargs)  # __init__ only stores
    with pytest.raises(err, match=f"'{name}'"):
        trainer.fit(X, y)


def test_bad_data_and_device_errors():
    X, y = make_data(0, n=32)
    model = make_model(0)
    with pytest.raises(ValueError, match="'patience'"):
        Trainer(model, patience=2, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="'precision'"):
        Trainer(model, precision="fp16", device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="'y_train'"):
        Trainer(model, device="cpu").fit(X, y[:-1])
    with pytest.raises(ValueError, match="integer class codes"):
        Trainer(model, device="cpu").fit(X, y.astype(float))
    with pytest.raises(ValueError, match="class code 2"):
        Trainer(model, device="cpu", epochs=1).fit(X, np.where(y == 1, 2, 0))
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="'X_train'.*NaN"):
        Trainer(model, device="cpu").fit(bad, y)
    with pytest.raises(ValueError, match="X_valid and y_valid"):
        Trainer(model, device="cpu").fit(X, y, X_valid=X)
    with pytest.raises(ValueError, match="'X_valid'"):
        Trainer(model, device="cpu").fit(X, y, X[:, :2], y)
    with pytest.raises(ValueError, match="'model'|no trainable"):
        Trainer(torch.nn.Identity(), device="cpu").fit(X, y)
    with pytest.raises(TypeError, match="'model'"):
        Trainer("eegnet").fit(X, y)


def test_resolve_device_and_precision():
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'device'.*CUDA is not available"):
            resolve_device("cuda")
    else:  # pragma: no cover - GPU machines
        assert resolve_device("cuda") == torch.device("cuda", 0)
        assert resolve_precision("auto", torch.device("cuda", 0)) in ("bf16", "fp16")
