"""Encoding ridge: full cross-validated fit time of bcikit vs himalaya ``RidgeCV`` vs a
scikit-learn loop, in one run, and the cost of the bootstrap projected to 1000 resamples.

The spec's harness size (``specs/encoding.md``, evidence row 4) is 6,070 events x 768 features
x 24,974 targets (155 electrodes x 161 bins), 7 alphas, 5 folds. ``--scale`` multiplies the
number of targets (the cost of every side is linear in it, apart from one SVD per fold), so a
2-core machine can run the same shapes at a fraction of the targets; the scale is stored, and the
"full-size estimate" is ``fixed + (time - fixed) / scale`` where ``fixed`` is the time of the same
call with one target (decompositions and other costs that do not grow with the targets).

Sides (each on the same float32 data, in this process):

``bcikit_numpy``
    :func:`bcikit.encoding.ridge.paper_cv`: the paper protocol (5 contiguous folds, each held-out
    fold split into validation and test halves, Pearson r on both for every alpha, alpha* per
    target, purge of training events within 4.2 s of held-out ones), himalaya's ``numpy``
    backend.
``himalaya_ridgecv``
    ``himalaya.ridge.RidgeCV(alphas, fit_intercept=True, cv=KFold(5),
    solver_params={'score_func': correlation_score, 'local_alpha': True})`` on the z-scored
    features: the same 5 folds x 7 alphas of fits and correlations (whole held-out folds scored),
    plus its refit on all events.
``sklearn_loop``
    the same protocol as ``bcikit_numpy`` written as a loop over folds and alphas of
    ``StandardScaler`` + ``Ridge(alpha, fit_intercept=True)`` + numpy Pearson r; its alpha* and
    r are compared with bcikit's.
``bcikit_cuda`` / ``himalaya_ridgecv_cuda`` (when torch sees CUDA)
    the same two on himalaya's ``torch_cuda`` backend.

Bootstrap: one ``refit`` resample is one paper-protocol fit on a resample of the events (copies
kept in one fold half); its median time x 1000 is the projected cost of the paper's 1000
resamples. ``oof`` (resampling out-of-fold predictions) is timed on ``--oof-resamples`` resamples
and projected likewise.

Usage::

    .venv/bin/python benchmarks/bench_encoding.py --scale 0.05            # writes results/encoding.json
    .venv/bin/python benchmarks/bench_encoding.py --scale 1 --out benchmarks/results/encoding_gpu.json
    .venv/bin/python benchmarks/bench_encoding.py --table-from benchmarks/results/encoding.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

HARNESS = {"events": 6070, "features": 768, "targets": 24974, "alphas": 7, "folds": 5}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="fraction of the harness's 24,974 targets (events and features stay)")
    ap.add_argument("--events", type=int, default=HARNESS["events"])
    ap.add_argument("--features", type=int, default=HARNESS["features"])
    ap.add_argument("--targets", type=int, default=HARNESS["targets"],
                    help="targets before --scale")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--sides", default="bcikit_numpy,himalaya_ridgecv,sklearn_loop",
                    help="comma-separated CPU sides")
    ap.add_argument("--boot-resamples", type=int, default=2,
                    help="refit resamples timed (projected to 1000)")
    ap.add_argument("--oof-resamples", type=int, default=20,
                    help="oof resamples timed (projected to 1000)")
    ap.add_argument("--no-gpu", action="store_true", help="skip the CUDA sides")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS/OpenMP threads (threadpoolctl); default: the libraries' own")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=C.RESULTS / "encoding.json")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--update-readme", action="store_true")
    ap.add_argument("--table-from", type=Path, default=None)
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------- data
def make_data(n: int, p: int, t: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 features, targets with a weak linear part, event times ~1.6 s apart."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p), dtype=np.float32)
    Y = np.empty((n, t), dtype=np.float32)
    for start in range(0, t, 2048):
        stop = min(t, start + 2048)
        W = rng.standard_normal((p, stop - start), dtype=np.float32) * np.float32(0.01)
        Y[:, start:stop] = X @ W + rng.standard_normal((n, stop - start), dtype=np.float32)
    times = np.cumsum(rng.uniform(0.2, 3.0, n))
    return X, Y, times


def _pearson(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    yc = y - y.mean(0)
    pc = p - p.mean(0)
    return (yc * pc).sum(0) / np.sqrt((yc * yc).sum(0) * (pc * pc).sum(0))


def sklearn_loop(X, Y, folds, alphas) -> dict[str, np.ndarray]:
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    n_f, T = len(folds), Y.shape[1]
    val = np.zeros((n_f, len(alphas), T))
    test = np.zeros((n_f, len(alphas), T))
    for k, f in enumerate(folds):
        sc = StandardScaler().fit(X[f.train])
        Xtr, Xva, Xte = (sc.transform(X[i]).astype(np.float32) for i in (f.train, f.val, f.test))
        for a, alpha in enumerate(alphas):
            m = Ridge(alpha=alpha, fit_intercept=True).fit(Xtr, Y[f.train])
            val[k, a] = _pearson(Y[f.val], m.predict(Xva).reshape(len(Xva), -1))
            test[k, a] = _pearson(Y[f.test], m.predict(Xte).reshape(len(Xte), -1))
    best = np.argmax(val.mean(0), axis=0)
    cols = np.arange(T)
    return {"alpha_index": best, "val_r": val.mean(0)[best, cols],
            "test_r": test.mean(0)[best, cols]}


def himalaya_fit(X, Y, alphas, backend: str, batch: int):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import correlation_score
    from sklearn.model_selection import KFold

    bk = set_backend(backend, on_error="raise")
    try:
        Xz = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
        model = RidgeCV(alphas=alphas.astype(np.float32), fit_intercept=True,
                        cv=KFold(5, shuffle=False),
                        solver_params={"score_func": correlation_score, "local_alpha": True,
                                       "n_targets_batch": batch, "warn": False})
        model.fit(bk.asarray(Xz), bk.asarray(Y))
        scores = bk.to_numpy(model.cv_scores_)
        alphas_sel = bk.to_numpy(model.best_alphas_)
    finally:
        set_backend("numpy")
    return {"cv_scores": scores, "best_alphas": alphas_sel}


# ------------------------------------------------------------------------------------- run
def _fixed_cost(side: str, X, Y, folds, alphas, device: str = "cpu") -> float:
    """Wall time of the same call with one target: the part that does not grow with targets
    (decompositions, resolution matrices), used to extrapolate to the full target count."""
    from bcikit.encoding import ridge as R

    one = np.ascontiguousarray(Y[:, :1])
    t0 = time.perf_counter()
    if side.startswith("bcikit"):
        R.paper_cv(X, one, folds=folds, device=device)
    elif side.startswith("himalaya"):
        himalaya_fit(X, one, alphas, "torch_cuda" if device == "cuda" else "numpy", 1)
    else:
        sklearn_loop(X, one, folds, alphas)
    return time.perf_counter() - t0


def _timed(fn, args, *, sync=None) -> tuple[dict[str, Any], Any]:
    """Wall time (``time_s``) and process CPU time (``cpu_s``, all threads) per run."""
    cpu: list[float] = []

    def call(_ctx):
        c0 = time.process_time()
        out = fn()
        if sync is not None:
            sync()
        cpu.append(time.process_time() - c0)
        return out

    stats, res = C.measure(call, repeats=args.repeats, warmup=args.warmup, memory=False)
    stats["cpu_s"] = C._summary(cpu[args.warmup:])
    return stats, res


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bcikit.encoding import ridge as R
    from bcikit.encoding import stats as S

    warnings.filterwarnings("ignore", category=UserWarning, module="himalaya")
    T = max(1, int(round(args.targets * args.scale)))
    n, p = args.events, args.features
    X, Y, times = make_data(n, p, T, args.seed)
    alphas = R.ALPHAS
    batch = R._default_batch(n, T)
    out: dict[str, Any] = {
        "benchmark": "encoding",
        "description": "Full cross-validated ridge fit (5 folds x 7 alphas, Pearson r per "
                       "target) at the encoding spec's harness shape: bcikit paper protocol vs "
                       "himalaya RidgeCV vs a scikit-learn loop, and bootstrap cost per 1000.",
        "environment": C.environment(packages=("bcikit-neuro", "numpy", "scipy",
                                               "scikit-learn", "himalaya", "torch")),
        "settings": {"scale": args.scale, "events": n, "features": p, "targets": T,
                     "targets_full": args.targets, "alphas": alphas.tolist(), "folds": 5,
                     "dtype": "float32", "purge": True, "n_targets_batch": batch,
                     "repeats": args.repeats, "warmup": args.warmup, "threads": args.threads,
                     "boot_resamples_timed": args.boot_resamples,
                     "oof_resamples_timed": args.oof_resamples},
        "sides": {}, "checks": {}, "bootstrap": {}}
    try:
        from threadpoolctl import threadpool_info

        out["settings"]["blas"] = [{"library": Path(d["filepath"]).name,
                                    "internal_api": d.get("internal_api"),
                                    "num_threads": d.get("num_threads")}
                                   for d in threadpool_info()]
    except ImportError:
        pass
    folds = R.paper_folds(n, 5, event_times=times, purge=True)
    # pay the imports (himalaya, scikit-learn) outside the timings
    small = slice(0, min(n, 200))
    R.paper_cv(X[small], Y[small, :8], purge=False, device="cpu")
    himalaya_fit(X[small], Y[small, :8], alphas, "numpy", 8)
    sides = [s for s in args.sides.split(",") if s]
    results: dict[str, Any] = {}
    for side in sides:
        print(f"[{time.strftime('%H:%M:%S')}] {side} ...", flush=True)
        if side == "bcikit_numpy":
            fn = lambda: R.paper_cv(X, Y, folds=folds, device="cpu")  # noqa: E731
        elif side == "himalaya_ridgecv":
            fn = lambda: himalaya_fit(X, Y, alphas, "numpy", batch)  # noqa: E731
        elif side == "sklearn_loop":
            fn = lambda: sklearn_loop(X, Y, folds, alphas)  # noqa: E731
        else:
            raise SystemExit(f"unknown side {side!r}")
        stats, res = _timed(fn, args)
        results[side] = res
        stats["device"] = "cpu"
        stats["fixed_s"] = _fixed_cost(side, X, Y, folds, alphas)
        out["sides"][side] = stats
        print(f"    {stats['time_s']['median']:.2f} s", flush=True)

    cuda = False
    if not args.no_gpu:
        cuda = R._cuda_available()
    if cuda:
        import torch

        out["settings"]["gpu"] = torch.cuda.get_device_name()
        sync = torch.cuda.synchronize
        for side, fn in (
                ("bcikit_cuda", lambda: R.paper_cv(X, Y, folds=folds, device="cuda")),
                ("himalaya_ridgecv_cuda", lambda: himalaya_fit(X, Y, alphas, "torch_cuda",
                                                               batch))):
            print(f"[{time.strftime('%H:%M:%S')}] {side} ...", flush=True)
            fn()                                       # CUDA context, kernels, cuBLAS handles
            stats, res = _timed(fn, args, sync=sync)
            stats["device"] = out["settings"]["gpu"]
            stats["fixed_s"] = _fixed_cost(side, X, Y, folds, alphas, device="cuda")
            results[side] = res
            out["sides"][side] = stats
            print(f"    {stats['time_s']['median']:.2f} s", flush=True)

    # output checks: bcikit vs the scikit-learn loop (same protocol, same folds)
    if "bcikit_numpy" in results and "sklearn_loop" in results:
        a, b = results["bcikit_numpy"], results["sklearn_loop"]
        out["checks"]["bcikit_vs_sklearn"] = {
            "alpha_star_equal_fraction": float(np.mean(a.alpha_index == b["alpha_index"])),
            "max_abs_diff_val_r": float(np.nanmax(np.abs(a.val_r - b["val_r"]))),
            "max_abs_diff_test_r": float(np.nanmax(np.abs(a.test_r - b["test_r"]))),
            "median_test_r": float(np.nanmedian(a.test_r))}
    if "bcikit_numpy" in results and "bcikit_cuda" in results:
        a, b = results["bcikit_numpy"], results["bcikit_cuda"]
        out["checks"]["bcikit_cpu_vs_cuda"] = {
            "alpha_star_equal_fraction": float(np.mean(a.alpha_index == b.alpha_index)),
            "max_abs_diff_test_r": float(np.nanmax(np.abs(a.test_r - b.test_r)))}

    # bootstrap: refit resamples (paper) and oof resamples, projected to 1000
    idx = S.bootstrap_indices(n, max(args.boot_resamples, args.oof_resamples, 1), seed=0)
    devices = ["cpu"] + (["cuda"] if cuda else [])
    for dev in devices:
        rec: dict[str, Any] = {}
        if args.boot_resamples > 0:
            per = []
            cpu = []
            for b in range(args.boot_resamples):
                rows = idx[b]
                t0, c0 = time.perf_counter(), time.process_time()
                R.paper_cv(X, Y, resample=rows, groups=rows, event_times=times[rows],
                           device=dev)
                per.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            med = float(np.median(per))
            rec["refit_per_resample_s"] = per
            rec["refit_per_resample_cpu_s"] = cpu
            rec["refit_projected_1000_s"] = 1000 * med
        if args.oof_resamples > 0:
            cv = R.paper_cv(X, Y, folds=folds, device=dev, return_predictions=True)
            t0, c0 = time.perf_counter(), time.process_time()
            S.bootstrap_encoding(X, Y, idx[: args.oof_resamples], mode="oof", cv_result=cv,
                                 event_times=times, n_bins=1, device=dev)
            el = time.perf_counter() - t0
            rec["oof_s"] = el
            rec["oof_cpu_s"] = time.process_time() - c0
            rec["oof_projected_1000_s"] = 1000 * el / args.oof_resamples
        out["bootstrap"][dev] = rec
        print(f"[{time.strftime('%H:%M:%S')}] bootstrap {dev}: {rec}", flush=True)
    out["settings"]["load_average_end"] = list(__import__("os").getloadavg())
    return out


# ------------------------------------------------------------------------------------ report
def _fmt(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def markdown(res: dict[str, Any]) -> str:
    s, env = res["settings"], res["environment"]
    scale = s["scale"]
    lines = [f"Measured {env['date_utc']} on {env['cpu_count']} CPU(s) (load average "
             f"{', '.join(f'{v:.1f}' for v in env['load_average_1_5_15'] or [])} at the start, "
             f"{', '.join(f'{v:.1f}' for v in s.get('load_average_end', []))} at the end)"
             + (f" and {s['gpu']}" if s.get("gpu") else "")
             + f"; {s['events']} events x {s['features']} features x {s['targets']} targets "
               f"(scale {scale:g} of {s['targets_full']}), 7 alphas, 5 folds, float32, "
               f"{s['repeats']} repeat(s); numpy {env['versions'].get('numpy')}, scikit-learn "
               f"{env['versions'].get('scikit-learn')}, himalaya {env['versions'].get('himalaya')}"
               f", torch {env['versions'].get('torch')}.", ""]
    rows = []
    base = res["sides"].get("bcikit_numpy", {}).get("time_s", {}).get("median")
    cbase = res["sides"].get("bcikit_numpy", {}).get("cpu_s", {}).get("median")
    for side, st in res["sides"].items():
        t = st["time_s"]["median"]
        c = st.get("cpu_s", {}).get("median")
        fixed = min(st.get("fixed_s", 0.0), t)
        rows.append([side, st["device"], _fmt(t), _fmt(c), _fmt(fixed + (t - fixed) / scale, 1),
                     _fmt(t / base) if base else "-", _fmt(c / cbase) if c and cbase else "-"])
    lines.append(C.format_table(rows, ["side", "device", "CV fit (s, median)", "CPU (s)",
                                       "full-size estimate (s)", "time / bcikit_numpy",
                                       "CPU / bcikit_numpy"]))
    chk = res["checks"].get("bcikit_vs_sklearn")
    if chk:
        lines += ["", f"bcikit vs the scikit-learn loop (same folds, float32): alpha* equal for "
                      f"{100 * chk['alpha_star_equal_fraction']:.2f} % of targets, max |diff| "
                      f"validation r {chk['max_abs_diff_val_r']:.1e}, test r "
                      f"{chk['max_abs_diff_test_r']:.1e}."]
    brow = []
    for dev, rec in res["bootstrap"].items():
        ref = rec.get("refit_projected_1000_s")
        oof = rec.get("oof_projected_1000_s")
        side = res["sides"].get("bcikit_cuda" if dev == "cuda" else "bcikit_numpy", {})
        fixed = 1000 * min(side.get("fixed_s", 0.0), (ref or 0.0) / 1000)
        brow.append([dev, _fmt(None if ref is None else ref / 1000),
                     _fmt(None if ref is None else ref / 3600, 2),
                     _fmt(None if ref is None else (fixed + (ref - fixed) / scale) / 3600, 1),
                     _fmt(None if oof is None else oof / 60, 2),
                     _fmt(None if oof is None else oof / scale / 60, 1)])
    lines += ["", C.format_table(brow, ["bootstrap on", "refit: s per resample",
                                        "refit x 1000 (h)", "refit x 1000, full size (h)",
                                        "oof x 1000 (min)", "oof x 1000, full size (min)"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from is not None:
        table = markdown(json.loads(args.table_from.read_text()))
    else:
        if args.out.exists() and not args.overwrite:
            raise SystemExit(f"{str(args.out)!r} already exists; pass --overwrite to replace it.")
        if not 0 < args.scale <= 1:
            raise SystemExit(f"--scale must be in (0, 1]; got {args.scale}.")
        if args.threads is not None:
            # load every BLAS/OpenMP library first: threadpoolctl limits only loaded ones
            import himalaya.ridge  # noqa: F401
            import scipy.linalg  # noqa: F401
            import sklearn.linear_model  # noqa: F401
            import torch
            from threadpoolctl import threadpool_limits

            torch.set_num_threads(args.threads)
            with threadpool_limits(limits=args.threads):
                res = run(args)
        else:
            res = run(args)
        path = C.write_json(args.out, res, overwrite=args.overwrite)
        table = markdown(res)
        print(f"wrote {path}")
    print()
    print(table)
    if args.update_readme:
        C.update_readme_block("bench_encoding", table)
        print(f"updated {C.README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
