"""Does Du-IN's VQ-VAE codebook collapse under the pipeline's recipe? (session 12)

One simulated subject (the ``compact`` setting of ``duin_simulator.py``: 10 min of pre-training
recording, carrier ``--snr``, word-locked potential ``--lfp-snr``), prepared by the pipeline's own
``prepare_pretraining`` (0.5-200 Hz band-pass, z-score fitted on the training segments, 80/10/10
segment split), the first 10 vSMC/STG bipolar channels. The same freshly seeded ``DuINVQVAE``
is trained for the same number of steps four ways:

- ``manual``: a plain loop, AdamW at a constant 3e-4 (weight decay 0.01), random crops;
- ``trainer-short``: the pipeline's ``Trainer`` with the Du-IN recipe over ``steps / 4`` epochs
  (a 10 % warm-up: 1-2 epochs);
- ``trainer-warm``: the first ``steps / 4`` epochs of the spec's 400-epoch recipe (a 40-epoch
  linear warm-up from 7.5e-6), as ``pipelines/duin.toml`` with the spec's epochs runs them;
- ``trainer-warm-restart``: the same with bcikit's opt-in ``restart_dead_codes = 10``.

For each it prints the top code's share of the EMA counts (1 = every token takes one code), their
perplexity and the validation loss per epoch. ``--out`` writes a JSON.

    python benchmarks/duin_codebook_collapse.py --steps 80 --out results/duin_compact_cpu/codebook_collapse.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MODES = ("manual", "trainer-short", "trainer-warm", "trainer-warm-restart")


def subject_data(snr: float, lfp_snr: float, seed: int):
    """The pipeline's pre-training data of one simulated subject (10 speech channels)."""
    from bcikit.config import load_config
    from bcikit.data.channel_selection import select_by_region
    from bcikit.pretrain import prepare_pretraining
    from bcikit.simulate import make_seeg_words

    sim = make_seeg_words(size="default", n_subjects=1, n_words=12, n_trials_per_word=20,
                          n_runs=5, pretrain_minutes=10.0, snr=snr, lfp_snr=lfp_snr,
                          random_state=seed)
    subject = next(iter(sim.pretrain))
    ts, el = sim.pretrain[subject], sim.electrodes[subject]
    chans = select_by_region(ts, electrodes=el)[:10]
    cfg = load_config(C.REPO / "pipelines" / "duin.toml")
    return cfg, prepare_pretraining(cfg, {subject: ts}, {subject: chans}, seed=0)


def run_mode(mode: str, cfg, data, steps: int, seed: int) -> dict:
    import torch

    from bcikit.models.duin import CodebookMonitor, DuINVQVAE
    from bcikit.pretrain import CropLoss
    from bcikit.train import Trainer, set_seed
    from bcikit.train.duin_recipe import trainer_kwargs

    set_seed(seed)
    model = DuINVQVAE(subjects=data.subjects, n_times=data.crop, sfreq=data.sfreq, n_blocks=8,
                      dropout=0.2,
                      restart_dead_codes=10 if mode == "trainer-warm-restart" else None)
    loss = CropLoss(data.data, data.lengths, data.crop)
    Xtr, ytr = data.pairs("train")
    Xva, yva = data.pairs("valid")
    rows = []
    t0 = time.perf_counter()
    if mode == "manual":
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
        rng = np.random.default_rng(seed)
        per_epoch = max(1, -(-len(Xtr) // 32))  # as the Trainer: the last batch is partial
        for step in range(steps):
            idx = rng.integers(0, len(Xtr), 32)
            value, _ = loss(model, torch.as_tensor(Xtr[idx]), torch.as_tensor(ytr[idx]))
            opt.zero_grad()
            value.backward()
            opt.step()
            if (step + 1) % per_epoch == 0:
                model.eval()
                with torch.no_grad():
                    val = float(np.mean([float(loss(model, torch.as_tensor(Xva[i:i + 32]),
                                                    torch.as_tensor(yva[i:i + 32]))[0])
                                         for i in range(0, len(Xva), 32)]))
                model.train()
                usage = model.codebook_usage()
                rows.append({"epoch": (step + 1) // per_epoch, "val_loss": val, "lr": 3e-4,
                             "top_share": usage["top_share"],
                             "perplexity": usage["perplexity"]})
    else:
        epochs = max(1, steps // 4)
        if mode == "trainer-short":
            kw = trainer_kwargs("vqvae", epochs=epochs, warmup_epochs=int(epochs * 0.1),
                                batch_size=32)
        else:  # the first epochs of the spec's schedule (its warm-up is 40 epochs)
            kw = trainer_kwargs("vqvae", epochs=400, warmup_epochs=40, batch_size=32)
            kw["epochs"] = epochs
        monitor = CodebookMonitor()
        trainer = Trainer(model, loss=loss, device="cpu", precision=cfg.train.precision,
                          seed=seed, callbacks=[monitor], verbose=False, **kw)
        trainer.fit(Xtr, ytr, Xva, yva)
        for h, m in zip(trainer.history_, monitor.history_):
            rows.append({"epoch": h["epoch"], "val_loss": h["val_loss"], "lr": h["lr"],
                         "top_share": m["top_share"], "perplexity": m["perplexity"]})
    return {"mode": mode, "steps": steps, "seconds": time.perf_counter() - t0, "epochs": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snr", type=float, default=2.0)
    ap.add_argument("--lfp-snr", type=float, default=36.0)
    ap.add_argument("--subject-seed", type=int, default=101, help="make_seeg_words random_state")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    if args.steps < 4:
        ap.error("--steps must be >= 4 (one epoch of the trainer modes is 4 steps)")
    if args.out is not None and args.out.exists() and not args.overwrite:
        ap.error(f"{args.out} already exists; pass --overwrite to replace it.")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, data = subject_data(args.snr, args.lfp_snr, args.subject_seed)
    results = []
    for mode in args.modes:
        res = run_mode(mode, cfg, data, args.steps, args.seed)
        last = res["epochs"][-1]
        first = res["epochs"][0]
        print(f"{mode:22s} top code's EMA share {last['top_share']:.3f}, perplexity "
              f"{last['perplexity']:.0f}, validation loss {first['val_loss']:.3f} -> "
              f"{last['val_loss']:.3f} ({res['seconds']:.0f} s)", flush=True)
        results.append(res)
    if args.out is not None:
        env = C.environment(("bcikit-neuro", "numpy", "torch"))
        C.write_json(args.out, {"benchmark": "duin_codebook_collapse", "environment": env,
                                "settings": {k: (str(v) if isinstance(v, Path) else v)
                                             for k, v in vars(args).items()},
                                "n_train_crops_per_epoch": int(len(data.pairs("train")[0])),
                                "results": results}, overwrite=True)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
