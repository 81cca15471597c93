"""Loading benchmark: bcikit's dataset card vs MOABB and braindecode on the same EDF files.

What is measured, per task of ``datasets/realdata_eegmmidb_S001.toml`` (PhysioNet eegmmidb,
subject S001, from ``$BCIKIT_REALDATA/eegmmidb_S001``), all in one process and one run:

``bcikit_nocache``
    ``card.load(task=..., cache=False)``: read the EDFs, cut the trials.
``bcikit_cold``
    ``card.load(task=..., cache=<fresh empty folder>)``: the same plus hashing the sources and
    writing the cache entry (a new empty cache folder for every repeat).
``bcikit_cached``
    ``card.load(task=..., cache=<filled folder>)``: the second load, served from the cache
    (``X`` memory-mapped, entry checksums verified).
``bcikit_cached_read``
    ``bcikit_cached`` plus reading every sample once (``np.array(X)``), for a like-for-like
    comparison with readers that return arrays in memory.
``moabb``
    ``MotorImagery``/``LeftRightImagery(fmin=None, fmax=None, tmin, tmax).get_data(
    PhysionetMI(imagined=True), [1])`` restricted to the task's runs: arrays in microvolts.
``braindecode``
    ``MOABBDataset(<that PhysionetMI>, [1])`` + ``create_windows_from_events`` with the same
    window, then every window stacked into one array.

The window is the card's (0.5-2.5 s after each cue) and nothing is filtered, so all three must
give the same trials, the same labels and the same samples; the script checks this and stores
what matched next to the timings.

MOABB and braindecode must not download: MOABB is pointed (``MNE_DATASETS_EEGBCI_PATH``) at a
temporary folder in the layout it expects (``MNE-eegbci-data/files/eegmmidb/1.0.0/S001/``) that
holds symbolic links to the real-data EDFs, its NEMAR mirror is switched off
(``MOABB_DOWNLOAD_PROVIDER=upstream``), and every internet connection attempt raises during
the whole benchmark (:func:`_common.network_guard`); the attempts (none) are stored.

Usage::

    python benchmarks/bench_loading.py [--repeats N] [--warmup N] [--tasks A B]
                                      [--out benchmarks/results/loading.json] [--overwrite]
                                      [--update-readme]
    python benchmarks/bench_loading.py --table-from benchmarks/results/loading.json [--update-readme]

Exit status 2 with a message when the real-data folder is absent. Speed is never asserted:
this is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

CARD = C.REPO / "datasets" / "realdata_eegmmidb_S001.toml"
DEFAULT_OUT = C.RESULTS / "loading.json"
SUBJECT = 1

#: Card task -> how MOABB's PhysionetMI names its classes and which of its run lists to keep.
MOABB_TASKS: dict[str, dict[str, Any]] = {
    "imagery_lr": {"events": ["left_hand", "right_hand"], "hand_runs": True, "feet_runs": False},
    "imagery_ff": {"events": ["hands", "feet"], "hand_runs": False, "feet_runs": True},
    "imagery_4class": {"events": ["left_hand", "right_hand", "hands", "feet"],
                       "hand_runs": True, "feet_runs": True},
}
DEFAULT_TASKS = ("imagery_lr", "imagery_ff", "imagery_4class")
CASES = ("bcikit_nocache", "bcikit_cold", "bcikit_cached", "bcikit_cached_read", "moabb",
         "braindecode")


# ------------------------------------------------------------------------------------- set-up
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed runs per case before timing (default 1)")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS),
                   help=f"card tasks to measure (default: {' '.join(DEFAULT_TASKS)})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"JSON results file (default {DEFAULT_OUT.relative_to(C.REPO)})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("--update-readme", action="store_true",
                   help="rewrite the results table in benchmarks/README.md")
    p.add_argument("--table-from", type=Path, default=None, metavar="JSON",
                   help="measure nothing: print the tables of an existing results file (and "
                        "with --update-readme put them into benchmarks/README.md)")
    args = p.parse_args(argv)
    if args.table_from is not None:
        if not args.table_from.is_file():
            p.error(f"--table-from: {str(args.table_from)!r} does not exist")
        return args
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1; got {args.repeats}")
    if args.warmup < 0:
        p.error(f"--warmup must be 0 or more; got {args.warmup}")
    unknown = [t for t in args.tasks if t not in MOABB_TASKS]
    if unknown:
        p.error(f"--tasks {unknown} have no MOABB counterpart here; choose from "
                f"{sorted(MOABB_TASKS)}")
    if args.out.exists() and not args.overwrite:
        p.error(f"{str(args.out)!r} already exists; pass --overwrite to replace it")
    return args


def moabb_layout(source: Path, runs: list[int], where: Path) -> Path:
    """Build, under ``where``, the folder MOABB's PhysionetMI reads (the layout
    ``moabb.datasets.download.data_dl`` derives from the PhysioNet URL), with symbolic links to
    the real EDFs. Returns the folder to give as ``MNE_DATASETS_EEGBCI_PATH``."""
    dest = where / "MNE-eegbci-data" / "files" / "eegmmidb" / "1.0.0" / f"S{SUBJECT:03d}"
    dest.mkdir(parents=True)
    for run in runs:
        name = f"S{SUBJECT:03d}R{run:02d}.edf"
        (dest / name).symlink_to((source / name).resolve())
    return where


# -------------------------------------------------------------------------------- the loaders
def make_loaders(card, root: Path, task: str, spec, info: dict[str, Any]):
    """The six functions to time, each taking the per-run context from its setup."""
    import numpy as np
    from braindecode.datasets import MOABBDataset
    from braindecode.preprocessing import create_windows_from_events
    from moabb.datasets import PhysionetMI
    from moabb.paradigms import LeftRightImagery, MotorImagery

    mt = MOABB_TASKS[task]

    def moabb_dataset():
        ds = PhysionetMI(imagined=True)
        if not mt["hand_runs"]:
            ds.hand_runs = []
        if not mt["feet_runs"]:
            ds.feet_runs = []
        return ds

    def bcikit(cache_dir):
        return card.load(root=root, task=task, cache=cache_dir if cache_dir else False)

    def bcikit_read(cache_dir):
        ts = card.load(root=root, task=task, cache=cache_dir)
        ts.X = np.array(ts.X)
        return ts

    def moabb(_):
        if mt["events"] == ["left_hand", "right_hand"]:
            paradigm = LeftRightImagery(fmin=None, fmax=None, tmin=spec.tmin, tmax=spec.tmax)
        else:
            paradigm = MotorImagery(events=list(mt["events"]), n_classes=len(mt["events"]),
                                    fmin=None, fmax=None, tmin=spec.tmin, tmax=spec.tmax)
        return paradigm.get_data(moabb_dataset(), subjects=[SUBJECT])

    sfreq = info["sfreq"]
    interval = PhysionetMI().interval
    start = int(round(spec.tmin * sfreq)) - int(round(interval[0] * sfreq))
    stop = int(round(spec.tmax * sfreq)) - int(round(interval[1] * sfreq))
    mapping = {name: i for i, name in enumerate(mt["events"])}
    info["braindecode_offsets_samples"] = [start, stop]

    def braindecode(_):
        raws = MOABBDataset(moabb_dataset(), subject_ids=[SUBJECT])
        windows = create_windows_from_events(raws, trial_start_offset_samples=start,
                                             trial_stop_offset_samples=stop, mapping=mapping,
                                             preload=True)
        X = np.stack([windows[i][0] for i in range(len(windows))])
        y = np.array([windows[i][1] for i in range(len(windows))])
        return windows, X, y

    return {"bcikit_nocache": bcikit, "bcikit_cold": bcikit, "bcikit_cached": bcikit,
            "bcikit_cached_read": bcikit_read, "moabb": moabb, "braindecode": braindecode}


# ------------------------------------------------------------------------------------- checks
def _data_match(a, b) -> dict[str, Any]:
    """How close two trial arrays in volts are."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = np.abs(a - b)
    scale = float(np.max(np.abs(b))) or 1.0
    corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return {"max_abs_diff_uV": float(diff.max() * 1e6), "max_rel_diff": float(diff.max() / scale),
            "correlation": corr,
            "allclose_float32": bool(np.allclose(a, b, rtol=1e-5, atol=scale * 1e-6))}


def check_outputs(trials, moabb_out, bd_out, mt: dict[str, Any]) -> dict[str, Any]:
    """Same number of trials, same labels, same samples (after units), same channels."""
    import numpy as np

    Xb = np.asarray(trials.X)
    labels_b = list(trials.label_names)
    n_times = Xb.shape[2]
    out: dict[str, Any] = {"n_trials": {"bcikit": int(len(trials))},
                           "n_times": {"bcikit": int(n_times)},
                           "classes_bcikit": list(trials.classes)}

    # bcikit order: runs in card order, chronological within a run; MOABB/braindecode: hand
    # runs then feet runs (= the card's order for these tasks), chronological within a run.
    run_order = [str(r) for r in trials.meta["run"]]
    onsets = trials.meta["onset"].to_numpy()
    order = sorted(range(len(trials)), key=lambda i: (list(dict.fromkeys(run_order)).index(
        run_order[i]), onsets[i]))
    Xb = Xb[order]
    labels_b = [labels_b[i] for i in order]

    Xm, ym, meta_m = moabb_out
    out["n_trials"]["moabb"] = int(len(ym))
    out["n_times"]["moabb"] = int(Xm.shape[2])
    m: dict[str, Any] = {"same_n_trials": len(ym) == len(trials),
                         "moabb_unit": "uV (x1e6 of volts)"}
    if m["same_n_trials"]:
        m["same_labels"] = [str(v) for v in ym] == labels_b
        k = min(n_times, Xm.shape[2])
        m["samples_compared"] = k
        m.update(_data_match(Xb[:, :, :k], Xm[:, :, :k] / 1e6))
    out["moabb"] = m

    windows, Xd, yd = bd_out
    inv = {i: name for i, name in enumerate(mt["events"])}
    ch_bd = windows.datasets[0].raw.ch_names
    picks = [ch_bd.index(c) for c in trials.ch_names if c in ch_bd]
    out["n_trials"]["braindecode"] = int(len(yd))
    out["n_times"]["braindecode"] = int(Xd.shape[2])
    d: dict[str, Any] = {"same_n_trials": len(yd) == len(trials),
                         "same_channel_names": [ch_bd[i] for i in picks] == trials.ch_names,
                         "braindecode_channels": len(ch_bd)}
    if d["same_n_trials"] and len(picks) == len(trials.ch_names):
        d["same_labels"] = [inv[int(v)] for v in yd] == labels_b
        k = min(n_times, Xd.shape[2])
        d["samples_compared"] = k
        d.update(_data_match(Xb[:, :, :k], Xd[:, picks, :k]))
    out["braindecode"] = d
    return out


# ------------------------------------------------------------------------------------ running
def run_task(card, root: Path, task: str, args, scratch: Path) -> dict[str, Any]:
    import numpy as np

    spec = card.task_spec(task)
    runs = [int(r) for r in spec.runs]
    info: dict[str, Any] = {"runs": runs, "tmin": spec.tmin, "tmax": spec.tmax,
                            "classes": list(spec.classes), "sfreq": 160.0}
    loaders = make_loaders(card, root, task, spec, info)

    filled = scratch / f"cache-{task}-filled"
    card.load(root=root, task=task, cache=filled)  # the entry the cached cases read

    counter = iter(range(10 ** 6))

    def fresh_cache():
        d = scratch / f"cache-{task}-cold-{next(counter)}"
        return d

    def drop(d):
        shutil.rmtree(d, ignore_errors=True)

    setups = {"bcikit_nocache": (lambda: None, None), "bcikit_cold": (fresh_cache, drop),
              "bcikit_cached": (lambda: filled, None), "bcikit_cached_read": (lambda: filled, None),
              "moabb": (lambda: None, None), "braindecode": (lambda: None, None)}
    cases: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for name in CASES:
        setup, teardown = setups[name]
        t0 = time.perf_counter()
        stats, result = C.measure(loaders[name], repeats=args.repeats, warmup=args.warmup,
                                  setup=setup, teardown=teardown, memory=not args.no_memory)
        cases[name] = stats
        outputs[name] = result
        print(f"  {task:15s} {name:19s} median {stats['time_s']['median']:.3f} s"
              + (f", peak traced {stats['peak_traced_mb']:.1f} MB"
                 f", peak RSS +{stats['peak_rss_delta_mb']:.1f} MB" if not args.no_memory
                 else "") + f"   ({time.perf_counter() - t0:.1f} s)", flush=True)

    trials = outputs["bcikit_nocache"]
    info["sfreq"] = trials.sfreq
    info["n_trials"] = len(trials)
    info["shape"] = list(trials.X.shape)
    info["x_is_memmap"] = {n: isinstance(outputs[n].X, np.memmap)
                           for n in ("bcikit_nocache", "bcikit_cold", "bcikit_cached",
                                     "bcikit_cached_read")}
    info["bcikit_identical_across_cases"] = all(
        np.array_equal(np.asarray(outputs[n].X), trials.X) and np.array_equal(outputs[n].y,
                                                                              trials.y)
        for n in ("bcikit_cold", "bcikit_cached", "bcikit_cached_read"))
    checks = check_outputs(trials, outputs["moabb"], outputs["braindecode"], MOABB_TASKS[task])

    ratios: dict[str, Any] = {}
    pairs = {"cold/cached": ("bcikit_cold", "bcikit_cached"),
             "cold/cached_read": ("bcikit_cold", "bcikit_cached_read"),
             "nocache/moabb": ("bcikit_nocache", "moabb"),
             "cold/moabb": ("bcikit_cold", "moabb"),
             "cached/moabb": ("bcikit_cached", "moabb"),
             "cached_read/moabb": ("bcikit_cached_read", "moabb"),
             "cold/braindecode": ("bcikit_cold", "braindecode"),
             "cached/braindecode": ("bcikit_cached", "braindecode"),
             "moabb/braindecode": ("moabb", "braindecode")}
    for key in ("time_s", "peak_traced_mb", "peak_rss_delta_mb"):
        if key != "time_s" and args.no_memory:
            continue
        ratios[key] = {label: C.ratio(cases[a], cases[b], key) for label, (a, b) in pairs.items()}
    return {"info": info, "cases": cases, "ratios": ratios, "checks": checks}


# ------------------------------------------------------------------------------------ output
def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _sci(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1e}"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [f"Measured {env['date_utc']} on {env['cpu_count']} CPU(s) "
             f"(load average {', '.join(f'{x:.1f}' for x in env['load_average_1_5_15'] or [])}"
             f"), {results['settings']['repeats']} repeats (median), "
             f"bcikit {env['versions'].get('bcikit-neuro')}, mne {env['versions'].get('mne')}, "
             f"moabb {env['versions'].get('moabb')}, "
             f"braindecode {env['versions'].get('braindecode')}."]
    load = env.get("load_average_1_5_15")
    if load and env.get("cpu_count") and load[0] > 0.75 * env["cpu_count"]:
        lines.append("**The machine was busy during this run (1-minute load average above "
                     "three quarters of the CPU count): treat these numbers as provisional and "
                     "re-run on a quiet machine.**")
    lines.append("")
    rows = []
    for task, r in results["tasks"].items():
        c = r["cases"]
        for name in CASES:
            s = c[name]
            rows.append([task, name.replace("_", " "), f"{s['time_s']['median']:.3f}",
                         _fmt(s.get("peak_traced_mb"), 1), _fmt(s.get("peak_rss_delta_mb"), 1)])
    lines.append(C.format_table(rows, ["task", "case", "time (s, median)", "peak traced (MB)",
                                       "peak RSS rise (MB)"]))
    lines += ["", "Ratios (time of the first over time of the second; below 1 means bcikit is "
                  "faster):", ""]
    rrows = []
    keys = ("cold/cached", "nocache/moabb", "cold/moabb", "cached/moabb", "cached_read/moabb",
            "cold/braindecode")
    for task, r in results["tasks"].items():
        t = r["ratios"]["time_s"]
        m = r["ratios"].get("peak_traced_mb", {})
        rrows.append([task] + [f"{_fmt(t[k])} (mem {_fmt(m.get(k))})" for k in keys])
    lines.append(C.format_table(rrows, ["task", *keys]))
    lines += ["", "Output checks (bcikit vs MOABB / braindecode, same trials in the same order):",
              ""]
    crows = []
    for task, r in results["tasks"].items():
        ch = r["checks"]
        for ref in ("moabb", "braindecode"):
            d = ch[ref]
            crows.append([task, ref, f"{ch['n_trials']['bcikit']} / {ch['n_trials'][ref]}",
                          str(d.get("same_labels")), _sci(d.get("max_abs_diff_uV")),
                          _fmt(d.get("correlation"), 6), str(d.get("allclose_float32"))])
    lines.append(C.format_table(crows, ["task", "reference", "trials (bcikit / ref)",
                                        "same labels", "max abs diff (uV)", "correlation",
                                        "allclose"]))
    lines += ["", f"Network connection attempts during the run: "
                  f"{len(results['settings']['network_attempts'])}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from is not None:
        table = markdown(json.loads(args.table_from.read_text()))
        print(table)
        if args.update_readme:
            C.update_readme_block("bench_loading", table)
            print(f"updated {C.README}")
        return 0
    runs_needed = sorted({r for t in args.tasks for r in (
        ([4, 8, 12] if MOABB_TASKS[t]["hand_runs"] else [])
        + ([6, 10, 14] if MOABB_TASKS[t]["feet_runs"] else []))})
    source = C.require_realdata("eegmmidb_S001", [f"S001R{r:02d}.edf" for r in runs_needed])

    scratch = Path(tempfile.mkdtemp(prefix="bcikit-bench-loading-"))
    layout = moabb_layout(source, runs_needed, scratch / "mne_data")
    os.environ["MNE_DATA"] = str(layout)
    os.environ["MNE_DATASETS_EEGBCI_PATH"] = str(layout)
    os.environ["MOABB_DOWNLOAD_PROVIDER"] = "upstream"
    os.environ["BCIKIT_CACHE"] = str(scratch / "bcikit_cache_default")
    os.environ.setdefault("MNE_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    try:
        t0 = time.perf_counter()
        import mne

        mne.set_log_level("ERROR")
        import braindecode.datasets  # noqa: F401
        import moabb.datasets  # noqa: F401

        from bcikit.io import load_card

        print(f"imports: {time.perf_counter() - t0:.1f} s", flush=True)
        card = load_card(CARD)
        results: dict[str, Any] = {
            "benchmark": "loading",
            "description": "bcikit dataset-card loading (no cache, cold cache, cached) vs "
                           "MOABB PhysionetMI + MotorImagery paradigm and braindecode "
                           "MOABBDataset + create_windows_from_events, same EDF files, same "
                           "window, one process.",
            "environment": C.environment(),
            "settings": {"repeats": args.repeats, "warmup": args.warmup,
                         "tasks": args.tasks, "card": str(CARD.relative_to(C.REPO)),
                         "realdata": str(source), "subject": SUBJECT,
                         "moabb_files": "symbolic links in a temporary MNE_DATASETS_EEGBCI_PATH",
                         "memory": not args.no_memory},
            "tasks": {},
        }
        with C.network_guard() as attempts:
            for task in args.tasks:
                results["tasks"][task] = run_task(card, source, task, args, scratch)
        results["settings"]["network_attempts"] = attempts
        results["notes"] = [
            "Times are wall-clock medians over the repeats after the warm-up runs; the OS page "
            "cache holds the EDF files in every case (cold means an empty bcikit cache, not a "
            "cold disk).",
            "peak_traced_mb: tracemalloc peak (Python and numpy allocations; memory maps are "
            "not counted). peak_rss_delta_mb: highest resident set size during the call minus "
            "the size just before, sampled every 2 ms; includes mapped pages that were read.",
            "bcikit_cached returns X memory-mapped (read lazily); bcikit_cached_read also reads "
            "every sample once.",
            "MOABB returns float64 microvolts with tmax inclusive (one sample more); the first "
            "n_times samples are compared after dividing by 1e6.",
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    path = C.write_json(args.out, results, overwrite=args.overwrite)
    table = markdown(results)
    print()
    print(table)
    print(f"\nwrote {path}")
    if args.update_readme:
        C.update_readme_block("bench_loading", table)
        print(f"updated {C.README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
