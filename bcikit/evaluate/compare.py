"""Compare finished runs: one table, paired Wilcoxon tests against the first run, figures.

:func:`compare_runs` reads run folders written by :func:`bcikit.pipeline.run_pipeline`
(``metrics.json``, ``scores.csv``, ``history.csv``) and :func:`run_and_compare` runs several
pipeline files on the same data first (``bcikit compare A.toml B.toml ...``).

How the numbers are made
------------------------
``scores.csv`` holds one row per (seed, split). A split's score is averaged with the other
splits of the same subject and seed (cross-validation folds, sessions), giving one score per
**unit** (subject, seed). Then, as in every run's own ``metrics.json``
(:func:`bcikit.evaluate.summarise`):

* per subject: mean over seeds, and the sample standard deviation over seeds (0 with one seed);
* overall: the mean over subjects of each seed, then the mean and the (population) standard
  deviation of those per-seed means.

The first run is the reference. Each other run is compared with it by the two-sided Wilcoxon
signed-rank test (:func:`scipy.stats.wilcoxon`, its defaults) twice: over the units
(subject, seed) both runs have, and over subjects (each run's mean over its seeds). Differences
are "first minus this run", so a positive difference means the first run scored higher. When
every paired difference is zero the test is undefined and reported as NaN.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils import check_file, logger, validate_type, warn
from .metrics import summarise

__all__ = ["compare_runs", "run_and_compare", "ComparisonResult", "read_run", "merge_runs",
           "wilcoxon_paired", "OUTPUT_FILES"]

#: Files :func:`compare_runs` writes into ``out`` (never overwritten).
OUTPUT_FILES = ("comparison.md", "comparison.csv", "comparison.json")
FIGURES = ("per_subject.png", "confusion.png", "learning_curves.png")
_LEVELS = ("units", "subjects")


# ---------------------------------------------------------------------------------- reading runs
@dataclass
class _Run:
    path: Path
    name: str
    metrics: dict
    scores: pd.DataFrame
    history: pd.DataFrame


def read_run(run_dir: str | os.PathLike, *, metric: str = "accuracy") -> _Run:
    """Read one run folder (``metrics.json``, ``scores.csv``, ``history.csv``).

    Raises
    ------
    FileNotFoundError
        When the folder or one of its files is missing (naming it).
    ValueError
        When ``scores.csv`` lacks the columns ``seed``, ``subject`` or ``metric``.
    """
    path = check_file(run_dir, what="run folder")
    if not path.is_dir():
        raise ValueError(f"The run folder {str(path)!r} is not a directory.")
    metrics_file = check_file(path / "metrics.json", what="run file (is this a bcikit run folder?)")
    scores_file = check_file(path / "scores.csv", what="run file (is this a bcikit run folder?)")
    try:
        metrics = json.loads(metrics_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(metrics_file)!r} is not valid JSON ({err}).") from None
    scores = pd.read_csv(scores_file, dtype={"subject": str})
    missing = [c for c in ("seed", "subject", metric) if c not in scores.columns]
    if missing:
        raise ValueError(f"{str(scores_file)!r} has no column(s) {missing}; it has "
                         f"{list(scores.columns)}. Choose metric= among them.")
    if scores.empty:
        raise ValueError(f"{str(scores_file)!r} holds no scores.")
    history_file = path / "history.csv"
    history = pd.DataFrame()
    if history_file.exists() and history_file.stat().st_size:
        history = pd.read_csv(history_file)
    name = str(metrics.get("pipeline") or path.name)
    return _Run(path, name, metrics, scores, history)


def merge_runs(run_dirs: list[str | os.PathLike], *, metric: str = "accuracy") -> _Run:
    """Read several run folders of one pipeline that differ only in their seeds as one run.

    A long comparison can be split over processes or GPUs by seed
    (``bcikit run P.toml --set evaluate.seeds=[1] --out runs/p-s1`` ...); the parts are then
    compared as one run (``bcikit compare runs/p-s1,runs/p-s2,... runs/q``). Scores and
    histories are concatenated and the confusion matrices summed.

    Raises
    ------
    ValueError
        When the parts name different pipelines, protocols, classes, subjects or data, or
        share a seed (naming the folders).
    """
    parts = [read_run(d, metric=metric) for d in run_dirs]
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def differs(key: str, get) -> None:
        values = [get(r) for r in parts]
        if any(v != values[0] for v in values[1:]):
            desc = "; ".join(f"{str(r.path)!r}: {v!r}" for r, v in zip(parts, values))
            raise ValueError(f"Runs merged into one must differ only in their seeds, but their "
                             f"{key} differ: {desc}.")

    differs("pipelines", lambda r: r.name)
    differs("models", lambda r: r.metrics.get("model"))
    differs("protocols", lambda r: r.metrics.get("protocol_description"))
    differs("data", lambda r: r.metrics.get("data"))
    differs("subjects", lambda r: sorted(set(r.scores["subject"].astype(str))))
    seen: dict[int, Path] = {}
    for r in parts:
        for seed in sorted(set(r.scores["seed"])):
            if seed in seen:
                raise ValueError(f"Runs merged into one share seed {seed}: {str(seen[seed])!r} "
                                 f"and {str(r.path)!r}.")
            seen[seed] = r.path
    metrics = dict(first.metrics)
    metrics["seeds"] = sorted(int(s) for s in seen)
    metrics["merged_from"] = [str(r.path) for r in parts]
    confusions = [r.metrics.get("confusion") for r in parts]
    if all(c is not None for c in confusions):
        metrics["confusion"] = np.sum([np.asarray(c) for c in confusions], axis=0).tolist()
    scores = pd.concat([r.scores for r in parts], ignore_index=True)
    history = pd.concat([r.history for r in parts if not r.history.empty], ignore_index=True) \
        if any(not r.history.empty for r in parts) else pd.DataFrame()
    return _Run(first.path, first.name, metrics, scores, history)


def _unit_scores(run: _Run, metric: str) -> pd.Series:
    """One score per (subject, seed): the mean over that subject's splits of that seed."""
    s = run.scores.groupby(["subject", "seed"])[metric].mean()
    return s.sort_index()


# ---------------------------------------------------------------------------------- statistics
def wilcoxon_paired(first: np.ndarray, other: np.ndarray) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired scores (scipy's defaults).

    Returns
    -------
    dict
        ``n`` (pairs), ``statistic``, ``p``, ``mean_difference`` (mean of ``first - other``)
        and ``note`` (why the test is undefined, or "").
    """
    from scipy.stats import wilcoxon

    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    n = int(a.size)
    out = {"n": n, "statistic": math.nan, "p": math.nan,
           "mean_difference": float(np.mean(a - b)) if n else math.nan, "note": ""}
    if n == 0:
        out["note"] = "no paired units"
    elif np.all(a == b):
        out["note"] = f"all {n} paired differences are zero"
    else:
        res = wilcoxon(a, b)
        out["statistic"] = float(res.statistic)
        out["p"] = float(res.pvalue)
    return out


# ---------------------------------------------------------------------------------- result
@dataclass
class ComparisonResult:
    """What :func:`compare_runs` produced.

    Attributes
    ----------
    table : DataFrame
        One row per run (the first is the reference), columns ``pipeline``, ``run``,
        ``protocol``, ``n_seeds``, ``mean``, ``std_over_seeds``, one column
        ``subject:<id>`` per subject (mean over seeds), then for both test levels
        (``units``: (subject, seed) pairs; ``subjects``: seed means) ``<level>_n``,
        ``<level>_statistic``, ``<level>_p``, ``<level>_mean_diff`` (first minus this run;
        empty on the first row). Written as ``comparison.csv``.
    per_subject : dict
        Run name -> subject -> ``{"mean", "std"}`` over seeds.
    units : DataFrame
        Long table: ``pipeline``, ``subject``, ``seed``, ``score`` (mean over splits).
    tests : DataFrame
        One row per (other run, level) with ``n``, ``statistic``, ``p``, ``mean_difference``,
        ``note``.
    summaries : dict
        Run name -> :func:`bcikit.evaluate.summarise` output for ``metric``.
    out_dir : Path or None
        Where the files were written.
    files : list of Path
        The files written (table files and figures).
    """

    runs: list[Path]
    pipelines: list[str]
    metric: str
    protocol: str
    subjects: list[str]
    classes: list[str]
    table: pd.DataFrame
    per_subject: dict
    units: pd.DataFrame
    tests: pd.DataFrame
    summaries: dict
    chance_level: float | None = None
    oracle: dict | None = None
    notes: list[str] = field(default_factory=list)
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def above_oracle(self) -> list[str]:
        """Runs whose mean is above the oracle's bound (empty without an oracle)."""
        if self.oracle is None:
            return []
        return [r.pipeline for r in _above_oracle(self.table)]

    @property
    def reference(self) -> str:
        """The first run's name (every test compares against it)."""
        return self.pipelines[0]

    def to_markdown(self, figures: list[str] | None = None) -> str:
        """The comparison as a Markdown document (what ``comparison.md`` holds); ``figures``
        defaults to the figures written by :func:`compare_runs`."""
        if figures is None:
            figures = [str(f) for f in self.files if Path(f).suffix == ".png"]
        m = self.metric
        lines = [f"# Comparison: {', '.join(self.pipelines)}", "",
                 f"- metric: {m}; protocol: {self.protocol}; subjects: "
                 f"{', '.join(self.subjects)}; classes: {', '.join(self.classes)}"]
        if self.chance_level is not None:
            lines[-1] += f"; chance level {self.chance_level:.3f}"
        if self.oracle is not None:
            o = self.oracle
            above = self.above_oracle
            lines.append(f"- simulator oracle {o['mean']:.3f} (95 % CI {o['ci95'][0]:.3f}-"
                         f"{o['ci95'][1]:.3f}; {o['method']}): "
                         + ("no run above oracle + CI" if not above else
                            f"**above oracle + CI: {', '.join(above)}** (leakage?)"))
        lines += [f"- reference (first run): **{self.reference}**; Δ = reference minus the row's "
                  "run, Wilcoxon signed-rank two-sided (scipy defaults)", ""]
        head = (["pipeline", f"{m} mean ± std over seeds", "seeds"]
                + list(self.subjects)
                + ["Δ (subject×seed)", "Wilcoxon subject×seed", "Δ (subjects)",
                   "Wilcoxon subjects"])
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, row in self.table.iterrows():
            name = row["pipeline"]
            cells = [f"**{name}**" if name == self.reference else name,
                     f"{row['mean']:.3f} ± {row['std_over_seeds']:.3f}", str(int(row["n_seeds"]))]
            for s in self.subjects:
                ps = self.per_subject[name][s]
                cell = f"{ps['mean']:.3f}"
                if int(row["n_seeds"]) > 1:
                    cell += f" ± {ps['std']:.3f}"
                cells.append(cell)
            for level in _LEVELS:
                if name == self.reference:
                    cells += ["—", "—"]
                    continue
                cells.append(_fmt_signed(row[f"{level}_mean_diff"]))
                cells.append(_fmt_test(row[f"{level}_n"], row[f"{level}_statistic"],
                                       row[f"{level}_p"]))
            lines.append("| " + " | ".join(cells) + " |")
        if self.oracle is not None:
            per = self.oracle.get("per_subject", {})
            cells = ["*oracle (noise-free sources)*", f"{self.oracle['mean']:.3f}", "—"]
            cells += [f"{per[s]['accuracy']:.3f}" if s in per else "—" for s in self.subjects]
            lines.append("| " + " | ".join(cells + ["—"] * 2 * len(_LEVELS)) + " |")
        lines += ["", "Per subject: mean over seeds (± sample std over seeds). Overall: mean over "
                  "subjects per seed, then mean ± population std of those per-seed means "
                  "(as in each run's metrics.json). Δ (subject×seed): mean paired difference "
                  "over the (subject, seed) units both runs have; Δ (subjects): over subjects "
                  "of each run's mean over its seeds."]
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        lines += ["", "## Runs", ""]
        lines += [f"- {name}: `{path}`" for name, path in zip(self.pipelines, self.runs)]
        if figures:
            lines += ["", "## Figures", ""]
            lines += [f"![{Path(f).stem}](figures/{Path(f).name})" for f in figures]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict:
        """A JSON-serialisable description (what ``comparison.json`` holds)."""
        return {
            "metric": self.metric, "protocol": self.protocol, "reference": self.reference,
            "pipelines": self.pipelines, "runs": [str(p) for p in self.runs],
            "subjects": self.subjects, "classes": self.classes, "chance_level": self.chance_level,
            "oracle": self.oracle, "above_oracle": self.above_oracle,
            "summary": {name: {k: self.summaries[name][k]
                               for k in ("mean", "std_over_seeds", "per_seed")}
                        for name in self.pipelines},
            "per_subject": self.per_subject,
            "tests": _records(self.tests),
            "table": _records(self.table),
            "notes": self.notes,
        }


def _fmt_signed(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:+.3f}"


def _fmt_test(n: float, stat: float, p: float) -> str:
    n = int(n) if np.isfinite(n) else 0
    if not np.isfinite(p):
        return f"n/a (n={n})"
    p_txt = f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"
    return f"W={stat:g}, p={p_txt} (n={n})"


def _records(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                        (v.item() if isinstance(v, np.generic) else v)) for k, v in rec.items()})
    return out


# ---------------------------------------------------------------------------------- comparing
def _display_names(runs: list[_Run]) -> list[str]:
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    names = [f"{r.name} ({r.path.name})" for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r.path) for r in runs]


def _check_consistent(runs: list[_Run]) -> None:
    def where(r: _Run) -> str:
        return f"{str(r.path)!r}"

    protocols = [(r.metrics.get("protocol"), r.metrics.get("protocol_description")) for r in runs]
    if len(set(protocols)) > 1:
        desc = "; ".join(f"{where(r)}: {p[0]!r} ({p[1]})" for r, p in zip(runs, protocols))
        raise ValueError(f"The runs were evaluated with different protocols, so their scores are "
                         f"not paired: {desc}. Compare runs made with the same protocol.")
    subjects = [tuple(sorted(set(r.scores["subject"].astype(str)))) for r in runs]
    if len(set(subjects)) > 1:
        desc = "; ".join(f"{where(r)}: {', '.join(s)}" for r, s in zip(runs, subjects))
        raise ValueError(f"The runs do not cover the same subjects: {desc}. Compare runs made on "
                         f"the same data and subjects.")
    classes = [tuple(r.metrics.get("data", {}).get("classes") or ()) for r in runs]
    if len(set(classes)) > 1:
        desc = "; ".join(f"{where(r)}: {list(c)}" for r, c in zip(runs, classes))
        raise ValueError(f"The runs decode different classes: {desc}.")
    n_trials = [r.metrics.get("data", {}).get("n_trials") for r in runs]
    if len(set(n_trials)) > 1:
        desc = "; ".join(f"{where(r)}: {n}" for r, n in zip(runs, n_trials))
        warn(f"The runs were made on different numbers of trials ({desc}); their test sets may "
             "differ.")


def compare_runs(run_dirs: list[str | os.PathLike], *, metric: str = "accuracy",
                 out: str | os.PathLike | None = None,
                 verbose: bool | None = None) -> ComparisonResult:
    """Compare finished runs made on the same data with the same protocol.

    Parameters
    ----------
    run_dirs : list of path-like, or of lists of path-like
        Two or more run folders of :func:`bcikit.pipeline.run_pipeline`. The first is the
        reference that every other run is tested against. An entry that is a list of folders
        is one pipeline run in parts over disjoint seeds (:func:`merge_runs`).
    metric : str
        A column of every ``scores.csv`` (``accuracy``, ``balanced_accuracy``, ...).
    out : path-like or None
        Folder for ``comparison.md``, ``comparison.csv``, ``comparison.json`` and
        ``figures/per_subject.png``, ``figures/confusion.png``, ``figures/learning_curves.png``
        (the last only when a run has a training history). It may exist, but none of these
        files may (they are never overwritten). None writes nothing.
    verbose : bool or None
        Log the table.

    Returns
    -------
    ComparisonResult

    Raises
    ------
    ValueError
        Fewer than two runs; runs with different protocols, subject sets or classes (naming
        the run folders); a metric missing from a ``scores.csv``.
    FileNotFoundError
        A missing run folder or run file.
    FileExistsError
        When an output file already exists in ``out``.

    Examples
    --------
    >>> res = compare_runs(["runs/mvcnet", "runs/eegnet", "runs/csp_lda"],
    ...                    out="runs/comparison")                     # doctest: +SKIP
    >>> res.tests[["other", "level", "n", "p"]]                       # doctest: +SKIP
    """
    validate_type(run_dirs, (list, tuple), "run_dirs", owner="compare_runs")
    validate_type(metric, str, "metric", owner="compare_runs")
    groups: list[list[Path]] = []
    for i, d in enumerate(run_dirs):
        entries = d if isinstance(d, (list, tuple)) else [d]
        if not entries:
            raise ValueError(f"compare_runs: run_dirs[{i}] is an empty list of run folders.")
        for j, e in enumerate(entries):
            validate_type(e, "path-like", f"run_dirs[{i}]" + (f"[{j}]" if entries is d else ""),
                          owner="compare_runs")
        groups.append([Path(e) for e in entries])
    if len(groups) < 2:
        raise ValueError(f"compare_runs needs at least two run folders; got {len(groups)}.")
    flat = [p for g in groups for p in g]
    if len({p.resolve() for p in flat}) != len(flat):
        raise ValueError(f"compare_runs got the same run folder twice: {[str(p) for p in flat]}.")
    paths = [g[0] for g in groups]
    out_dir = None
    if out is not None:
        validate_type(out, "path-like", "out", owner="compare_runs")
        out_dir = Path(out)
        _check_outputs_free(out_dir)

    runs = [merge_runs(g, metric=metric) for g in groups]
    _check_consistent(runs)
    names = _display_names(runs)
    subjects = sorted(set(runs[0].scores["subject"].astype(str)))
    classes = list(runs[0].metrics.get("data", {}).get("classes") or [])
    protocol = str(runs[0].metrics.get("protocol"))

    units = {name: _unit_scores(r, metric) for name, r in zip(names, runs)}
    summaries = {name: summarise(r.scores.astype({"subject": str}), metric)
                 for name, r in zip(names, runs)}
    per_subject = {name: summaries[name]["per_subject"] for name in names}

    ref = names[0]
    tests, rows = [], []
    for name, r in zip(names, runs):
        s = summaries[name]
        row: dict[str, Any] = {"pipeline": name, "run": str(r.path), "protocol": protocol,
                               "n_seeds": len(s["per_seed"]), "mean": s["mean"],
                               "std_over_seeds": s["std_over_seeds"]}
        for subj in subjects:
            row[f"subject:{subj}"] = per_subject[name][subj]["mean"]
        for level in _LEVELS:
            for k in ("n", "statistic", "p", "mean_diff"):
                row[f"{level}_{k}"] = math.nan
        if name != ref:
            paired = pd.concat([units[ref].rename("a"), units[name].rename("b")], axis=1,
                               join="inner")
            by_subject = pd.concat([units[ref].groupby("subject").mean().rename("a"),
                                    units[name].groupby("subject").mean().rename("b")],
                                   axis=1, join="inner")
            for level, frame in (("units", paired), ("subjects", by_subject)):
                res = wilcoxon_paired(frame["a"].to_numpy(), frame["b"].to_numpy())
                tests.append({"reference": ref, "other": name, "level": level, **res})
                row.update({f"{level}_n": res["n"], f"{level}_statistic": res["statistic"],
                            f"{level}_p": res["p"], f"{level}_mean_diff": res["mean_difference"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    tests_df = pd.DataFrame(tests, columns=["reference", "other", "level", "n", "statistic", "p",
                                            "mean_difference", "note"])
    notes = [f"{t['other']} vs {t['reference']} ({t['level']}): {t['note']}"
             for t in tests if t["note"]]
    seeds = [sorted(set(r.scores["seed"])) for r in runs]
    if len({tuple(s) for s in seeds}) > 1:
        notes.append("The runs used different seeds ("
                     + "; ".join(f"{n}: {s}" for n, s in zip(names, seeds))
                     + "); the subject×seed test pairs only the seeds they share.")
    chance = runs[0].metrics.get("chance_level") if metric in ("accuracy",
                                                                "balanced_accuracy") else None
    oracle = None
    if metric == "accuracy":
        oracle = next((r.metrics["oracle"] for r in runs if r.metrics.get("oracle")), None)
    if oracle is not None:
        from .metrics import oracle_bound

        bounds = []
        for r in runs:  # one seed's pooled test trials: what each per-seed mean rests on
            first = r.scores["seed"].iloc[0]
            n_test = int(r.scores.loc[r.scores["seed"] == first, "n_test"].sum())
            bounds.append(oracle_bound(oracle["mean"], oracle["ci95"], n_test))
        table["oracle_bound"] = bounds
        for r in _above_oracle(table):
            notes.append(f"{r.pipeline} scores {r.mean:.3f}, above the simulator's oracle "
                         f"({oracle['mean']:.3f}) + CI ({r.oracle_bound:.3f}, one-sided 95 %): "
                         f"a decoder of the sensors should not beat it; check for leakage.")
    long = pd.concat([u.rename("score").reset_index().assign(pipeline=n)
                      for n, u in units.items()], ignore_index=True)
    result = ComparisonResult(
        runs=paths, pipelines=names, metric=metric, protocol=protocol, subjects=subjects,
        classes=classes, table=table, per_subject=per_subject,
        units=long[["pipeline", "subject", "seed", "score"]], tests=tests_df,
        summaries=summaries, chance_level=chance, oracle=oracle, notes=notes)
    if out_dir is not None:
        _write(result, runs, out_dir)
    if verbose:
        logger.info("%s", result.to_markdown())
    return result


def _above_oracle(table: pd.DataFrame) -> list:
    """The rows of a comparison table whose mean is above their ``oracle_bound``."""
    if "oracle_bound" not in table:
        return []
    return [r for r in table.itertuples() if r.mean > r.oracle_bound]


# ---------------------------------------------------------------------------------- writing
def _check_outputs_free(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"The output folder {str(out_dir)!r} is a file.")
    taken = [out_dir / f for f in OUTPUT_FILES] + [out_dir / "figures" / f for f in FIGURES]
    taken = [str(p) for p in taken if p.exists()]
    if taken:
        raise FileExistsError(f"The comparison outputs {taken} already exist; bcikit never "
                              f"overwrites results. Choose another out folder.")


def _write(result: ComparisonResult, runs: list[_Run], out_dir: Path) -> None:
    _check_outputs_free(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figs = [plot_per_subject_comparison(result, figures_dir / "per_subject.png"),
            plot_confusions(result, runs, figures_dir / "confusion.png")]
    if any(not r.history.empty and "epoch" in r.history for r in runs):
        figs.append(plot_learning_curves_overlay(result, runs,
                                                 figures_dir / "learning_curves.png"))
    else:
        result.notes.append("No learning curves: no run has a training history (classical "
                            "baselines train in one step).")
    no_hist = [n for n, r in zip(result.pipelines, runs) if r.history.empty]
    if len(no_hist) < len(runs) and no_hist:
        result.notes.append(f"No learning curve for {', '.join(no_hist)} (no training history).")
    result.table.to_csv(out_dir / "comparison.csv", index=False)
    (out_dir / "comparison.json").write_text(json.dumps(result.to_json(), indent=1))
    (out_dir / "comparison.md").write_text(result.to_markdown([str(f) for f in figs]))
    result.out_dir = out_dir
    result.files = [out_dir / f for f in OUTPUT_FILES] + [Path(f) for f in figs]


# ---------------------------------------------------------------------------------- figures
def _colours(n: int) -> list:
    from .figures import _plt

    cmap = _plt().get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def plot_per_subject_comparison(result: ComparisonResult, path: str | os.PathLike | None = None):
    """Grouped bars: per subject (and overall), one bar per run; error bars = std over seeds."""
    from .figures import _plt, _save

    plt = _plt()
    groups = list(result.subjects) + ["mean"]
    k = len(result.pipelines)
    width = 0.8 / k
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(groups) * k + 2.5), 3.8))
    for i, (name, colour) in enumerate(zip(result.pipelines, _colours(k))):
        ps = result.per_subject[name]
        s = result.summaries[name]
        means = [ps[g]["mean"] for g in result.subjects] + [s["mean"]]
        stds = [ps[g]["std"] for g in result.subjects] + [s["std_over_seeds"]]
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=stds, capsize=2, label=name,
               color=colour, alpha=0.85)
    if result.chance_level is not None:
        ax.axhline(result.chance_level, color="k", ls="--", lw=1, label="chance")
    if result.oracle is not None:
        per = result.oracle.get("per_subject", {})
        ys = [per.get(g, {}).get("accuracy", np.nan) for g in result.subjects]
        ax.scatter(x, ys + [result.oracle["mean"]], marker="_", s=400, color="k", zorder=3,
                   label="oracle")
    ax.set_xticks(x, groups, rotation=45 if len(groups) > 10 else 0)
    if result.metric in ("accuracy", "balanced_accuracy"):
        ax.set_ylim(0, 1)
    ax.set_ylabel(f"test {result.metric}")
    ax.set_title(f"Test {result.metric} per subject (error bars: std over seeds)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusions(result: ComparisonResult, runs: list[_Run],
                    path: str | os.PathLike | None = None):
    """Row-normalised test confusion matrices of every run, side by side (``metrics.json``)."""
    from .figures import _plt, _save

    plt = _plt()
    k = len(runs)
    n_cls = max(1, len(result.classes))
    size = 1.0 * n_cls + 1.8
    fig, axes = plt.subplots(1, k, figsize=(size * k + 1.2, size + 0.8), squeeze=False,
                             layout="constrained")
    im = None
    for ax, name, run in zip(axes[0], result.pipelines, runs):
        cm = run.metrics.get("confusion")
        if cm is None:
            ax.set_axis_off()
            ax.set_title(f"{name}\n(no confusion matrix)", fontsize=9)
            continue
        cm = np.asarray(cm)
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center",
                        color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
        labels = result.classes if len(result.classes) == cm.shape[0] else \
            [str(c) for c in range(cm.shape[0])]
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("true")
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), fraction=0.03)
    fig.suptitle("Test confusion (all splits, all seeds)")
    return _save(fig, path)


def plot_learning_curves_overlay(result: ComparisonResult, runs: list[_Run],
                                 path: str | os.PathLike | None = None):
    """Loss and accuracy per epoch of every run with a history (mean over its splits):
    training solid, validation dashed."""
    from .figures import _plt, _save

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, run, colour in zip(result.pipelines, runs, _colours(len(runs))):
        h = run.history
        if h.empty or "epoch" not in h:
            continue
        for ax, metric in zip(axes, ("loss", "accuracy")):
            for phase, style in (("train", "-"), ("val", "--")):
                col = f"{phase}_{metric}"
                if col not in h:
                    continue
                mean = pd.to_numeric(h[col], errors="coerce").groupby(h["epoch"]).mean()
                if not np.isfinite(mean.to_numpy()).any():
                    continue
                ax.plot(mean.index, mean.to_numpy(), style, color=colour, lw=1.6,
                        label=f"{name} {phase}")
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Learning curves (mean over splits; solid: training, dashed: validation)")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------- run + compare
def _pipeline_names(pipelines: list[Path]) -> list[str]:
    names, seen = [], {}
    for p in pipelines:
        base = p.stem
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def run_and_compare(pipelines: list[str | os.PathLike], *,
                    dataset: str | os.PathLike | None = None, out: str | os.PathLike,
                    overrides: list[str] | None = None, device: str | None = None,
                    metric: str = "accuracy", verbose: bool | None = None) -> ComparisonResult:
    """Run several pipeline files on the same data, then compare them.

    Each pipeline runs with :func:`bcikit.pipeline.run_pipeline` into ``out/<file stem>/``
    (a second file with the same stem gets ``-2``), then :func:`compare_runs` writes the
    comparison into ``out``. The first pipeline is the reference.

    Parameters
    ----------
    pipelines : list of path-like
        Two or more pipeline files (``pipelines/*.toml``).
    dataset : path-like or None
        A dataset card or BIDS root for every pipeline; None runs each on its simulator.
    out : path-like
        A folder that does not exist or is empty.
    overrides : list of str or None
        ``section.field=value`` overrides applied to every pipeline (``--set``).
    device : str or None
        Overrides ``[train] device``.
    metric : str
        The metric compared.
    verbose : bool or None
        Progress bars and log lines.

    Returns
    -------
    ComparisonResult

    Raises
    ------
    ValueError
        Fewer than two pipelines, or pipelines whose evaluation protocols differ (checked
        before anything runs, naming the files).
    FileNotFoundError
        A missing pipeline file.
    FileExistsError
        When ``out`` exists and is not empty.

    Notes
    -----
    An interrupted run can be continued with ``bcikit run --resume out/<name>``; then call
    :func:`compare_runs` on the run folders.
    """
    from ..config import load_config
    from ..pipeline import run_pipeline

    validate_type(pipelines, (list, tuple), "pipelines", owner="run_and_compare")
    if len(pipelines) < 2:
        raise ValueError(f"run_and_compare needs at least two pipeline files; got "
                         f"{len(pipelines)}.")
    files = []
    for i, p in enumerate(pipelines):
        validate_type(p, "path-like", f"pipelines[{i}]", owner="run_and_compare")
        files.append(check_file(p, what="pipeline file"))
    validate_type(out, "path-like", "out", owner="run_and_compare")
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"The output folder {str(out_dir)!r} already exists and is not "
                              f"empty; bcikit never overwrites results. Choose another out.")
    configs = [load_config(f, overrides) for f in files]
    protocols = [(c.evaluate.protocol, json.dumps(c.evaluate.params, sort_keys=True, default=str))
                 for c in configs]
    if len(set(protocols)) > 1:
        desc = "; ".join(f"{str(f)!r}: {p[0]!r} {p[1]}" for f, p in zip(files, protocols))
        raise ValueError(f"The pipelines use different evaluation protocols, so their scores "
                         f"could not be paired: {desc}. Set the same [evaluate] protocol "
                         f"(for example with --set evaluate.protocol=...).")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dirs = []
    for cfg, name in zip(configs, _pipeline_names(files)):
        run_dir = out_dir / name
        logger.info("run_and_compare: %s -> %s", cfg.source, run_dir)
        run_pipeline(cfg, dataset=dataset, out=run_dir, device=device, verbose=verbose)
        run_dirs.append(run_dir)
    return compare_runs(run_dirs, metric=metric, out=out_dir, verbose=verbose)
