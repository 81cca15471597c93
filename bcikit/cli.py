"""The ``bcikit`` command.

Sub-commands::

    bcikit run PIPELINE.toml [--dataset CARD.toml | BIDS_ROOT] [--out DIR] [--device D]
                             [--set key=value ...] [--resume DIR]
                             [--stage all|pretrain|finetune] [--init RUN_DIR]   (Du-IN)
    bcikit compare A.toml B.toml ... [--dataset D] [--out DIR] [--set key=value ...]
    bcikit info PATH                 what a file or BIDS root holds
    bcikit datasets [DIR]            the dataset cards
    bcikit simulate OUT [--format edf|brainvision|fif] [--bids] [--set knob=value ...]
    bcikit fl simulate [--sites CARDS_OR_SIM] [--rounds R] [--out DIR]   Flower federation

Bad input (a missing file, a wrong value in a TOML file, a corrupt recording) is reported in one
line naming the file or field, without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="bcikit",
        description="Brain recordings to trained, honestly evaluated decoders.",
        epilog="Example: bcikit run pipelines/shallow_fbcsp.toml --set train.epochs=2")
    p.add_argument("--version", action="version", version=f"bcikit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is being done")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run a pipeline file end to end into a run folder")
    r.add_argument("pipeline", nargs="?", help="pipelines/<name>.toml")
    r.add_argument("--dataset", help="a dataset card (datasets/*.toml) or a BIDS root; "
                                     "default: the pipeline's built-in simulator")
    r.add_argument("--out", help="run folder to create (must not exist or be empty)")
    r.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides [train] device)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=2 (repeatable)")
    r.add_argument("--resume", metavar="DIR", help="continue an interrupted run folder")
    r.add_argument("--stage", choices=["all", "pretrain", "finetune"],
                   help="Du-IN pipelines: pre-train and fine-tune (all), pre-train only, or "
                        "fine-tune from --init (= --set pretrain.stage=...)")
    r.add_argument("--init", metavar="RUN_DIR",
                   help="Du-IN pipelines: reuse the pre-training checkpoints of RUN_DIR "
                        "(= --set pretrain.init=RUN_DIR)")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")

    c = sub.add_parser("compare", help="run several pipelines under one protocol (or read their "
                                       "run folders) and compare them in one table")
    c.add_argument("items", nargs="+", metavar="PIPELINE_OR_RUN",
                   help="pipeline files (run now) or existing run folders; the first is compared "
                        "against each other one (paired Wilcoxon over subject x seed); "
                        "'A,B,...' joins run folders of one pipeline split over disjoint seeds")
    c.add_argument("--dataset", help="dataset card or BIDS root for every pipeline")
    c.add_argument("--out", help="comparison folder to create (default runs/compare-<time>)")
    c.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override applied to every pipeline (repeatable)")
    c.add_argument("--metric", default="accuracy", help="score to compare (default accuracy)")

    i = sub.add_parser("info", help="what a recording file or BIDS root holds")
    i.add_argument("path")

    d = sub.add_parser("datasets", help="list the dataset cards")
    d.add_argument("directory", nargs="?", default=None,
                   help="folder of cards (default: ./datasets, else the packaged cards)")

    s = sub.add_parser("simulate", help="write simulated motor-imagery recordings to disk")
    s.add_argument("out", help="output folder")
    s.add_argument("--format", default="edf", choices=["edf", "brainvision", "fif"])
    s.add_argument("--bids", action="store_true", help="write a BIDS tree")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KNOB=VALUE",
                   help="simulator knob, e.g. --set n_subjects=2 (see bcikit.simulate)")
    from .federated.cli import add_parser as add_fl_parser  # stdlib-only module

    add_fl_parser(sub)
    return p


def _cmd_run(args) -> int:
    from .pipeline import run_pipeline

    if args.pipeline is None and args.resume is None:
        raise ValueError("bcikit run needs a pipeline file (or --resume DIR).")
    overrides = list(args.overrides)
    if args.resume is not None and (args.stage or args.init):
        raise ValueError("--resume continues a run with its own configuration; --stage and "
                         "--init cannot change it.")
    if args.stage is not None:
        overrides.append(f"pretrain.stage={args.stage}")
    if args.init is not None:
        overrides.append(f'pretrain.init="{args.init}"')
    result = run_pipeline(args.pipeline, dataset=args.dataset, out=args.out, device=args.device,
                          overrides=overrides, resume=args.resume, verbose=args.progress)
    if not result.metrics:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    if result.metrics.get("stage") == "pretrain":
        print(f"run folder: {result.run_dir}")
        pre = result.metrics.get("pretrain") or {}
        groups = {"": pre} if "held_out" in pre else pre
        for name, m in groups.items():
            h = (m or {}).get("held_out", {})
            if h:
                line = (f"  pre-training{' ' + name if name else ''}: "
                        f"{h.get('codes_used_fraction', 0):.1%} of the codes used on held-out "
                        f"crops")
                if (h.get("ema_top_code_share") or 0) > 0.5:
                    line += (f"; COLLAPSED codebook: one code holds "
                             f"{h['ema_top_code_share']:.0%} of the EMA counts")
                if "masked_code_accuracy" in h:
                    line += (f", masked-code accuracy {h['masked_code_accuracy']:.3f} (majority "
                             f"{h.get('majority_code_rate', 0):.3f})")
                print(line)
        print(f"  fine-tune with: bcikit run {args.pipeline} --stage finetune --init "
              f"{result.run_dir}")
        return 0
    if result.metrics.get("kind") == "encoding":
        m = result.metrics

        def fmt(v):
            return "n/a" if v is None else f"{v:.3f}"

        print(f"run folder: {result.run_dir}")
        print(f"  sites: {m['n_sites']} called; precision {fmt(m['site_precision'])}, recall "
              f"{fmt(m['site_recall'])} (against the simulator's non-linear multimodal "
              f"electrodes)")
        for name, a in m["per_alignment"].items():
            print(f"  {name}: {a['n_sites']} sites; median r trained "
                  f"{fmt(a['trained_median_r'])}, random {fmt(a['random_median_r'])}")
        print(f"  report: {result.run_dir / 'report.md'}")
        return 0
    summary = result.metrics["summary"]
    print(f"run folder: {result.run_dir}")
    for name, s in summary.items():
        print(f"  test {name}: {s['mean']:.3f} ± {s['std_over_seeds']:.3f} "
              f"(over {len(s['per_seed'])} seed(s))")
    print(f"  chance: {result.metrics['chance_level']:.3f} "
          f"(p<0.05 threshold {result.metrics['chance_threshold_p05']:.3f})")
    if result.metrics.get("oracle"):
        o = result.metrics["oracle"]
        print(f"  simulator oracle: {o['mean']:.3f} (95 % CI {o['ci95'][0]:.3f}-"
              f"{o['ci95'][1]:.3f}; noise-free sources)")
    print(f"  report: {result.run_dir / 'report.md'}")
    return 0


def _cmd_compare(args) -> int:
    from datetime import datetime

    from .evaluate.compare import compare_runs, run_and_compare

    # "a,b,c" is one pipeline run in parts over disjoint seeds (compare_runs merges them).
    groups = [[Path(p) for p in i.split(",") if p] for i in args.items]
    items = [g[0] for g in groups if g]
    if len(items) < 2:
        raise ValueError("bcikit compare needs at least two pipelines or run folders.")
    is_run = [all(p.is_dir() and (p / "metrics.json").exists() for p in g) for g in groups]
    out = Path(args.out) if args.out else \
        Path("runs") / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if all(is_run):
        result = compare_runs(groups, metric=args.metric, out=out)
    elif not any(is_run):
        if any(len(g) > 1 for g in groups):
            raise ValueError("Comma-joined items are run folders of one pipeline split by seed; "
                             "pipeline files are given one by one.")
        result = run_and_compare(items, dataset=args.dataset, out=out, overrides=args.overrides,
                                 device=args.device, metric=args.metric)
    else:
        raise ValueError("bcikit compare takes either pipeline files or run folders, not a mix.")
    print(result.to_markdown() if hasattr(result, "to_markdown") else result)
    print(f"comparison folder: {out}")
    return 0


def _cmd_info(args) -> int:
    from .io import describe

    print(describe(args.path))
    return 0


def _default_cards_dir() -> Path:
    here = Path.cwd() / "datasets"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[1] / "datasets"


def _cmd_datasets(args) -> int:
    from .io.cards import list_cards

    directory = Path(args.directory) if args.directory else _default_cards_dir()
    cards = list_cards(directory)
    if not cards:
        print(f"No dataset cards in {directory}.")
        return 0
    for card in cards:
        print(card.summary() if hasattr(card, "summary") else str(card))
    return 0


def _cmd_simulate(args) -> int:
    from .config import parse_override
    from .simulate import simulate_to_disk

    knobs = {}
    for text in args.overrides:
        key, value = parse_override(text)
        knobs[".".join(key)] = value
    paths = simulate_to_disk(args.out, fmt=args.format, bids=args.bids, **knobs)
    print(f"wrote {len(paths)} recording(s) under {args.out}")
    return 0


def _cmd_fl(args) -> int:
    from .federated.cli import run_command

    return run_command(args)


COMMANDS = {"run": _cmd_run, "compare": _cmd_compare, "info": _cmd_info, "datasets": _cmd_datasets,
            "simulate": _cmd_simulate, "fl": _cmd_fl}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line: one line, no source excerpt."""
    print(f"bcikit: warning: {message}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bcikit`` command; returns the exit status."""
    import warnings

    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    warnings.showwarning = _show_warning
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.verbose:
        from .utils import set_log_level

        set_log_level(True)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError) as err:
        if os.environ.get("BCIKIT_DEBUG"):
            raise
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"bcikit {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; continue with --resume RUN_FOLDER", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
