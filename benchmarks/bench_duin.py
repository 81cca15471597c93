"""Du-IN training speed: tokens/s and peak memory of the three stages (spec §6 row 9).

For the reference configuration of ``specs/duin.md`` (10 channels at 1000 Hz; 4 s crops for the
two pre-training stages, 3 s trials for the classifier; the spec's batch sizes 32 / 64 / 32)
the script times full training steps of

``vqvae``
    :class:`bcikit.models.DuINVQVAE`: encoder, quantiser (EMA codebook update), decoder,
    regressor, reconstruction + VQ loss, backward, AdamW step. The first step initialises the
    codebook by k-means and is always a warm-up step.
``mae``
    :class:`bcikit.models.DuINMAE`: the frozen VQ-VAE's codes (teacher forward, no gradient),
    the student encoder on both complementary views (so it processes ``2 x B x 40`` tokens),
    the code head, cross-entropy, backward, AdamW step.
``classifier``
    :class:`bcikit.models.DuIN`: the random +/-300-sample shift, encoder, head, cross-entropy,
    backward, AdamW step.

with the recipe's optimiser (:func:`bcikit.train.duin_recipe.duin_optimizer`, the stage's
``lr_max`` and weight decay) in ``fp32`` or under ``bf16`` autocast (what the Trainer does with
``precision="bf16"``). A **token** is 100 samples of the region signal: a 4 s crop holds
N = 40 tokens, a 3 s trial N = 30, and ``tokens_per_s = batch x N x steps / time``; the MAE's
second view is not counted twice. The data are random standard-normal arrays of the right shape
(the step time does not depend on the values); the same arrays are reused every step.

Measured per (stage, precision). On the CPU each case runs in a **fresh Python process** (this
script re-invoked with a private ``--_worker`` flag) so one case's allocator state and memory
high-water mark do not leak into the next; on CUDA all cases share one process (the peak
statistics are reset per case; ``--fresh-process yes`` to change), which keeps the whole run
within a minute. The JSON is rewritten after every case, so a timeout keeps what was measured:

``step_s``
    Wall time of each timed step (median / min / max); on CUDA bracketed by
    ``torch.cuda.synchronize()``.
``tokens_per_s``, ``items_per_s``
    Throughput from the median step (items: crops or trials).
``epoch_s_estimate``
    ``step_s x ceil(n_items / batch)`` for the epoch sizes of the shipped simulator
    (``--epoch-items``): a guide, not a measurement.
CPU memory: ``peak_rss_mb`` (``resource.getrusage().ru_maxrss`` of the worker: the process's
    high-water mark, imports included) and ``peak_rss_delta_mb`` (highest resident set size seen
    by a 2 ms sampler during the warm-up and timed steps, minus the resident set size just before
    them: what the training steps themselves add). ``tracemalloc`` is not used: torch's C++
    allocations are invisible to it.
GPU memory: ``peak_gpu_mb`` = ``torch.cuda.max_memory_allocated()`` over the warm-up and timed
    steps (reset after the model and data are on the device, so they are included), and
    ``peak_gpu_reserved_mb``.

Usage::

    .venv/bin/python benchmarks/bench_duin.py --device cpu --warmup 1 --steps 2
    python benchmarks/bench_duin.py --device cuda --precision fp32 bf16 --warmup 3 --steps 20

writes ``benchmarks/results/duin_<device>.json`` (``--out`` to choose; an existing file is kept
unless ``--overwrite``). Benchmarks are scripts, not tests: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PATCH = 100  # samples per token at 1000 Hz
SFREQ = 1000.0
STAGES = ("vqvae", "mae", "classifier")
#: Spec §2.5 batch sizes, and the sample lengths of each stage (4 s crops / 3 s trials).
BATCH = {"vqvae": 32, "mae": 64, "classifier": 32}
N_TIMES = {"vqvae": 4000, "mae": 4000, "classifier": 3000}
#: Items in one epoch of the shipped simulator's default size, per subject (for the estimate):
#: 30 min of pre-training recording = 450 non-overlapping 4 s crops; 61 words x 40 trials over
#: 5 runs, 3 runs for training = 1464 trials.
EPOCH_ITEMS = {"vqvae": 450, "mae": 450, "classifier": 1464}
MARKER = "BENCH_DUIN_RESULT "


# ---------------------------------------------------------------------------------- one worker
def _build(stage: str, n_chans: int, n_outputs: int, device):
    """The stage's model in training mode (the MAE with an initialised VQ-VAE teacher)."""
    import torch

    from bcikit.models.duin import DuIN, DuINMAE, DuINVQVAE

    if stage == "classifier":
        return DuIN(n_chans=n_chans, n_outputs=n_outputs, n_times=N_TIMES[stage],
                    sfreq=SFREQ).to(device).train()
    vq = DuINVQVAE(n_chans=n_chans, n_times=N_TIMES[stage], sfreq=SFREQ).to(device).train()
    if stage == "vqvae":
        return vq
    # the MAE needs a teacher whose codebook is initialised: one untimed k-means pass
    with torch.no_grad():
        vq.training_loss(torch.randn(BATCH["vqvae"], n_chans, N_TIMES[stage], device=device))
    return DuINMAE(vqvae=vq).to(device).train()


def worker_main(spec_json: str) -> int:
    out = measure_case(json.loads(spec_json))
    print(MARKER + json.dumps(out), flush=True)
    return 0


def measure_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the stage's model and data, run the warm-up and timed steps, return the figures."""
    import torch

    from bcikit.train import set_seed
    from bcikit.train.duin_recipe import STAGE_RECIPES, duin_optimizer

    stage, precision, device_name = spec["stage"], spec["precision"], spec["device"]
    if device_name == "cpu":
        torch.set_num_threads(spec["threads"])
    device = torch.device(device_name)
    set_seed(spec["seed"])
    batch, n_times, n_chans = spec["batch"], N_TIMES[stage], spec["n_chans"]
    n_tokens = n_times // PATCH
    model = _build(stage, n_chans, spec["n_outputs"], device)
    recipe = STAGE_RECIPES[stage]
    optimizer = duin_optimizer()(model.parameters(), lr=recipe["lr_max"],
                                 weight_decay=recipe["weight_decay"])
    # one throw-away AdamW step on a dummy parameter: the first optimiser use imports
    # torch._dynamo (seconds), which is not a training cost
    dummy = torch.nn.Parameter(torch.zeros(1, device=device))
    dummy.grad = torch.zeros_like(dummy)
    torch.optim.AdamW([dummy]).step()
    gen = torch.Generator(device="cpu").manual_seed(spec["seed"])
    X = torch.randn(batch, n_chans, n_times, generator=gen).to(device)
    y = (torch.randint(0, spec["n_outputs"], (batch,), generator=gen).to(device)
         if stage == "classifier" else None)
    bf16 = precision == "bf16"
    cuda = device.type == "cuda"

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if bf16:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                loss, _ = model.training_loss(X, y)
        else:
            loss, _ = model.training_loss(X, y)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"{stage} {precision}: non-finite loss {float(loss)}")
        return elapsed

    out: dict[str, Any] = {"stage": stage, "precision": precision, "device": device_name,
                           "batch": batch, "n_chans": n_chans, "n_times": n_times,
                           "tokens_per_item": n_tokens,
                           "n_parameters_trainable": sum(p.numel() for p in model.parameters()
                                                         if p.requires_grad)}
    if cuda:
        out["device_name"] = torch.cuda.get_device_name(device)
        torch.cuda.reset_peak_memory_stats(device)
        warm = [step() for _ in range(spec["warmup"])]
        times = [step() for _ in range(spec["steps"])]
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / C.MB
        out["peak_gpu_reserved_mb"] = torch.cuda.max_memory_reserved(device) / C.MB
    else:
        with C._RSSSampler() as rss:
            warm = [step() for _ in range(spec["warmup"])]
            times = [step() for _ in range(spec["steps"])]
        out["peak_rss_delta_mb"] = (rss.peak - rss.baseline) / C.MB
        out["rss_before_steps_mb"] = rss.baseline / C.MB
        # ru_maxrss is in kilobytes on Linux
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        out["torch_num_threads"] = torch.get_num_threads()
    med = statistics.median(times)
    out.update({
        "warmup_step_s": warm, "step_s": {"median": med, "min": min(times), "max": max(times),
                                          "values": times},
        "items_per_s": batch / med, "tokens_per_s": batch * n_tokens / med,
        "epoch_items": spec["epoch_items"],
        "epoch_s_estimate": med * math.ceil(spec["epoch_items"] / batch),
    })
    if stage == "vqvae":
        out["codebook_initialised"] = bool(model.quantizer.initialised)
    del model, optimizer, X, y
    if cuda:
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------- parent
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), default=None,
                    help="one or both; default fp32 on the CPU, fp32 and bf16 on CUDA")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (>= 1)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (>= 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads on the CPU (default: every CPU of the affinity mask)")
    ap.add_argument("--n-chans", type=int, default=10)
    ap.add_argument("--n-outputs", type=int, default=61)
    for s in STAGES:
        ap.add_argument(f"--batch-{s}", type=int, default=BATCH[s],
                        help=f"batch size of the {s} stage (spec: {BATCH[s]})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh-process", choices=("auto", "yes", "no"), default="auto",
                    help="one fresh process per case (auto: yes on the CPU, where the peak RSS "
                         "needs it; no on CUDA, where the peak is reset per case)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default benchmarks/results/duin_<device>.json)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--update-readme", action="store_true",
                    help="rewrite the Du-IN speed table of benchmarks/README.md")
    ap.add_argument("--table-from", type=Path, default=None,
                    help="print (and with --update-readme, write) the table of a results JSON")
    ap.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker is None and args.table_from is None:
        if args.warmup < 1 or args.steps < 1:
            ap.error("--warmup and --steps must be at least 1 (the first VQ-VAE step runs "
                     "k-means).")
        if args.precision is None:
            args.precision = ["fp32"] if args.device == "cpu" else ["fp32", "bf16"]
        if args.threads is None:
            try:
                args.threads = len(os.sched_getaffinity(0))
            except AttributeError:
                args.threads = os.cpu_count() or 1
        if args.out is None:
            args.out = C.RESULTS / f"duin_{args.device}.json"
    return args


def run_case(args: argparse.Namespace, stage: str, precision: str) -> dict[str, Any]:
    spec = {"stage": stage, "precision": precision, "device": args.device,
            "threads": args.threads, "seed": args.seed, "n_chans": args.n_chans,
            "n_outputs": args.n_outputs, "batch": getattr(args, f"batch_{stage}"),
            "warmup": args.warmup, "steps": args.steps, "epoch_items": EPOCH_ITEMS[stage]}
    fresh = args.fresh_process == "yes" or (args.fresh_process == "auto"
                                            and args.device == "cpu")
    if not fresh:
        t0 = time.perf_counter()
        try:
            res = measure_case(spec)
        except Exception as err:  # noqa: BLE001 - recorded; the other cases go on
            return {"stage": stage, "precision": precision, "device": args.device,
                    "error": f"{type(err).__name__}: {err}",
                    "worker_wall_s": time.perf_counter() - t0}
        res["worker_wall_s"] = time.perf_counter() - t0
        res["fresh_process"] = False
        return res
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(C.REPO), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    if args.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(spec)], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        return {"stage": stage, "precision": precision, "device": args.device,
                "error": f"worker exited with status {proc.returncode}: {tail}",
                "worker_wall_s": wall}
    res = json.loads(lines[-1][len(MARKER):])
    res["worker_wall_s"] = wall
    res["fresh_process"] = True
    return res




def markdown(results: dict[str, Any]) -> str:
    env, st = results["environment"], results["settings"]
    load = env.get("load_average_1_5_15") or []
    fresh = ("each case in a fresh process"
             if all(c.get("fresh_process", True) for c in results["cases"])
             else "all cases in one process (peak memory reset per case)")
    where = (results.get("device_name") or "CUDA") if st["device"] == "cuda" else (
        f"{env['cpu_count']} CPU(s), {st['threads']} torch thread(s)")
    head = (f"Measured {env['date_utc']} on {where}; load average "
            f"{', '.join(f'{x:.1f}' for x in load)} at the start; {st['warmup']} warm-up + "
            f"{st['steps']} timed steps per case, {fresh}; torch "
            f"{env['versions'].get('torch')}.")
    load_end = results.get("load_average_end_1_5_15") or []
    if st["device"] == "cpu" and any(x > 0.75 * (env.get("cpu_count") or 1)
                                     for x in load[:1] + load_end[:1]):
        head += (" **The machine was busy (1-minute load average above three quarters of the "
                 "CPU count): treat these numbers as provisional.**")
    rows = []
    for r in results["cases"]:
        if "error" in r:
            rows.append([r["stage"], r["precision"], "failed", "", "", "", "", ""])
            continue
        mem = (f"{r['peak_gpu_mb']:.0f}" if "peak_gpu_mb" in r
               else f"{r['peak_rss_delta_mb']:.0f} ({r['peak_rss_mb']:.0f})")
        rows.append([r["stage"], r["precision"], f"{r['batch']} x {r['n_chans']} x "
                     f"{r['n_times']}", f"{r['step_s']['median']:.3f}",
                     f"{r['tokens_per_s']:.0f}", f"{r['items_per_s']:.1f}", mem,
                     f"{r['epoch_s_estimate']:.1f} ({r['epoch_items']})"])
    memh = ("peak GPU allocated (MB)" if st["device"] == "cuda"
            else "peak RSS rise in the steps (process peak) (MB)")
    table = C.format_table(rows, ["stage", "precision", "batch (B x C x T)", "step (s)",
                                  "tokens/s", "crops or trials/s", memh,
                                  "epoch estimate (s) (items)"])
    return head + "\n\n" + table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker is not None:
        return worker_main(args._worker)
    if args.table_from is not None:
        results = json.loads(args.table_from.read_text())
        table = markdown(results)
        print(table)
        if args.update_readme:
            C.update_readme_block(f"duin-speed-{results['settings']['device']}", table)
        return 0
    if args.out.exists() and not args.overwrite:
        raise SystemExit(f"{args.out} already exists; pass --overwrite to replace it.")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("bench_duin: --device cuda but torch sees no CUDA device.", file=sys.stderr)
            return 2
    env = C.environment(("bcikit-neuro", "numpy", "torch", "psutil"))
    t0 = time.perf_counter()
    cases: list[dict[str, Any]] = []
    for precision in args.precision:
        for stage in args.stages:
            res = run_case(args, stage, precision)
            cases.append(res)
            # partial results after every case: a timeout keeps what was measured
            C.write_json(args.out, _results(args, env, cases, t0, complete=False),
                         overwrite=True)
            if "error" in res:
                print(f"{stage:10s} {precision}: FAILED\n{res['error']}", file=sys.stderr,
                      flush=True)
                continue
            mem = (f"peak GPU {res['peak_gpu_mb']:.0f} MB" if "peak_gpu_mb" in res else
                   f"RSS rise {res['peak_rss_delta_mb']:.0f} MB (peak {res['peak_rss_mb']:.0f})")
            print(f"{stage:10s} {precision}: step {res['step_s']['median']:.3f} s, "
                  f"{res['tokens_per_s']:.0f} tokens/s, {res['items_per_s']:.1f} items/s, "
                  f"{mem}", flush=True)
    results = _results(args, env, cases, t0, complete=True)
    path = C.write_json(args.out, results, overwrite=True)
    table = markdown(results)
    print()
    print(table)
    print(f"\nwrote {path}")
    if args.update_readme:
        C.update_readme_block(f"duin-speed-{args.device}", table)
        print(f"updated {C.README}")
    return 1 if any("error" in c for c in cases) else 0


def _results(args, env, cases, t0, *, complete: bool) -> dict[str, Any]:
    return {
        "benchmark": "duin", "complete": complete,
        "description": "Du-IN training steps (VQ-VAE, MAE, classifier) at the reference "
                       "configuration: tokens/s and peak memory (CPU: one fresh process per "
                       "case; CUDA: one process, peak statistics reset per case).",
        "environment": env,
        "device_name": next((c.get("device_name") for c in cases if c.get("device_name")),
                            None),
        "load_average_end_1_5_15": list(os.getloadavg()),
        "total_seconds": time.perf_counter() - t0,
        "settings": {"device": args.device, "precision": args.precision,
                     "stages": args.stages, "warmup": args.warmup, "steps": args.steps,
                     "threads": args.threads if args.device == "cpu" else None,
                     "n_chans": args.n_chans, "n_outputs": args.n_outputs,
                     "sfreq": SFREQ, "n_times": N_TIMES, "seed": args.seed,
                     "batch": {s: getattr(args, f"batch_{s}") for s in STAGES},
                     "epoch_items": EPOCH_ITEMS},
        "cases": cases,
        "notes": [
            "A token is 100 samples (100 ms at 1000 Hz) of the region signal: 40 per 4 s crop, "
            "30 per 3 s trial. tokens_per_s = batch x tokens_per_item / median step time; "
            "the MAE's student encoder also processes the complementary view (2x tokens), "
            "not counted twice.",
            "A step = zero_grad, training_loss (the model's own: VQ-VAE rec + vq loss with the "
            "EMA update; MAE teacher codes + two views + CE; classifier random shift + CE), "
            "backward, AdamW step; bf16 = torch.autocast(bfloat16) around the loss as the "
            "Trainer does.",
            "epoch_s_estimate = median step x ceil(epoch_items / batch) with epoch_items the "
            "per-subject epoch of the shipped simulator's default size (450 non-overlapping "
            "4 s crops in 30 min; 1464 training trials); an estimate, not a measurement.",
            "CPU memory: peak_rss_delta_mb is what the steps add to the resident set (2 ms "
            "sampler); peak_rss_mb is the worker's ru_maxrss high-water mark (imports "
            "included). GPU memory: torch.cuda.max_memory_allocated over the warm-up and "
            "timed steps, model, optimiser state and batch included.",
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
