"""DDP on two Gloo CPU processes follows the one-process run with the same global batch.

The workers are module-level functions so that the started processes can import them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bcikit.train import CHECKPOINT_NAME, Trainer, load_checkpoint, run_distributed
from bcikit.train.ddp import find_free_port
from bcikit.utils import BcikitWarning

N_TRAIN, N_VALID, BATCH, EPOCHS = 99, 21, 16, 2  # 7 steps per epoch, the last one uneven (3)


def make_data():
    rng = np.random.default_rng(0)
    pattern = rng.standard_normal((4, 16))
    n = N_TRAIN + N_VALID
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 4, 16)) + 0.4 * (y - 1)[:, None, None] * pattern
    X = X.astype(np.float32)
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3))


class StepLosses:
    def __init__(self):
        self.steps = []

    def on_batch_end(self, trainer, step, logs):
        self.steps.append((step, logs["loss"], logs["batch_size"], logs["global_batch_size"]))


def fit(checkpoint_dir=None):
    Xtr, ytr, Xva, yva = make_data()
    rec = StepLosses()
    trainer = Trainer(make_model(), epochs=EPOCHS, batch_size=BATCH, lr=5e-3, device="cpu",
                      seed=3, checkpoint_dir=checkpoint_dir, callbacks=[rec], verbose=False)
    trainer.fit(Xtr, ytr, Xva, yva)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    return {"steps": rec.steps, "history": trainer.history_, "state": state,
            "world_size": trainer.world_size_, "rank": trainer.rank_}


def worker(checkpoint_dir, second_port):
    import torch.distributed as dist

    import bcikit.train.trainer as trainer_module

    torch.set_num_threads(1)
    saves = []
    real_save = trainer_module.save_checkpoint

    def counting_save(state, path):
        saves.append(str(path))
        return real_save(state, path)

    trainer_module.save_checkpoint = counting_save
    out = fit(checkpoint_dir)
    out["saves"] = saves
    # the torchrun path: no process group yet, only RANK/WORLD_SIZE/MASTER_* in the
    # environment; the Trainer initialises the group itself and destroys it afterwards
    import os

    dist.destroy_process_group()
    os.environ["MASTER_PORT"] = str(second_port)
    again = fit(None)
    out["env_init_history"] = again["history"]
    out["env_init_world"] = again["world_size"]
    out["group_left_open"] = dist.is_initialized()
    return out


def test_two_gloo_processes_follow_one_process_run(tmp_path):
    torch.set_num_threads(1)
    single = fit(None)
    assert single["world_size"] == 1
    results = run_distributed(worker, 2, "gloo", str(tmp_path), find_free_port())
    r0, r1 = results
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)

    # every step: the global batch is shared out (uneven last batch: 2 + 1 of 3 trials)
    n_steps = EPOCHS * 7
    assert len(single["steps"]) == len(r0["steps"]) == len(r1["steps"]) == n_steps
    for s, a, b in zip(single["steps"], r0["steps"], r1["steps"]):
        assert s[0] == a[0] == b[0] and s[2] == s[3] == a[3] == b[3]
        assert a[2] + b[2] == s[2] and abs(a[2] - b[2]) <= 1
        global_loss = (a[1] * a[2] + b[1] * b[2]) / (a[2] + b[2])
        assert global_loss == pytest.approx(s[1], rel=1e-4)
    assert [s[2] for s in single["steps"][:7]] == [16] * 6 + [3]

    # same model at the end, on both ranks
    for k, v in single["state"].items():
        torch.testing.assert_close(r0["state"][k], v, rtol=1e-4, atol=1e-5)
        assert torch.equal(r0["state"][k], r1["state"][k])

    # metrics are all-reduced: identical on both ranks, equal to the one-process values
    for h0, h1, hs in zip(r0["history"], r1["history"], single["history"]):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert h0[key] == h1[key]
            assert h0[key] == pytest.approx(hs[key], rel=1e-4)

    # only rank 0 writes the checkpoint, and it holds every rank's generator states
    assert len(r0["saves"]) == EPOCHS and r1["saves"] == []
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["epoch"] == EPOCHS and len(ckpt["rng"]) == 2
    assert ckpt["fingerprint"]["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]

    # resuming a 2-process checkpoint in one process works, but is flagged as not bit-exact
    Xtr, ytr, Xva, yva = make_data()
    more = Trainer(make_model(), epochs=EPOCHS + 1, batch_size=BATCH, lr=5e-3, device="cpu",
                   seed=3, checkpoint_dir=tmp_path, verbose=False)
    with pytest.warns(BcikitWarning, match="world_size=1 instead of 2"):
        more.fit(Xtr, ytr, Xva, yva)
    assert more.n_epochs_run_ == EPOCHS + 1 and len(more.history_) == EPOCHS + 1
    assert more.history_[:EPOCHS] == r0["history"]

    # environment-initialised group (torchrun style): same run, group destroyed afterwards
    for r in results:
        assert r["env_init_world"] == 2 and r["group_left_open"] is False
        assert [{k: v for k, v in row.items() if k != "time"} for row in r["env_init_history"]] \
            == [{k: v for k, v in row.items() if k != "time"} for row in r0["history"]]


def _fail_on_rank_one():
    import torch.distributed as dist

    if dist.get_rank() == 1:
        raise RuntimeError("site 1 failed")
    return "ok"


def test_run_distributed_fails_loudly_and_checks_arguments():
    with pytest.raises(Exception, match="site 1 failed"):
        run_distributed(_fail_on_rank_one, 2, "gloo")
    with pytest.raises(ValueError, match="'nproc'"):
        run_distributed(_fail_on_rank_one, 0)
    with pytest.raises(ValueError, match="'backend'"):
        run_distributed(_fail_on_rank_one, 2, "mpi")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nccl"):
            run_distributed(_fail_on_rank_one, 2, "nccl")


class AugNet(torch.nn.Module):
    """Dropout plus numpy/Python-drawn augmentation: every rank's generators matter."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16),
                                       torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                       torch.nn.Linear(16, 3))

    def forward(self, X):
        return self.net(X)

    def training_loss(self, X, y):
        import random

        noise = torch.from_numpy(np.random.standard_normal(tuple(X.shape)).astype(np.float32))
        logits = self(X + random.uniform(0.1, 0.3) * noise)
        return torch.nn.functional.cross_entropy(logits, y), logits


class Kill:
    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt


def resume_worker(checkpoint_dir, kill, init_seed):
    torch.set_num_threads(1)
    Xtr, ytr, Xva, yva = make_data()
    torch.manual_seed(init_seed)
    trainer = Trainer(AugNet(), epochs=3, batch_size=BATCH, scheduler="cosine", patience=5,
                      device="cpu", seed=1, checkpoint_dir=checkpoint_dir,
                      callbacks=[Kill()] if kill else [], verbose=False)
    try:
        trainer.fit(Xtr, ytr, Xva, yva)
    except KeyboardInterrupt:
        return None
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}, trainer.history_


def test_distributed_resume_after_kill_is_exact(tmp_path):
    full = run_distributed(resume_worker, 2, "gloo", str(tmp_path / "full"), False, 0)
    killed = run_distributed(resume_worker, 2, "gloo", str(tmp_path / "run"), True, 0)
    assert killed == [None, None]
    assert load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["epoch"] == 1
    resumed = run_distributed(resume_worker, 2, "gloo", str(tmp_path / "run"), False, 99)
    for (s_full, h_full), (s_res, h_res) in zip(full, resumed):
        assert all(torch.equal(s_full[k], s_res[k]) for k in s_full)
        assert [{k: v for k, v in r.items() if k != "time"} for r in h_full] \
            == [{k: v for k, v in r.items() if k != "time"} for r in h_res]
