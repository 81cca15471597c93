"""MVCNet on a GPU: epoch time and peak memory for every preset of ``specs/mvcnet.md``.

For each preset (C channels, sampling rate, trial length, pool size, training trials per
subject under the CO protocol) the script trains ``bcikit.models.MVCNet`` with bcikit's
``Trainer`` for a few epochs on random trials of the preset's shape (the epoch time does not
depend on the values) and records:

``epoch_s``
    Median wall time of epochs 2..N as the Trainer records it (``history_[i]['time']``): one
    pass over the training trials at batch 64 with the full multi-view objective (three views,
    CNN + Transformer + projector, CE + CVC + CMC) and the optimiser step.
``peak_gpu_mb``
    ``torch.cuda.max_memory_allocated`` during the fit.

Side by side in the same process and on the same data, the same CNN trained with
cross-entropy only (``MVCNetStem``, the ablation of the spec) gives the reference, so each
preset reports ``ratio_to_stem`` = MVCNet epoch / stem epoch: the cost of the contrastive
multi-view training. Both are measured in fp32 (TF32 matmuls allowed, torch's default for
cuDNN) and in bf16 autocast (the Trainer's ``precision='auto'`` on such GPUs).

The issue's target: an MVCNet epoch on BNCI2014_001 (116 training trials, 22 x 1000) under 1 s
on an H100.

Usage (on a GPU machine)::

    python benchmarks/bench_mvcnet_gpu.py --out benchmarks/results/mvcnet_gpu.json

Without CUDA it refuses to run (the CPU numbers are minutes per epoch and not what this
measures).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_json  # noqa: E402

# (name, C, sfreq, T, pool, n_train per subject under CO, classes)
PRESETS = [
    ("BNCI2014_001", 22, 250.0, 1000, 125, 116, ("left_hand", "right_hand")),
    ("Zhou2016", 14, 250.0, 1250, 125, 80, ("left_hand", "right_hand")),
    ("BCI IV-1", 59, 250.0, 750, 125, 160, ("left_hand", "right_hand")),
    ("BNCI2014_002", 15, 512.0, 2560, 128, 80, ("right_hand", "feet")),
    ("BNCI2015_001", 13, 512.0, 2560, 128, 160, ("right_hand", "feet")),
]


def _fit(model, X, y, *, epochs: int, precision: str):
    import torch

    from bcikit.train import Trainer

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(model, epochs=epochs, batch_size=64, lr=1e-3, optimizer="adam",
                      device="cuda", precision=precision, seed=1, verbose=False)
    start = time.perf_counter()
    trainer.fit(X, y)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    times = [row["time"] for row in trainer.history_]
    return {"epoch_s": statistics.median(times[1:]) if len(times) > 1 else times[0],
            "first_epoch_s": times[0], "fit_s": total,
            "trials_per_s": len(X) / statistics.median(times[1:] or times),
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2 ** 20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/mvcnet_gpu.json")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench_mvcnet_gpu: no CUDA device; this benchmark measures GPU training.",
              file=sys.stderr)
        return 2
    from bcikit.models import MVCNet, MVCNetStem

    rng = np.random.default_rng(0)
    rows = []
    for name, C, sfreq, T, pool, n, classes in PRESETS:
        X = rng.standard_normal((n, C, T)).astype(np.float32)
        y = np.tile([0, 1], n // 2)
        for layers in ((1, 2) if name == "BNCI2014_001" else (2,)):
            for precision in ("fp32", "bf16"):
                torch.manual_seed(0)
                mv = MVCNet(n_chans=C, n_outputs=2, n_times=T, sfreq=sfreq, pool_size=pool,
                            encoder_layers=layers)
                res = _fit(mv, X, y, epochs=args.epochs, precision=precision)
                n_params = mv.count_parameters("training")
                del mv
                torch.manual_seed(0)
                stem = MVCNetStem(n_chans=C, n_outputs=2, n_times=T, sfreq=sfreq, pool_size=pool)
                ref = _fit(stem, X, y, epochs=args.epochs, precision=precision)
                del stem
                torch.cuda.empty_cache()
                row = {"preset": name, "n_chans": C, "sfreq": sfreq, "n_times": T,
                       "pool_size": pool, "n_train": n, "encoder_layers": layers,
                       "precision": precision, "n_params_training": n_params,
                       "mvcnet": res, "stem": ref,
                       "ratio_to_stem": res["epoch_s"] / ref["epoch_s"]}
                rows.append(row)
                print(f"{name:13s} L={layers} {precision}: MVCNet epoch {res['epoch_s']:.3f} s "
                      f"({res['trials_per_s']:.0f} trials/s, peak {res['peak_gpu_mb']:.0f} MB); "
                      f"stem {ref['epoch_s']:.3f} s; ratio {row['ratio_to_stem']:.1f}",
                      flush=True)
    payload = {"benchmark": "mvcnet_gpu", "device": torch.cuda.get_device_name(),
               "torch": torch.__version__, "epochs": args.epochs,
               "environment": environment(("bcikit-neuro", "numpy", "torch", "braindecode")),
               "results": rows}
    write_json(args.out, payload, overwrite=args.overwrite)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
