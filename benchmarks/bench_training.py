"""Training benchmark: bcikit's Trainer vs braindecode's EEGClassifier on the same model and data.

Both sides train the same network (``ShallowFBCSPNet`` and ``EEGNet`` from braindecode, built by
``bcikit.models.get_model``) from the same initial weights on the same data for the same number
of epochs, with the same optimiser, batch size and validation set, on the CPU with the same
number of torch threads. What is measured, per model and side:

``fit_time_s``
    Wall time of ``Trainer(...).fit(...)`` / ``EEGClassifier(...).fit(...)`` (construction
    included; both are cheap), every epoch's training pass and validation pass included.
``trials_per_s``
    ``n_train * epochs / fit_time_s``: training throughput, the headline number.
``steady_epoch_s``
    Median duration of epochs 2..N as each library records it (bcikit ``history_[i]['time']``,
    skorch ``history[i]['dur']`` from its ``EpochTimer``): throughput without the first epoch's
    one-off costs (oneDNN primitive creation and the like).
``peak_rss_delta_mb``
    Peak resident set size during the fit minus the resident set size just before it
    (``resource.getrusage(...).ru_maxrss`` in a fresh process; torch's C++ allocations are
    invisible to ``tracemalloc``, so it is not used here).

Every (model, side, repeat) runs in a **fresh Python process** (this script re-invoked with a
private ``--_worker`` flag), so one side never inherits the other's warm caches, allocator state
or lazily imported modules, and the peak RSS of one fit is not hidden by an earlier one. Each
worker imports the modules of *both* sides (bcikit.train, braindecode, skorch) before timing,
so the import state is identical, and builds one throw-away ``torch.optim.AdamW`` before timing
(its first construction imports ``torch._dynamo``, 2-4 s that either side would otherwise pay
inside ``fit``). The order of the sides rotates by one place every repeat.

The data: ``bcikit.simulate.make_motor_imagery`` shaped like BNCI2014_001 (one subject, one
session of 6 runs x 48 trials, 4 classes, 22 channels, 250 Hz, 4 s trials = 288 trials), runs
1-5 for training (240 trials) and run 6 for validation (48 trials), every channel standardised
with the mean and standard deviation of the training runs (``ChannelScaler``). The data are
simulated once by the parent process and handed to the workers as one ``.npz`` file; the
model is built once (``torch.manual_seed(seed)``) and its initial ``state_dict`` handed to the
workers, which check its SHA-256 before training (the subprocess form of "build once, deepcopy
into both").

What each side does every epoch (kept equivalent on purpose; see the README). ``bcikit`` is
the Trainer with its default ``fast_kernels='auto'`` (equivalent conv1d kernels and reuse of
freed host memory during ``fit``), ``bcikit_plain`` the same Trainer with ``fast_kernels=False``;
braindecode's side always trains the unmodified module with torch's own kernels.

bcikit ``Trainer(model, epochs, batch_size, lr, optimizer='adamw', weight_decay,
device='cpu', precision='fp32', seed, verbose=False)``
    Shuffled batches (a generator seeded by ``(seed, epoch)``), forward, cross-entropy,
    backward, AdamW step; the running training loss and accuracy (from the training-mode
    logits); a validation pass in eval mode (loss and accuracy); one history row. No progress
    bar, no checkpoint, no early stopping, no callbacks.
braindecode ``EEGClassifier(model, criterion=CrossEntropyLoss, optimizer=AdamW, lr,
optimizer__weight_decay, batch_size, max_epochs, train_split=predefined_split(valid),
iterator_train__drop_last=False, callbacks=[train_acc], callbacks__print_log=None,
device='cpu')``
    Shuffled batches (torch's global generator, seeded before ``fit``), forward,
    cross-entropy, backward, AdamW step; skorch's default callbacks minus ``print_log``:
    ``epoch_timer``, ``train_loss`` and ``valid_loss`` (batch-size-weighted means of the batch
    losses), braindecode's ``valid_acc`` (accuracy of the cached validation predictions); plus
    ``train_acc`` = ``EpochScoring('accuracy', on_train=True)`` (accuracy of the cached
    training-mode predictions, what bcikit reports as ``train_accuracy``). A validation pass
    in eval mode. The last batch is kept (braindecode drops it by default; bcikit keeps it).

After each fit the worker scores the trained network on the training and validation sets with
the same plain evaluation code for both sides (eval mode, no gradient), so the final losses and
accuracies are comparable; the libraries' own final history rows are stored too.

Usage::

    python benchmarks/bench_training.py [--repeats N] [--epochs N] [--threads N]
                                       [--models ShallowFBCSPNet EEGNet] [--batch-size N]
                                       [--lr X] [--weight-decay X] [--seed N]
                                       [--out benchmarks/results/training.json] [--overwrite]
                                       [--update-readme]
    python benchmarks/bench_training.py --table-from benchmarks/results/training.json
                                       [--update-readme]

Speed is never asserted: this is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

DEFAULT_OUT = C.RESULTS / "training.json"
DEFAULT_MODELS = ("ShallowFBCSPNet", "EEGNet")
#: ``bcikit``: the Trainer as users get it (``fast_kernels='auto'``, on for the CPU);
#: ``bcikit_plain``: the same Trainer with ``fast_kernels=False`` (torch's own kernels and
#: allocator settings, i.e. the Trainer before the substitution existed).
SIDES = ("bcikit", "braindecode", "bcikit_plain")
PLAIN = "bcikit_plain"
#: The optional third side: bcikit imported from ``--baseline`` (an earlier version).
BASELINE = "bcikit_baseline"

#: The simulated recording: BNCI2014_001-like, one subject, one session.
DATA = {"n_subjects": 1, "n_sessions": 1, "n_runs": 6, "n_classes": 4,
        "n_trials_per_class": 72, "sfreq": 250.0, "trial_duration": 4.0}
VALID_RUN = "6"
WORKER_TIMEOUT_S = 3600


# ------------------------------------------------------------------------------------- set-up
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3,
                   help="fits per model and side, each in a fresh process (default 3)")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                   help=f"braindecode model classes (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=float, default=1e-2,
                   help="AdamW weight decay (default 1e-2)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads in every worker (default 1; also sets "
                        "OMP/MKL/OpenBLAS threads)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data, the initial weights and both fits (default 0)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"JSON results file (default {DEFAULT_OUT.relative_to(C.REPO)})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite the training table in benchmarks/README.md")
    p.add_argument("--table-from", type=Path, default=None, metavar="JSON",
                   help="measure nothing: print the tables of an existing results file (and "
                        "with --update-readme put them into benchmarks/README.md)")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="also time the Trainer of another bcikit version: DIR holds its "
                        "'bcikit' package (e.g. a git worktree of an earlier commit) and is put "
                        "first on PYTHONPATH for a third side, 'bcikit_baseline'")
    p.add_argument("--_worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._worker is not None or args.table_from is not None:
        if args.table_from is not None and not args.table_from.is_file():
            p.error(f"--table-from: {str(args.table_from)!r} does not exist")
        return args
    for name in ("repeats", "epochs", "batch_size", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    if args.lr <= 0 or args.weight_decay < 0:
        p.error(f"--lr must be > 0 and --weight-decay >= 0; got {args.lr}, {args.weight_decay}")
    if not 0 <= args.seed < 2**32:
        p.error(f"--seed must be in [0, 2**32 - 1]; got {args.seed}")
    if args.baseline is not None and not (args.baseline / "bcikit" / "__init__.py").is_file():
        p.error(f"--baseline: {str(args.baseline)!r} holds no 'bcikit' package "
                "(bcikit/__init__.py)")
    if args.out.exists() and not args.overwrite:
        p.error(f"{str(args.out)!r} already exists; pass --overwrite to replace it")
    return args


def make_data(seed: int, path: Path) -> dict[str, Any]:
    """Simulate the recording, split by run, standardise, save ``Xtr, ytr, Xva, yva``."""
    import numpy as np

    from bcikit.data.transforms import ChannelScaler
    from bcikit.simulate import make_motor_imagery

    t0 = time.perf_counter()
    ts = make_motor_imagery(**DATA, seed=seed, verbose=False)
    runs = ts.meta["run"].astype(str).to_numpy()
    train_idx = np.flatnonzero(runs != VALID_RUN)
    valid_idx = np.flatnonzero(runs == VALID_RUN)
    train, valid = ts.subset(train_idx), ts.subset(valid_idx)
    scaler = ChannelScaler().fit(train)
    arrays = {"Xtr": np.ascontiguousarray(scaler.transform(train).X, dtype=np.float32),
              "ytr": np.asarray(train.y, dtype=np.int64),
              "Xva": np.ascontiguousarray(scaler.transform(valid).X, dtype=np.float32),
              "yva": np.asarray(valid.y, dtype=np.int64)}
    np.savez(path, **arrays)
    return {"simulator": "bcikit.simulate.make_motor_imagery", "params": {**DATA, "seed": seed},
            "ch_names": list(ts.ch_names), "classes": list(ts.classes),
            "train_runs": sorted(set(runs[train_idx].tolist())), "valid_runs": [VALID_RUN],
            "n_train": int(len(train_idx)), "n_valid": int(len(valid_idx)),
            "trial_shape": list(arrays["Xtr"].shape[1:]),
            "train_class_counts": np.bincount(arrays["ytr"]).tolist(),
            "valid_class_counts": np.bincount(arrays["yva"]).tolist(),
            "scaling": "ChannelScaler fitted on the training runs (per-channel mean and "
                       "standard deviation over trials and samples), applied to both splits",
            "seconds_to_simulate": time.perf_counter() - t0}


def _model_kwargs(data_info: dict[str, Any]) -> dict[str, Any]:
    n_chans, n_times = data_info["trial_shape"]
    return {"n_chans": int(n_chans), "n_outputs": len(data_info["classes"]),
            "n_times": int(n_times), "sfreq": float(DATA["sfreq"])}


def state_hash(model) -> str:
    """SHA-256 of every tensor of ``model.state_dict()`` (names, dtypes, shapes and bytes)."""
    import torch

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, raw bytes
    return h.hexdigest()


def make_initial_weights(name: str, kwargs: dict[str, Any], seed: int, path: Path
                         ) -> dict[str, Any]:
    import torch

    from bcikit.models import count_parameters, get_model

    torch.manual_seed(seed)
    model = get_model(name, **kwargs)
    torch.save(model.state_dict(), path)
    return {"class": f"{type(model).__module__}.{type(model).__name__}", "kwargs": kwargs,
            "n_parameters": count_parameters(model), "initial_state_sha256": state_hash(model)}


# ------------------------------------------------------------------------------------ workers
def run_worker(spec: dict[str, Any], scratch: Path, *, env_extra: dict[str, str] | None = None
               ) -> dict[str, Any]:
    """Run one fit in a fresh Python process and return what it measured."""
    tag = f"{spec['model']}-{spec['side']}-{spec['repeat']}"
    spec_path = scratch / f"spec-{tag}.json"
    spec = {**spec, "result_path": str(scratch / f"result-{tag}.json")}
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    n = str(spec["threads"])
    env.update({"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
                "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": ""})
    env.update(env_extra or {})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker",
                           str(spec_path)], env=env, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S, check=False)
    if proc.returncode != 0 or not Path(spec["result_path"]).is_file():
        raise RuntimeError(f"worker {tag} failed (exit status {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    out = json.loads(Path(spec["result_path"]).read_text())
    out["process_wall_s"] = time.perf_counter() - t0
    return out


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / C.MB


def _maxrss_mb() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / C.MB  # bytes on macOS


def _score(model, X, y, batch_size: int) -> dict[str, float]:
    """Mean cross-entropy and accuracy in eval mode, the same code for both sides."""
    import torch

    model.eval()
    loss = correct = 0.0
    with torch.no_grad():
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        for start in range(0, len(Xt), batch_size):
            logits = model(Xt[start:start + batch_size])
            yb = yt[start:start + batch_size]
            loss += float(torch.nn.functional.cross_entropy(logits, yb, reduction="sum"))
            correct += float((logits.argmax(1) == yb).sum())
    return {"loss": loss / len(Xt), "accuracy": correct / len(Xt)}


def worker_main(spec_path: Path) -> int:
    """The body of one worker process: one fit, measured; results written as JSON."""
    import gc
    import inspect
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    spec = json.loads(Path(spec_path).read_text())
    load_start = list(os.getloadavg())
    t_import = time.perf_counter()
    import logging

    import numpy as np
    import torch

    torch.set_num_threads(int(spec["threads"]))
    torch.set_num_interop_threads(1)
    # the modules of both sides, whichever side runs: identical import state
    import skorch  # noqa: F401
    from braindecode import EEGClassifier
    from skorch.callbacks import EpochScoring
    from skorch.dataset import Dataset
    from skorch.helper import predefined_split

    import bcikit
    from bcikit.models import get_model
    from bcikit.train import Trainer

    logging.getLogger("braindecode").setLevel(logging.WARNING)
    import_s = time.perf_counter() - t_import

    data = np.load(spec["data_path"])
    Xtr, ytr, Xva, yva = (np.ascontiguousarray(data[k]) for k in ("Xtr", "ytr", "Xva", "yva"))
    model = get_model(spec["model"], **spec["model_kwargs"])
    model.load_state_dict(torch.load(spec["init_path"]))
    init_ok = state_hash(model) == spec["init_sha256"]
    if not init_ok:
        raise RuntimeError("the initial weights differ from the parent's")
    # the first optimiser built in a process imports torch._dynamo: pay it before timing
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    side, epochs, bs = spec["side"], int(spec["epochs"]), int(spec["batch_size"])
    gc.collect()
    rss_before = _rss_mb()
    maxrss_before = _maxrss_mb()

    if side in ("bcikit", PLAIN, BASELINE):
        # only bcikit_plain names fast_kernels (an older Trainer, the baseline, lacks it)
        extra = {"fast_kernels": False} if side == PLAIN else {}
        t0, c0 = time.perf_counter(), time.process_time()
        trainer = Trainer(model, epochs=epochs, batch_size=bs, lr=spec["lr"],
                          optimizer="adamw", weight_decay=spec["weight_decay"], device="cpu",
                          precision="fp32", seed=int(spec["seed"]), verbose=False, **extra)
        trainer.fit(Xtr, ytr, Xva, yva)
        fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        h = trainer.history_
        epoch_s = [float(r["time"]) for r in h]
        final = {"train_loss": h[-1]["train_loss"], "train_accuracy": h[-1]["train_accuracy"],
                 "val_loss": h[-1]["val_loss"], "val_accuracy": h[-1]["val_accuracy"]}
        per_epoch_train_loss = [float(r["train_loss"]) for r in h]
        details = {"bcikit_version": bcikit.__version__,
                   "trainer_source": str(Path(inspect.getfile(Trainer)).resolve()),
                   "trainer_sha256": hashlib.sha256(
                       Path(inspect.getfile(Trainer)).read_bytes()).hexdigest(),
                   "optimizer_implementation": (
                       Trainer._optimizer_impl(trainer.model, list(trainer.model.parameters()))
                       if hasattr(Trainer, "_optimizer_impl") else "torch default"),
                   "keep_on_device": trainer.keep_on_device_, "precision": trainer.precision_,
                   "fast_kernels": getattr(trainer, "fast_kernels", None),
                   "substituted_kernels": [list(t) for t in getattr(trainer, "fast_kernels_",
                                                                    [])],
                   "epochs_run": trainer.n_epochs_run_}
        trained = trainer.model
    elif side == "braindecode":
        torch.manual_seed(int(spec["seed"]))
        np.random.seed(int(spec["seed"]))
        t0, c0 = time.perf_counter(), time.process_time()
        clf = EEGClassifier(
            model, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.AdamW,
            lr=spec["lr"], optimizer__weight_decay=spec["weight_decay"], batch_size=bs,
            max_epochs=epochs, train_split=predefined_split(Dataset(Xva, yva)), device="cpu",
            iterator_train__shuffle=True, iterator_train__drop_last=False,
            callbacks=[("train_acc", EpochScoring("accuracy", on_train=True, name="train_acc",
                                                  lower_is_better=False))],
            callbacks__print_log=None)
        clf.fit(Xtr, ytr)
        fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        h = clf.history
        epoch_s = [float(r["dur"]) for r in h]
        final = {"train_loss": float(h[-1]["train_loss"]),
                 "train_accuracy": float(h[-1]["train_acc"]),
                 "val_loss": float(h[-1]["valid_loss"]),
                 "val_accuracy": float(h[-1]["valid_acc"])}
        per_epoch_train_loss = [float(r["train_loss"]) for r in h]
        details = {"callbacks": [name for name, _ in clf.callbacks_],
                   "module_is_the_given_model": clf.module_ is model,
                   "train_batches_per_epoch": int(h[-1]["train_batch_count"]),
                   "epochs_run": len(h)}
        trained = clf.module_
    else:
        raise ValueError(f"unknown side {side!r}; expected one of {SIDES + (BASELINE,)}")
    maxrss_after = _maxrss_mb()

    steady = epoch_s[1:] if len(epoch_s) > 1 else epoch_s
    result = {
        "side": side, "model": spec["model"], "repeat": spec["repeat"],
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
        "import_s": import_s, "initial_weights_match": init_ok,
        "fit_time_s": fit_s, "trials_per_s": len(Xtr) * epochs / fit_s,
        # CPU time of the process during the fit: less sensitive than wall time to other jobs
        "fit_cpu_s": cpu_s, "trials_per_cpu_s": len(Xtr) * epochs / cpu_s,
        "epoch_s": epoch_s, "steady_epoch_s": statistics.median(steady),
        "rss_before_mb": rss_before, "maxrss_before_mb": maxrss_before,
        "maxrss_after_mb": maxrss_after, "peak_rss_delta_mb": maxrss_after - rss_before,
        # when the fit did not raise the process's high-water mark, the delta is an upper bound
        "peak_is_upper_bound": not maxrss_after > maxrss_before,
        "final_history": final, "train_loss_per_epoch": per_epoch_train_loss,
        "scored_after_fit": {"train": _score(trained, Xtr, ytr, bs),
                             "valid": _score(trained, Xva, yva, bs)},
        "details": details,
    }
    tmp = Path(spec["result_path"] + ".tmp")
    tmp.write_text(json.dumps(result, default=float))
    os.replace(tmp, spec["result_path"])
    return 0


# ------------------------------------------------------------------------------------ running
def _summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": values}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("fit_time_s", "trials_per_s", "fit_cpu_s", "trials_per_cpu_s", "steady_epoch_s",
            "peak_rss_delta_mb")
    out = {k: _summary([r[k] for r in runs]) for k in keys}
    last = runs[-1]
    out["final_history"] = last["final_history"]
    out["scored_after_fit"] = last["scored_after_fit"]
    out["same_result_every_repeat"] = all(
        r["final_history"] == last["final_history"] for r in runs)
    out["peak_is_upper_bound_in_any_repeat"] = any(r["peak_is_upper_bound"] for r in runs)
    out["torch_num_threads"] = sorted({r["torch_num_threads"] for r in runs})
    out["details"] = last["details"]
    return out


def compare(a: str, b: str, cases: dict[str, Any], runs: dict[str, list[dict[str, Any]]]
            ) -> dict[str, Any]:
    """Side ``a`` over side ``b``: throughput above 1 means ``a`` trains faster, memory below 1
    means ``a`` needs less."""
    ca, cb = cases[a], cases[b]
    paired = [ra["trials_per_s"] / rb["trials_per_s"] for ra, rb in zip(runs[a], runs[b])]
    fa, fb = ca["scored_after_fit"], cb["scored_after_fit"]
    mem_b = cb["peak_rss_delta_mb"]["median"]
    return {
        "throughput": ca["trials_per_s"]["median"] / cb["trials_per_s"]["median"],
        "throughput_paired_median": statistics.median(paired),
        "throughput_paired_values": paired,
        "throughput_cpu_time": ca["trials_per_cpu_s"]["median"] / cb["trials_per_cpu_s"]["median"],
        "steady_epoch_speed": cb["steady_epoch_s"]["median"] / ca["steady_epoch_s"]["median"],
        "peak_rss_delta": ca["peak_rss_delta_mb"]["median"] / mem_b if mem_b > 0 else None,
        "final_train_loss_difference": ca["final_history"]["train_loss"]
            - cb["final_history"]["train_loss"],
        "scored_train_accuracy_difference": fa["train"]["accuracy"] - fb["train"]["accuracy"],
        "scored_valid_accuracy_difference": fa["valid"]["accuracy"] - fb["valid"]["accuracy"],
    }


def _pairs(sides: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = [("bcikit", "braindecode")]
    if PLAIN in sides:
        pairs += [("bcikit", PLAIN), (PLAIN, "braindecode")]
    if BASELINE in sides:
        pairs += [("bcikit", BASELINE), (BASELINE, "braindecode")]
    return pairs


def run_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    data_path = scratch / "data.npz"
    data_info = make_data(args.seed, data_path)
    print(f"data: {data_info['n_train']} training + {data_info['n_valid']} validation trials "
          f"of shape {data_info['trial_shape']} ({data_info['seconds_to_simulate']:.1f} s to "
          "simulate)", flush=True)
    kwargs = _model_kwargs(data_info)
    models: dict[str, Any] = {}
    for name in args.models:
        init_path = scratch / f"init-{name}.pt"
        models[name] = {"model": make_initial_weights(name, kwargs, args.seed, init_path),
                        "init_path": init_path}
    sides = SIDES + ((BASELINE,) if args.baseline is not None else ())
    baseline_env = ({"PYTHONPATH": os.pathsep.join(
        [str(args.baseline.resolve())] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
        if args.baseline is not None else None)
    runs: dict[str, dict[str, list]] = {m: {s: [] for s in sides} for m in args.models}
    for repeat in range(args.repeats):
        # every side runs first, second, ... in turn (two sides: they alternate)
        order = sides[repeat % len(sides):] + sides[:repeat % len(sides)]
        for name in args.models:
            for side in order:
                spec = {"side": side, "model": name, "repeat": repeat, "model_kwargs": kwargs,
                        "data_path": str(data_path),
                        "init_path": str(models[name]["init_path"]),
                        "init_sha256": models[name]["model"]["initial_state_sha256"],
                        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                        "weight_decay": args.weight_decay, "threads": args.threads,
                        "seed": args.seed}
                r = run_worker(spec, scratch,
                               env_extra=baseline_env if side == BASELINE else None)
                runs[name][side].append(r)
                print(f"  repeat {repeat + 1}/{args.repeats}  {name:16s} {side:15s} "
                      f"fit {r['fit_time_s']:7.2f} s  {r['trials_per_s']:7.1f} trials/s  "
                      f"steady epoch {r['steady_epoch_s']:6.2f} s  "
                      f"peak RSS +{r['peak_rss_delta_mb']:6.1f} MB  "
                      f"train loss {r['final_history']['train_loss']:.4f}  "
                      f"(load {r['load_average_start'][0]:.1f})", flush=True)
    out: dict[str, Any] = {}
    for name in args.models:
        cases = {s: summarise(runs[name][s]) for s in sides}
        out[name] = {"model": models[name]["model"], "cases": cases,
                     "ratios": {f"{a}/{b}": compare(a, b, cases, runs[name])
                                for a, b in _pairs(sides)},
                     "runs": runs[name]}
    return {"data": data_info, "models": out, "sides": list(sides)}


WORK_PER_EPOCH = {
    "bcikit": "Trainer(optimizer='adamw', precision='fp32', device='cpu', verbose=False): "
              "shuffled batches (generator seeded by (seed, epoch)) indexed from the arrays held "
              "as tensors, forward, cross-entropy, backward, AdamW step (torch's fused "
              "kernel, which the Trainer picks on CPU and CUDA); running train loss and "
              "accuracy from the training-mode logits; validation pass in eval mode under "
              "no_grad (loss, accuracy); one history row. No progress bar, checkpoint, early "
              "stopping or callbacks. fast_kernels='auto' (on for the CPU): braindecode's "
              "CombinedConv and every Conv2d whose kernel covers one whole axis of its input "
              "run as the equivalent conv1d during fit (same parameters and state_dict; the "
              "original forwards are restored after fit), and glibc keeps freed memory for "
              "reuse during fit (M_MMAP_MAX=0) instead of returning it to the kernel.",
    "bcikit_plain": "The same Trainer with fast_kernels=False: torch's own kernels for every "
                    "module and glibc's default allocation behaviour.",
    "braindecode": "EEGClassifier(criterion=CrossEntropyLoss, optimizer=AdamW, "
                   "train_split=predefined_split(valid), iterator_train__drop_last=False, "
                   "callbacks__print_log=None, device='cpu') plus a train_acc "
                   "EpochScoring('accuracy', on_train=True): shuffled batches from a DataLoader "
                   "over skorch's Dataset (torch's global generator, seeded before fit), "
                   "forward, cross-entropy, backward, AdamW step (torch's default "
                   "implementation: a loop over the parameter tensors on the CPU); per-batch "
                   "history records "
                   "(loss.item(), batch size); callbacks epoch_timer, train_loss, valid_loss, "
                   "valid_acc, train_acc (accuracy of the cached predictions); validation pass "
                   "in eval mode without gradients.",
}


# ------------------------------------------------------------------------------------ output
def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    st = results["settings"]
    load = env.get("load_average_1_5_15") or []
    load_end = results.get("load_average_end_1_5_15") or []
    lines = [f"Measured {env['date_utc']} on {env['cpu_count']} CPU(s) "
             f"({env.get('processor')}), torch threads {st['threads']} in every worker "
             f"(torch.get_num_threads() reported {st['torch_num_threads_reported']}), load "
             f"average {', '.join(f'{x:.1f}' for x in load)} at the start and "
             f"{', '.join(f'{x:.1f}' for x in load_end)} at the end; {st['epochs']} epochs, "
             f"batch size {st['batch_size']}, AdamW lr {st['lr']:g} weight decay "
             f"{st['weight_decay']:g}, {st['repeats']} repeats (median, each fit in a fresh "
             f"process); bcikit {env['versions'].get('bcikit-neuro')}, braindecode "
             f"{env['versions'].get('braindecode')}, skorch {env['versions'].get('skorch')}, "
             f"torch {env['versions'].get('torch')}."]
    busy = [x for x in (load[:1] + load_end[:1]) if env.get("cpu_count")
            and x > 0.75 * env["cpu_count"]]
    if busy:
        lines.append("**The machine was busy during this run (1-minute load average above "
                     "three quarters of the CPU count): treat these numbers as provisional and "
                     "re-run on a quiet machine.**")
    lines.append("")
    sides = st.get("sides") or list(SIDES)
    if BASELINE in sides:
        first = next(iter(results["models"].values()))["cases"]
        lines += [f"`{BASELINE}`: bcikit imported from `{st.get('baseline')}` (Trainer source "
                  f"SHA-256 {first[BASELINE]['details'].get('trainer_sha256', '?')[:12]}; "
                  f"`bcikit`: {first['bcikit']['details'].get('trainer_sha256', '?')[:12]}).",
                  ""]
    rows = []
    for name, r in results["models"].items():
        for side in sides:
            c = r["cases"][side]
            fh, sc = c["final_history"], c["scored_after_fit"]
            rows.append([name, side, f"{c['fit_time_s']['median']:.2f}",
                         f"{c['trials_per_s']['median']:.1f}",
                         f"{c['trials_per_cpu_s']['median']:.1f}",
                         f"{c['steady_epoch_s']['median']:.2f}",
                         _fmt(c["peak_rss_delta_mb"]["median"], 1),
                         f"{fh['train_loss']:.3f} / {fh['train_accuracy']:.3f}",
                         f"{sc['train']['loss']:.3f} / {sc['train']['accuracy']:.3f}",
                         f"{sc['valid']['loss']:.3f} / {sc['valid']['accuracy']:.3f}"])
    lines.append(C.format_table(rows, [
        "model", "side", "fit (s)", "trials/s", "trials/CPU-s", "epoch 2+ (s)",
        "peak RSS rise (MB)", "last-epoch train loss / acc", "scored train loss / acc",
        "scored valid loss / acc"]))
    lines += ["", "Ratios, first side over second (throughput: above 1 means the first trains "
                  "faster; peak RSS rise: below 1 means the first needs less memory):", ""]
    rrows = []
    for name, r in results["models"].items():
        for pair, q in r["ratios"].items():
            rrows.append([name, pair, f"**{_fmt(q['throughput'])}**",
                          f"{_fmt(q['throughput_paired_median'])} "
                          f"({', '.join(_fmt(v) for v in q['throughput_paired_values'])})",
                          _fmt(q["throughput_cpu_time"]), _fmt(q["steady_epoch_speed"]),
                          _fmt(q["peak_rss_delta"])])
    lines.append(C.format_table(rrows, ["model", "ratio", "throughput (medians)",
                                        "throughput (per repeat)",
                                        "throughput (CPU time)", "epoch 2+ speed",
                                        "peak RSS rise"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker is not None:
        return worker_main(args._worker)
    if args.table_from is not None:
        table = markdown(json.loads(args.table_from.read_text()))
        print(table)
        if args.update_readme:
            C.update_readme_block("bench_training", table)
            print(f"updated {C.README}")
        return 0
    marker = "<!-- bench_training:begin -->"
    if args.update_readme and (not C.README.is_file() or marker not in C.README.read_text()):
        raise SystemExit(f"{C.README} lacks the marker {marker}; not measuring.")

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    env = C.environment(("bcikit-neuro", "numpy", "mne", "braindecode", "skorch", "torch",
                         "psutil"))
    t0 = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="bcikit-bench-training-"))
    try:
        measured = run_benchmark(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    threads_seen = sorted({t for m in measured["models"].values() for s in measured["sides"]
                           for t in m["cases"][s]["torch_num_threads"]})
    results: dict[str, Any] = {
        "benchmark": "training",
        "description": "bcikit Trainer vs braindecode EEGClassifier (skorch) training the same "
                       "network from the same initial weights on the same data, same "
                       "optimiser, batch size, epochs and validation set, CPU, each fit in a "
                       "fresh process.",
        "environment": env,
        "load_average_end_1_5_15": list(os.getloadavg()),
        "total_seconds": time.perf_counter() - t0,
        "settings": {"repeats": args.repeats, "epochs": args.epochs,
                     "batch_size": args.batch_size, "optimizer": "AdamW", "lr": args.lr,
                     "weight_decay": args.weight_decay, "threads": args.threads,
                     "torch_num_threads_reported": threads_seen, "seed": args.seed,
                     "device": "cpu", "models": args.models, "sides": measured["sides"],
                     "baseline": str(args.baseline.resolve()) if args.baseline else None,
                     "order": "the order of the sides rotates by one place every repeat"},
        "work_per_epoch": WORK_PER_EPOCH,
        "data": measured["data"],
        "models": measured["models"],
        "notes": [
            "trials_per_s = n_train * epochs / fit_time_s; the fit time covers construction, "
            "every training pass and every validation pass.",
            "steady_epoch_s: median of the per-epoch durations each library records, epochs "
            "2..N (bcikit: history_ 'time', start of the epoch to the end of validation; "
            "skorch: EpochTimer 'dur', the same span).",
            "peak_rss_delta_mb: ru_maxrss after the fit minus the RSS just before it, in a "
            "fresh process per fit; peak_is_upper_bound is true when the fit did not raise "
            "the process's high-water mark.",
            "scored_after_fit: the trained network scored by the same plain eval-mode code for "
            "both sides (mean cross-entropy, accuracy); final_history: each library's own "
            "last-epoch numbers (training ones are running means over the epoch in train "
            "mode).",
            "The two sides shuffle with different generators, so their dropout masks and batch "
            "orders differ: final losses are close, not identical.",
        ],
    }
    path = C.write_json(args.out, results, overwrite=args.overwrite)
    table = markdown(results)
    print()
    print(table)
    print(f"\nwrote {path}")
    if args.update_readme:
        C.update_readme_block("bench_training", table)
        print(f"updated {C.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
