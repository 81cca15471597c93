"""Comparing runs: table values and Wilcoxon tests against hand computation and scipy on
synthetic run folders with known numbers, the checks that refuse unpaired runs, output files
that are never overwritten, and an end-to-end comparison of two real tiny runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from bcikit.evaluate import oracle_bound
from bcikit.evaluate.compare import (OUTPUT_FILES, ComparisonResult, compare_runs,
                                     run_and_compare, wilcoxon_paired)
from bcikit.utils import BcikitWarning

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = ["S01", "S02", "S03", "S04", "S05", "S06"]
SEEDS = [1, 2, 3]
CLASSES = ["left_hand", "right_hand"]
PROTOCOL = ("chronological", "Chronological per subject: first 80 % train, rest test.")


def write_run(path: Path, name: str, scores: pd.DataFrame, *, history: pd.DataFrame | None = None,
              protocol=PROTOCOL, classes=CLASSES, n_trials: int = 600,
              confusion=((40, 10), (12, 38)), oracle: dict | None = None) -> Path:
    """A run folder as bcikit.pipeline writes it (the files compare_runs reads); ``oracle`` is
    the ``metrics.json`` entry of a run on the motor-imagery simulator."""
    path.mkdir(parents=True)
    metrics = {"pipeline": name, "model": name, "protocol": protocol[0],
               "protocol_description": protocol[1], "seeds": sorted(set(scores["seed"])),
               "data": {"classes": list(classes), "n_trials": n_trials,
                        "subjects": sorted(set(scores["subject"]))},
               "chance_level": 1 / len(classes), "confusion": [list(r) for r in confusion]}
    if oracle is not None:
        metrics["oracle"] = oracle
    (path / "metrics.json").write_text(json.dumps(metrics))
    scores.to_csv(path / "scores.csv", index=False)
    if history is None:
        pd.DataFrame(columns=["split", "epoch"]).to_csv(path / "history.csv", index=False)
    else:
        history.to_csv(path / "history.csv", index=False)
    return path


def make_scores(rng, offset: float, subjects=SUBJECTS, seeds=SEEDS) -> pd.DataFrame:
    """One row per (seed, split); subjects S01 and S02 have two splits (folds) per seed."""
    rows = []
    for seed in seeds:
        for k, subj in enumerate(subjects):
            n_splits = 2 if k < 2 else 1
            for fold in range(n_splits):
                acc = float(np.clip(0.6 + 0.04 * k + offset + 0.05 * rng.standard_normal(),
                                    0, 1))
                rows.append({"seed": seed, "split": f"{subj}/fold{fold}", "subject": subj,
                             "n_test": 20, "accuracy": acc, "balanced_accuracy": acc - 0.01})
    return pd.DataFrame(rows)


def make_history(rng, epochs: int = 6) -> pd.DataFrame:
    rows = []
    for split in ("seed1/S01", "seed1/S02"):
        for e in range(1, epochs + 1):
            rows.append({"split": split, "epoch": e, "train_loss": 1 / e + 0.01 * rng.random(),
                         "train_accuracy": 0.5 + 0.05 * e, "val_loss": 1.2 / e,
                         "val_accuracy": 0.5 + 0.04 * e})
    return pd.DataFrame(rows)


@pytest.fixture
def three_runs(tmp_path, rng):
    a = write_run(tmp_path / "runs" / "a", "mvcnet", make_scores(rng, 0.10),
                  history=make_history(rng))
    b = write_run(tmp_path / "runs" / "b", "eegnet", make_scores(rng, 0.05),
                  history=make_history(rng))
    c = write_run(tmp_path / "runs" / "c", "csp_lda", make_scores(rng, 0.0))
    return [a, b, c]


def unit_table(run: Path) -> pd.Series:
    """Hand computation: mean over a subject's splits per seed -> one score per unit."""
    s = pd.read_csv(run / "scores.csv", dtype={"subject": str})
    return s.groupby(["subject", "seed"])["accuracy"].mean()


# ---------------------------------------------------------------------------------- values
def test_table_values_match_hand_computation(three_runs, tmp_path):
    res = compare_runs(three_runs, out=tmp_path / "cmp")
    assert isinstance(res, ComparisonResult)
    assert res.pipelines == ["mvcnet", "eegnet", "csp_lda"] and res.reference == "mvcnet"
    assert res.subjects == SUBJECTS and res.protocol == "chronological"
    for run, (_, row) in zip(three_runs, res.table.iterrows()):
        units = unit_table(run)
        per_subject = units.groupby("subject")
        per_seed = units.groupby("seed").mean()  # mean over subjects for each seed
        assert row["mean"] == pytest.approx(per_seed.mean(), abs=1e-12)
        assert row["std_over_seeds"] == pytest.approx(np.std(per_seed.to_numpy()), abs=1e-12)
        assert row["n_seeds"] == len(SEEDS)
        for subj in SUBJECTS:
            vals = units.loc[subj].to_numpy()
            assert row[f"subject:{subj}"] == pytest.approx(vals.mean(), abs=1e-12)
            assert res.per_subject[row["pipeline"]][subj]["std"] == pytest.approx(
                np.std(vals, ddof=1), abs=1e-12)
    # the split average matters: S01 has two folds per seed
    s = pd.read_csv(three_runs[0] / "scores.csv")
    first = s[(s.subject == "S01") & (s.seed == 1)]["accuracy"]
    assert len(first) == 2
    assert res.units.query("pipeline == 'mvcnet' and subject == 'S01' and seed == 1")[
        "score"].item() == pytest.approx(first.mean())


def test_wilcoxon_matches_scipy(three_runs):
    res = compare_runs(three_runs)
    ref = unit_table(three_runs[0])
    for run, name in zip(three_runs[1:], ("eegnet", "csp_lda")):
        other = unit_table(run)
        # (subject, seed) units, aligned on the same index
        expected = wilcoxon(ref.to_numpy(), other.loc[ref.index].to_numpy())
        t = res.tests.set_index(["other", "level"]).loc[(name, "units")]
        assert t["n"] == len(SUBJECTS) * len(SEEDS)
        assert t["statistic"] == expected.statistic and t["p"] == expected.pvalue
        assert t["mean_difference"] == pytest.approx((ref - other.loc[ref.index]).mean())
        # subjects, each the mean over its seeds
        a, b = ref.groupby("subject").mean(), other.groupby("subject").mean()
        expected = wilcoxon(a.to_numpy(), b.loc[a.index].to_numpy())
        t = res.tests.set_index(["other", "level"]).loc[(name, "subjects")]
        assert t["n"] == len(SUBJECTS)
        assert t["statistic"] == expected.statistic and t["p"] == expected.pvalue
        row = res.table.set_index("pipeline").loc[name]
        assert row["subjects_p"] == expected.pvalue
        assert row["subjects_mean_diff"] == pytest.approx((a - b).mean())
    # the reference row has no test
    assert res.table.iloc[0][["units_p", "subjects_p", "units_n"]].isna().all()
    # mvcnet was simulated 0.10 above csp_lda: the difference is positive and significant
    row = res.table.set_index("pipeline").loc["csp_lda"]
    assert row["units_mean_diff"] > 0.05 and row["units_p"] < 0.01


def test_other_metric_and_unpaired_seeds(tmp_path, rng):
    a = write_run(tmp_path / "a", "A", make_scores(rng, 0.1, seeds=[1, 2, 3]))
    b = write_run(tmp_path / "b", "B", make_scores(rng, 0.0, seeds=[2, 3, 4, 5]))
    res = compare_runs([a, b], metric="balanced_accuracy")
    t = res.tests.set_index("level")
    assert t.loc["units", "n"] == len(SUBJECTS) * 2  # seeds 2 and 3 are shared
    assert t.loc["subjects", "n"] == len(SUBJECTS)
    assert any("different seeds" in n for n in res.notes)
    s = pd.read_csv(a / "scores.csv")
    per_seed = s.groupby(["seed", "subject"])["balanced_accuracy"].mean().groupby("seed").mean()
    assert res.table.iloc[0]["mean"] == pytest.approx(per_seed.mean())


def test_identical_runs_give_an_undefined_test(tmp_path, rng):
    scores = make_scores(rng, 0.0)
    a = write_run(tmp_path / "a", "A", scores)
    b = write_run(tmp_path / "b", "B", scores)
    res = compare_runs([a, b])
    assert res.tests["p"].isna().all() and res.tests["mean_difference"].eq(0).all()
    assert any("paired differences are zero" in n for n in res.notes)
    assert wilcoxon_paired(np.array([]), np.array([]))["note"] == "no paired units"


# ---------------------------------------------------------------------------------- files
def test_outputs_written_and_never_overwritten(three_runs, tmp_path):
    out = tmp_path / "cmp"
    res = compare_runs(three_runs, out=out)
    for f in OUTPUT_FILES:
        assert (out / f).is_file()
    for fig in ("per_subject.png", "confusion.png", "learning_curves.png"):
        assert (out / "figures" / fig).read_bytes()[:4] == b"\x89PNG"
    back = pd.read_csv(out / "comparison.csv")
    pd.testing.assert_frame_equal(back, res.table, check_dtype=False)
    js = json.loads((out / "comparison.json").read_text())
    assert js["reference"] == "mvcnet" and js["pipelines"] == res.pipelines
    assert js["table"][0]["units_p"] is None  # NaN -> null
    assert js["tests"][0]["p"] == res.tests.iloc[0]["p"]
    md = (out / "comparison.md").read_text()
    mean, std = res.table.iloc[0][["mean", "std_over_seeds"]]
    assert f"| **mvcnet** | {mean:.3f} ± {std:.3f} | 3 |" in md
    p = res.tests.set_index(["other", "level"]).loc[("csp_lda", "units"), "p"]
    p_txt = f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"
    assert f"p={p_txt} (n=18)" in md
    assert "No learning curve for csp_lda" in md
    assert "![confusion](figures/confusion.png)" in md
    assert res.to_markdown() == md
    with pytest.raises(FileExistsError, match="never overwrites"):
        compare_runs(three_runs, out=out)


def test_classical_runs_have_no_learning_curves(tmp_path, rng):
    a = write_run(tmp_path / "a", "A", make_scores(rng, 0.1))
    b = write_run(tmp_path / "b", "B", make_scores(rng, 0.0))
    res = compare_runs([a, b], out=tmp_path / "cmp")
    assert not (tmp_path / "cmp" / "figures" / "learning_curves.png").exists()
    assert any("No learning curves" in n for n in res.notes)
    assert {p.name for p in res.files} == {*OUTPUT_FILES, "per_subject.png", "confusion.png"}


# ---------------------------------------------------------------------------------- errors
def test_refuses_runs_with_different_subjects(tmp_path, rng):
    a = write_run(tmp_path / "a", "A", make_scores(rng, 0.1))
    b = write_run(tmp_path / "b", "B", make_scores(rng, 0.0, subjects=SUBJECTS[:-1]))
    with pytest.raises(ValueError, match="do not cover the same subjects") as err:
        compare_runs([a, b])
    assert str(a) in str(err.value) and str(b) in str(err.value)


def test_refuses_runs_with_different_protocols(tmp_path, rng):
    a = write_run(tmp_path / "a", "A", make_scores(rng, 0.1))
    b = write_run(tmp_path / "b", "B", make_scores(rng, 0.0),
                  protocol=("kfold", "5-fold cross-validation per subject."))
    with pytest.raises(ValueError, match="different protocols") as err:
        compare_runs([a, b])
    assert str(a) in str(err.value) and str(b) in str(err.value)
    assert "'kfold'" in str(err.value) and "'chronological'" in str(err.value)


def test_other_errors(tmp_path, rng):
    a = write_run(tmp_path / "a", "A", make_scores(rng, 0.1))
    b = write_run(tmp_path / "b", "B", make_scores(rng, 0.0), classes=["feet", "tongue"])
    with pytest.raises(ValueError, match="decode different classes"):
        compare_runs([a, b])
    with pytest.raises(ValueError, match="at least two run folders"):
        compare_runs([a])
    with pytest.raises(ValueError, match="same run folder twice"):
        compare_runs([a, a])
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        compare_runs([a, tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        compare_runs([a, tmp_path / "empty"])
    c = write_run(tmp_path / "c", "C", make_scores(rng, 0.0))
    with pytest.raises(ValueError, match=r"has no column\(s\) \['f1_macro'\]"):
        compare_runs([a, c], metric="f1_macro")
    d = write_run(tmp_path / "d", "D", make_scores(rng, 0.0), n_trials=300)
    with pytest.warns(BcikitWarning, match="different numbers of trials"):
        compare_runs([a, d])
    with pytest.raises(TypeError, match="'run_dirs' parameter of compare_runs"):
        compare_runs(str(a))


def test_duplicate_pipeline_names_use_folder_names(tmp_path, rng):
    a = write_run(tmp_path / "first", "mvcnet", make_scores(rng, 0.1))
    b = write_run(tmp_path / "second", "mvcnet", make_scores(rng, 0.0))
    res = compare_runs([a, b])
    assert res.pipelines == ["mvcnet (first)", "mvcnet (second)"]


# ---------------------------------------------------------------------------------- real runs
OVERRIDES = ["data.simulate.n_subjects=3", "data.simulate.n_trials_per_class=20",
             "data.simulate.sfreq=128.0", "data.simulate.trial_duration=3.0"]


def test_run_and_compare_two_real_pipelines(tmp_path):
    out = tmp_path / "compare"
    res = run_and_compare([REPO / "pipelines" / "csp_lda.toml", REPO / "pipelines" / "ts_lr.toml"],
                          out=out, overrides=OVERRIDES)
    assert res.pipelines == ["csp_lda", "ts_lr"]
    assert res.subjects == ["S01", "S02", "S03"] and res.protocol == "cross_session"
    for name in res.pipelines:
        run = out / name
        metrics = json.loads((run / "metrics.json").read_text())
        summary = metrics["summary"]["accuracy"]
        row = res.table.set_index("pipeline").loc[name]
        # the table repeats each run's own report
        assert row["mean"] == pytest.approx(summary["mean"], abs=1e-12)
        assert row["std_over_seeds"] == pytest.approx(summary["std_over_seeds"], abs=1e-12)
        for subj, v in summary["per_subject"].items():
            assert row[f"subject:{subj}"] == pytest.approx(v["mean"], abs=1e-12)
        assert 0.5 < row["mean"] <= 1.0  # both baselines decode the simulated imagery
    a = pd.read_csv(out / "csp_lda" / "scores.csv").groupby("subject")["accuracy"].mean()
    b = pd.read_csv(out / "ts_lr" / "scores.csv").groupby("subject")["accuracy"].mean()
    t = res.tests.set_index("level").loc["subjects"]
    assert t["n"] == 3 and t["mean_difference"] == pytest.approx((a - b).mean())
    if np.any(a.to_numpy() != b.to_numpy()):
        expected = wilcoxon(a.to_numpy(), b.to_numpy())
        assert t["p"] == expected.pvalue and t["statistic"] == expected.statistic
    else:
        assert math.isnan(t["p"])
    for f in (*OUTPUT_FILES, "figures/per_subject.png", "figures/confusion.png"):
        assert (out / f).is_file()
    assert "No learning curves" in (out / "comparison.md").read_text()
    with pytest.raises(FileExistsError, match="not empty"):
        run_and_compare([REPO / "pipelines" / "csp_lda.toml", REPO / "pipelines" / "ts_lr.toml"],
                        out=out, overrides=OVERRIDES)


def test_run_and_compare_checks_protocols_before_running(tmp_path):
    text = (REPO / "pipelines" / "ts_lr.toml").read_text()
    assert 'protocol = "cross_session"' in text
    other = tmp_path / "ts_lr_chrono.toml"
    other.write_text(text.replace('protocol = "cross_session"', 'protocol = "chronological"'))
    out = tmp_path / "compare"
    with pytest.raises(ValueError, match="different evaluation protocols") as err:
        run_and_compare([REPO / "pipelines" / "csp_lda.toml", other], out=out)
    assert "csp_lda.toml" in str(err.value) and "ts_lr_chrono.toml" in str(err.value)
    assert not out.exists()  # nothing ran
    with pytest.raises(ValueError, match="at least two pipeline files"):
        run_and_compare([other], out=out)
    with pytest.raises(FileNotFoundError, match="nope.toml"):
        run_and_compare([other, tmp_path / "nope.toml"], out=out)


# ---------------------------------------------------------------------------------- merged runs
def test_runs_split_by_seed_compare_as_one_run(three_runs, tmp_path, rng):
    """Runs of one pipeline split over seeds (for example one process per seed on a GPU) give
    the same table and tests as the whole run; confusions add up; overlapping or mismatched
    parts are refused, naming the folders."""
    whole = compare_runs(three_runs)
    s = pd.read_csv(three_runs[0] / "scores.csv", dtype={"subject": str})
    h = pd.read_csv(three_runs[0] / "history.csv")
    parts = []
    for seed in SEEDS:
        parts.append(write_run(tmp_path / "parts" / f"s{seed}", "mvcnet",
                               s[s.seed == seed].reset_index(drop=True),
                               history=h if seed == 1 else None, confusion=((1, 2), (3, 4))))
    merged = compare_runs([parts, three_runs[1], three_runs[2]], out=tmp_path / "cmp")
    cols = ["mean", "std_over_seeds", "n_seeds", "units_p", "subjects_p", "units_n"]
    pd.testing.assert_frame_equal(merged.table[cols], whole.table[cols])
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    from bcikit.evaluate.compare import merge_runs

    run = merge_runs(parts)
    assert run.metrics["confusion"] == [[3, 6], [9, 12]]
    assert run.metrics["seeds"] == SEEDS and len(run.history) == len(h)
    with pytest.raises(ValueError, match="share seed 1"):
        merge_runs([parts[0], three_runs[0]])
    with pytest.raises(ValueError, match="pipelines differ"):
        merge_runs([parts[1], three_runs[1]])


def test_cli_joins_run_parts_with_commas(three_runs, tmp_path, capsys):
    from bcikit.cli import main

    s = pd.read_csv(three_runs[1] / "scores.csv", dtype={"subject": str})
    a = write_run(tmp_path / "p" / "a", "eegnet", s[s.seed < 3].reset_index(drop=True))
    b = write_run(tmp_path / "p" / "b", "eegnet", s[s.seed == 3].reset_index(drop=True))
    assert main(["compare", str(three_runs[0]), f"{a},{b}", "--out", str(tmp_path / "c")]) == 0
    table = pd.read_csv(tmp_path / "c" / "comparison.csv")
    assert table["n_seeds"].tolist() == [3, 3]
    whole = compare_runs(three_runs[:2])
    assert table["units_p"].iloc[1] == pytest.approx(whole.table["units_p"].iloc[1])

# ---------------------------------------------------------------------------------- oracle gate
def _oracle_run(path: Path, accuracy: float, oracle: dict | None) -> Path:
    """Three subjects x two seeds, 28 test trials each, subject k scoring accuracy + 0.01 k."""
    rows = [{"seed": seed, "split": s, "subject": s, "n_test": 28,
             "accuracy": min(1.0, accuracy + 0.01 * k)}
            for seed in (1, 2) for k, s in enumerate(["S01", "S02", "S03"])]
    return write_run(path, path.name, pd.DataFrame(rows), n_trials=400,
                     confusion=((40, 10), (10, 40)), oracle=oracle)


def test_compare_flags_a_run_above_the_oracle(tmp_path):
    oracle = {"mean": 0.8, "ci95": [0.78, 0.82], "classes": ["left_hand", "right_hand"],
              "method": "test oracle",
              "per_subject": {s: {"accuracy": 0.8, "n_test": 160, "ci95": [0.73, 0.86]}
                              for s in ("S01", "S02", "S03")}}
    honest = _oracle_run(tmp_path / "honest", 0.75, oracle)
    leaky = _oracle_run(tmp_path / "leaky", 0.97, oracle)
    res = compare_runs([honest, leaky], out=tmp_path / "cmp")
    assert res.above_oracle == ["leaky"]
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "above oracle + CI: leaky" in md and "oracle (noise-free sources)" in md
    assert any("leaky scores 0.980, above the simulator's oracle" in n for n in res.notes)
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["above_oracle"] == ["leaky"] and saved["oracle"]["mean"] == 0.8
    # just under the bound is not flagged; without an oracle nothing is
    b = oracle_bound(0.8, (0.78, 0.82), 3 * 28)
    assert 0.86 < b < 0.97  # 0.86 on 84 trials is compatible with an oracle at 0.8
    near = _oracle_run(tmp_path / "near", 0.85, oracle)
    assert compare_runs([honest, near]).above_oracle == []
    plain = [_oracle_run(tmp_path / n, a, None) for n, a in (("p1", 0.7), ("p2", 0.99))]
    res = compare_runs(plain)
    assert res.oracle is None and res.above_oracle == []
