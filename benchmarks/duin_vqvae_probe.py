"""Can Du-IN's VQ-VAE reconstruct its input? A direct probe of ``DuINVQVAE`` (CPU or GPU).

Trains the stage-1 model (spec §2.2) with AdamW at a constant learning rate on random 4-s crops
and prints, every ``--every`` steps, the reconstruction MSE on held-out crops divided by that of
each crop's own per-channel means (spec §6 row 2 wants < 0.5) and the number of codes in use.

Data (``--data``):

- ``smooth``: 3 independent 5-Hz low-passed Gaussian sources mixed into 10 channels (a fixed
  random matrix), z-scored: a signal a working tokenizer can reconstruct;
- ``sim``: the sEEG word simulator's pre-training recordings (``make_seeg_words``, one
  ``size="default"`` subject, ``--snr``, ``--lfp-snr``, ``--minutes`` of recording in 60-s
  segments): the first 10 bipolar channels of vSMC/STG, 0.5-200 Hz band-pass, z-scored on
  segments 1-8; segments 9-10 are tiled into held-out crops.

Session 7 (CPU, 2 threads, lr 3e-4, batch 32; ``benchmarks/README.md``, Du-IN): smooth 0.31
after 100 steps (0.33 after 150); sim snr 512 stays at 1.000 for 300 steps, the codes in use
falling to 1; sim snr 1 reaches 0.84-0.89 (10 codes) and, with ``--restart-dead-codes 10``,
0.81 (878 codes) after 400 steps; sim snr 2 with ``--lfp-snr 30`` 0.72 after 400 and 0.655
after 800 steps, still falling.

    python benchmarks/duin_vqvae_probe.py --data sim --snr 1 --steps 400
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import butter, sosfiltfilt

CROP = 4000


def smooth_data(rng: np.random.Generator, n_segments: int = 10) -> torch.Tensor:
    x = rng.standard_normal((n_segments, 3, 62000))
    x = sosfiltfilt(butter(4, 5, fs=1000, output="sos"), x, axis=-1)[:, :, 1000:61000]
    mix = np.random.default_rng(1).standard_normal((10, 3))
    x = np.einsum("cs,nst->nct", mix, x)
    return torch.as_tensor(x / x[:8].std(axis=(0, 2), keepdims=True), dtype=torch.float32)


def simulator_data(snr: float, minutes: float, seed: int, lfp_snr: float = 0.0) -> torch.Tensor:
    from bcikit.data.channel_selection import select_by_region
    from bcikit.simulate import make_seeg_words

    sim = make_seeg_words(size="default", n_subjects=1, n_words=61, n_trials_per_word=2,
                          n_runs=2, pretrain_minutes=minutes, snr=snr, lfp_snr=lfp_snr,
                          random_state=seed)
    subject = next(iter(sim.pretrain))
    ts, el = sim.pretrain[subject], sim.electrodes[subject]
    idx = [ts.ch_names.index(n) for n in select_by_region(ts, electrodes=el)[:10]]
    x = sosfiltfilt(butter(4, [0.5, 200], btype="band", fs=ts.sfreq, output="sos"),
                    np.asarray(ts.X)[:, idx], axis=-1)
    if x.shape[0] < 10:
        raise SystemExit(f"--minutes {minutes} gives {x.shape[0]} segments; 10 are needed.")
    mu, sd = x[:8].mean(axis=(0, 2), keepdims=True), x[:8].std(axis=(0, 2), keepdims=True)
    return torch.as_tensor((x - mu) / sd, dtype=torch.float32)


def main(argv=None) -> dict:
    from bcikit.models.duin import DuINVQVAE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("smooth", "sim"), default="sim")
    ap.add_argument("--snr", type=float, default=1.0)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--lfp-snr", type=float, default=0.0,
                    help="the simulator's opt-in word-locked low-frequency potential")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--restart-dead-codes", type=int, default=None)
    ap.add_argument("--warmup-steps", type=int, default=0,
                    help="linear warm-up of the lr over this many steps, from lr/warmup (the "
                         "pipeline's recipe warms up over 10 %% of the epochs); 0: constant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="JSON of the printed rows")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    X = (smooth_data(rng) if args.data == "smooth"
         else simulator_data(args.snr, args.minutes, 101 + args.seed, args.lfp_snr))
    n_train, length = 8, X.shape[2]
    test = torch.stack([X[s, :, a:a + CROP] for s in range(n_train, X.shape[0])
                        for a in range(0, length - CROP + 1, CROP)]).to(args.device)
    base = float(((test - test.mean(-1, keepdim=True)) ** 2).mean())
    model = DuINVQVAE(n_chans=10, n_times=CROP, sfreq=1000,
                      restart_dead_codes=args.restart_dead_codes).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    rows, t0 = [], time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                rec = torch.cat([model(test[i:i + 64]) for i in range(0, len(test), 64)])
                codes = int(torch.cat([model.quantize(test[i:i + 64])
                                       for i in range(0, len(test), 64)]).unique().numel())
            model.train()
            counts = model.quantizer.cluster_size
            top = float(counts.max() / counts.sum()) if float(counts.sum()) > 0 else None
            row = {"step": step, "rec_over_channel_mean": float(((rec - test) ** 2).mean()) / base,
                   "codes_in_use": codes, "train_rec": model.last_losses.get("rec"),
                   "top_code_share_ema": top, "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(f"step {step:5d}  held-out rec / channel mean {row['rec_over_channel_mean']:.3f}"
                  f"  codes {codes}  top code's EMA share "
                  f"{'n/a' if top is None else f'{top:.2f}'}  ({row['seconds']:.0f} s)",
                  flush=True)
        if step == args.steps:
            break
        s = rng.integers(0, n_train, args.batch_size)
        a = rng.integers(0, length - CROP + 1, args.batch_size)
        xb = torch.stack([X[i, :, j:j + CROP] for i, j in zip(s, a)]).to(args.device)
        if args.warmup_steps:
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup_steps)
        loss, _ = model.training_loss(xb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = {"settings": vars(args) | {"out": str(args.out) if args.out else None}, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
