"""The Du-IN simulator script's decisions (``benchmarks/duin_simulator.py``): which runs
calibrate, and which snr / word-locked potential the calibration picks. The script itself needs a
GPU to run for real; these are the parts that decide what it reports."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "duin_simulator.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("duin_simulator_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    before = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = before  # the script puts benchmarks/ first for its _common helper
    return module


def _record(task, snr, lfp, correct, n, status="ok", kind="classify"):
    # two folds per record: the calibration pools their test trials
    return {"task": task, "kind": kind, "status": status, "snr": snr, "lfp_snr": lfp,
            "seconds": 1.0, "rows": [{"n_test": n // 2, "correct": correct // 2},
                                     {"n_test": n - n // 2, "correct": correct - correct // 2}]}


def test_which_runs_calibrate(sim, capsys):
    args = sim.parse_args(["--size", "cpu", "--folds", "all"])
    assert sim._calibrates(sim.build_plan(args), args)  # no --snr: over the snr grid
    args = sim.parse_args(["--size", "cpu", "--folds", "all", "--snr", "2"])
    assert not sim._calibrates(sim.build_plan(args), args)  # given: the main runs start at once
    args = sim.parse_args(["--size", "cpu", "--folds", "all", "--snr", "2",
                           "--lfp-snr-grid", "8", "16"])
    plan = sim.build_plan(args)
    assert sim._calibrates(plan, args) and plan["lfp_snr_grid"] == [8.0, 16.0]
    for bad, match in ((["--lfp-snr-grid", "8"], "give --snr too"),
                       (["--snr", "2", "--lfp-snr-grid", "8", "0"], "must be > 0"),
                       (["--snr", "2", "--lfp-snr", "4", "--lfp-snr-grid", "8"], "exclude"),
                       (["--first-subject", "0"], "--first-subject must be >= 1"),
                       (["--pretrain-minutes", "0"], "--pretrain-minutes must be > 0"),
                       (["--codebook-size", "1"], "--codebook-size must be >= 2")):
        with pytest.raises(SystemExit):
            sim.parse_args(bad)
        assert match in capsys.readouterr().err  # argparse's error names the argument's rule


def test_calibration_picks_the_value_closest_to_45_percent(sim):
    plan = {"lfp_snr_grid": [8.0, 16.0, 32.0], "snr_grid": [2.0]}
    records = [_record("cal-lfp8", 2.0, 8.0, 12, 60),      # 20 %
               _record("cal-lfp16", 2.0, 16.0, 30, 60),    # 50 %: the closest
               _record("cal-lfp32", 2.0, 32.0, 42, 60),    # 70 %
               _record("cal-lfp64", 2.0, 64.0, 27, 60, status="failed"),  # 45 %, but failed
               _record("main-R101", 2.0, 8.0, 27, 60),     # not a calibration run
               _record("cal-lfp4", 2.0, 4.0, 27, 60, kind="pretrain")]
    out = sim.calibration_result(records, plan)
    assert out["axis"] == "lfp_snr" and out["grid"] == [8.0, 16.0, 32.0]
    assert [r["lfp_snr"] for r in out["rows"]] == [8.0, 16.0, 32.0]
    assert [r["accuracy"] for r in out["rows"]] == pytest.approx([0.2, 0.5, 0.7])
    assert out["chosen_lfp_snr"] == 16.0 and out["chosen_snr"] == 2.0
    # over the carrier snr, at the plan's fixed potential (0 in records that predate it)
    plan = {"lfp_snr_grid": None, "snr_grid": [32.0, 128.0]}
    records = [_record("cal-snr32", 32.0, 0.0, 6, 60), _record("cal-snr128", 128.0, 0.0, 24, 60)]
    del records[0]["lfp_snr"]
    out = sim.calibration_result(records, plan)
    assert out["axis"] == "snr" and out["chosen_snr"] == 128.0 and out["chosen_lfp_snr"] == 0.0
    # nothing finished: no choice, and the main runs are never started on a guess
    out = sim.calibration_result([], plan)
    assert out["chosen_snr"] is None and out["rows"] == []


#: correct test trials of seeds 42 and 0 (out of 48) per (subject, variant), for ``_part``
CORRECT = {("R101", "mae"): (36, 30), ("R101", "scratch"): (24, 30),
           ("R102", "mae"): (30, 33), ("R102", "scratch"): (27, 21)}


def _part(tmp_path, name, subjects, correct=CORRECT, *, lfp=36.0, records=True, simulate=None,
          settings=None):
    """A results JSON as the script writes it, holding MAE and scratch runs of ``subjects``:
    ``correct[(subject, variant)]`` = correct test trials of seeds 42 and 0 (out of 48);
    ``simulate``: simulator keywords besides ``n_words`` in its settings; ``settings``: further
    settings (``{"codebook_size": 256}``)."""
    recs = []
    for subj in subjects:
        for variant, tag in (("mae", "A"), ("scratch", "S")):
            k42, k0 = correct[(subj, variant)]
            recs.append({"task": f"main-{subj}-{tag}", "kind": "classify", "variant": variant,
                         "subject": subj, "status": "ok", "seconds": 1.0, "snr": 2.0,
                         "lfp_snr": lfp,
                         "rows": [{"seed": 42, "n_test": 48, "correct": k42},
                                  {"seed": 0, "n_test": 48, "correct": k0}]})
    res = {"status": "complete", "device": "cpu", "snr": 2.0, "lfp_snr": lfp,
           "settings": {"simulate": {"n_words": 12, **(simulate or {})},
                        "epochs": {"vqvae": 400}, "folds": "x", "n_words": 12,
                        "chance": 1 / 12, "variants": ["mae", "scratch"],
                        "subjects_random_state": {s: 0 for s in subjects},
                        **(settings or {})},
           "calibration": {}}
    if records:
        res["records"] = recs
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(res))
    return path


def test_combine_pools_parts_and_refuses_mismatches(sim, tmp_path):
    a = _part(tmp_path, "a", ["R101"])
    b = _part(tmp_path, "b", ["R102"])
    out = sim.combine([a, b])
    mae = out["accuracy"]["mae"]["per_subject_seed"]
    assert mae == {"R101": {42: 36 / 48, 0: 30 / 48}, "R102": {42: 30 / 48, 0: 33 / 48}}
    diff = out["comparisons"]["mae - scratch"]
    # the four subject x seed pairs of both parts: (12, 0, 3, 12) / 48
    assert diff["n_pairs"] == 4 and diff["mean_difference"] == pytest.approx(27 / 4 / 48)
    assert [p["subjects"] for p in out["parts"]] == [["R101"], ["R102"]]
    assert out["settings"]["subjects_random_state"] == {"R101": 0, "R102": 0}
    assert "| mae - scratch | +14.1 |" in sim.summary_table(out)  # 27 / 4 / 48 in points
    # refused, naming the file and what differs
    for parts, match in (([a], "at least two"),
                         ([a, a], "is in both"),
                         ([a, _part(tmp_path, "c", ["R102"], lfp=24.0)], "lfp_snr"),
                         ([a, _part(tmp_path, "d", ["R102"], records=False)],
                          "has no 'records'")):
        with pytest.raises(SystemExit, match=match) as err:
            sim.combine(parts)
        if len(parts) == 2:
            assert parts[1].name in str(err.value)


def test_restart_option_reaches_only_the_pretraining_pipelines(sim):
    args = sim.parse_args(["--size", "compact", "--folds", "all", "--snr", "2",
                           "--restart-dead-codes", "10"])
    plan = sim.build_plan(args)
    assert plan["restart_dead_codes"] == 10 and plan["simulate"]["n_words"] == 12
    assert plan["subjects"] == {"R101": 101, "R102": 102, "R103": 103, "R104": 104}
    later = sim.build_plan(sim.parse_args(["--size", "compact", "--folds", "all", "--snr", "2",
                                           "--first-subject", "3", "--subjects", "2"]))
    assert later["subjects"] == {"R103": 103, "R104": 104}  # fresh subjects for a later part
    # a subject's test run follows its number, not its place in the call (5 runs: R101 run5,
    # R102 run4, R103 run3, ...), so a design split over calls keeps its folds
    later["folds"] = plan["folds"] = "per-subject"
    task = sim.Task("main-R103-A", "main", "R103", 103, 2.0, ["mae"], [42, 0], 1.0)
    assert sim.task_groups(task, later) == [{"seeds": [42, 0], "test_run": "run3"}]
    assert sim.task_groups(task, plan) == [{"seeds": [42, 0], "test_run": "run3"}]
    first = sim.Task("main-R101-A", "main", "R101", 101, 2.0, ["mae"], [42], 1.0)
    assert sim.task_groups(first, plan) == [{"seeds": [42], "test_run": "run5"}]
    spec = {"epochs": plan["epochs"], "restart_dead_codes": plan["restart_dead_codes"]}
    want = "pretrain.vqvae_params={restart_dead_codes = 10}"
    assert want in sim._overrides(spec, plan["simulate"], [], "duin.toml")
    assert want not in sim._overrides(spec, plan["simulate"], [], "duin_conformer.toml")
    spec["restart_dead_codes"] = None  # the default: the spec's quantiser
    assert not any("restart" in o for o in sim._overrides(spec, plan["simulate"], [],
                                                          "duin.toml"))
    # the override is valid pipeline configuration: the Du-IN pipeline accepts it
    from bcikit.config import load_config

    cfg = load_config(sim.PIPELINES / "duin.toml", overrides=[want])
    assert cfg.pretrain.vqvae_params == {"restart_dead_codes": 10}


def test_pretrain_minutes_reaches_the_simulated_data_and_keeps_parts_apart(sim, tmp_path):
    longer = sim.build_plan(sim.parse_args(["--size", "compact", "--folds", "all", "--snr", "2",
                                            "--pretrain-minutes", "40"]))
    assert longer["simulate"]["pretrain_minutes"] == 40.0 and longer["simulate"]["n_words"] == 12
    assert sim.SIZES["compact"]["simulate"]["pretrain_minutes"] == 10.0  # the preset is untouched
    spec = {"epochs": longer["epochs"]}
    (data,) = [o for o in sim._overrides(spec, longer["simulate"], [], "duin.toml")
               if o.startswith("data.simulate=")]
    assert "pretrain_minutes = 40.0" in data
    # a part with other pre-training data is not pooled with the design's parts
    a = _part(tmp_path, "a", ["R101"])
    b = _part(tmp_path, "b", ["R102"], simulate={"pretrain_minutes": 40.0})
    with pytest.raises(SystemExit, match="settings.simulate"):
        sim.combine([a, b])


def test_codebook_size_reaches_the_quantiser_and_keeps_parts_apart(sim, tmp_path):
    plan = sim.build_plan(sim.parse_args(["--size", "compact", "--folds", "all", "--snr", "2",
                                          "--restart-dead-codes", "10",
                                          "--codebook-size", "256"]))
    assert plan["codebook_size"] == 256
    spec = {"epochs": plan["epochs"], "restart_dead_codes": 10, "codebook_size": 256}
    (vq,) = [o for o in sim._overrides(spec, plan["simulate"], [], "duin.toml")
             if o.startswith("pretrain.vqvae_params=")]
    from bcikit.config import load_config
    from bcikit.models import DuINVQVAE

    params = load_config(sim.PIPELINES / "duin.toml", overrides=[vq]).pretrain.vqvae_params
    assert params == {"restart_dead_codes": 10, "n_codes": 256}
    assert DuINVQVAE(subjects={"R101": 4}, **params).quantizer.codebook.shape == (256, 64)
    assert not any("vqvae_params" in o for o in sim._overrides(spec, plan["simulate"], [],
                                                               "duin_conformer.toml"))
    # a part with another codebook is not pooled with the design's parts (which have none)
    a = _part(tmp_path, "a", ["R101"])
    b = _part(tmp_path, "b", ["R102"], settings={"codebook_size": 256})
    with pytest.raises(SystemExit, match="settings.codebook_size"):
        sim.combine([a, b])


def test_checks_ask_for_the_ci_above_zero_where_the_declared_criteria_do(sim):
    """Criteria 1-3 of the declared comparisons need the pair bootstrap CI above 0; a positive
    mean alone (session 16's part 1: MAE - EEG-Conformer +11.5, CI [-8.3, +31.6]) passes none."""
    def comp(mean, lo, hi):
        return {"mean_difference": mean, "bootstrap_ci95": [lo, hi]}

    keys = {"mae - scratch": "row4_mae_minus_scratch_ci_excludes_0_positive",
            "mae - conformer": "mae_minus_conformer_ci_excludes_0_positive",
            "mae - mae_all": "region_minus_all_ci_excludes_0_positive"}
    wide = sim._checks({}, {k: comp(0.115, -0.083, 0.316) for k in keys}, {}, {}, {})
    above = sim._checks({}, {k: comp(0.3, 0.2, 0.4) for k in keys}, {}, {}, {})
    for key, check in keys.items():
        assert wide[check] is False and above[check] is True, key
    assert sim._checks({}, {"vqvae - scratch": comp(0.0, -0.1, 0.1)}, {}, {}, {}) == {
        "row4_vqvae_ge_scratch": True}  # the spec's second half: ">= scratch", on the mean
