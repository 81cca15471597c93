"""The federated and local-only arms of the 9-site check run apart and join to the same result."""

import json

import numpy as np
import pytest

from bcikit.federated.simulate import (SiteSpec, combine_comparisons, gain_by_size, main,
                                       plot_site_gains)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_arms_apart_equal_arms_together(tmp_path):
    common = ["--size", "tiny", "--sites", "2", "--rounds", "1", "--trials-per-class", "4",
              "--n-test", "1", "--device", "cpu", "--seed", "1"]
    both = main(common + ["--out", str(tmp_path / "both.json")])
    main(common + ["--kind", "federated", "--out", str(tmp_path / "fed.json")])
    main(common + ["--kind", "local", "--out", str(tmp_path / "loc.json")])
    joined = main(common + ["--combine", str(tmp_path / "fed.json"), str(tmp_path / "loc.json"),
                            "--out", str(tmp_path / "joined.json")])
    assert set(joined["sites"]) == set(both["sites"]) == {"sim-A", "sim-B"}
    for site, row in both["sites"].items():
        assert joined["sites"][site]["subjects"] == row["subjects"]
        assert joined["sites"][site]["gain"] == pytest.approx(row["gain"], abs=1e-12)
    assert joined["paired"] == both["paired"]
    assert joined["selection"] == both["selection"]  # the snapshot each site kept, per arm
    for site in ("sim-A", "sim-B"):
        for arm in ("federated", "local"):
            (kept,) = both["selection"][site][arm]
            assert kept["fold"] == 0 and kept["round"] in (0, 1)
            assert kept["val_loss"] > 0 and 0 <= kept["best_val_acc"] <= 1
            assert kept["best_val_acc_round"] in (0, 1)
            assert kept["last_round"] == 1  # one round: the last model is the kept snapshot
            assert kept["last_subject_acc"] == {
                s: row[arm] for s, row in both["sites"][site]["subjects"].items()}
    assert joined["last_round"] == both["last_round"]
    for site, row in both["last_round"]["sites"].items():
        assert row["gain"] == pytest.approx(both["sites"][site]["gain"], abs=1e-12)
    assert json.loads((tmp_path / "joined.json").read_text())["mean_gain"] == both["mean_gain"]
    assert (tmp_path / "both.png").stat().st_size > 0 and (tmp_path / "joined.png").exists()
    (tmp_path / "joined.json").unlink()  # the figure alone still blocks that --out
    with pytest.raises(SystemExit, match="joined.png' exists"):
        main(common + ["--kind", "local", "--out", str(tmp_path / "joined.json")])
    with pytest.raises(ValueError, match="need a federated and a local part"):
        main(common + ["--combine", str(tmp_path / "fed.json"),
                       "--out", str(tmp_path / "bad.json")])
    for other, wrong in ((["--trials-per-class", "5"], "trials_per_class 4 .this command: 5"),
                         (["--sites", "3"], "sim-C: name None")):
        with pytest.raises(SystemExit, match=f"fed.json: its sites differ.*{wrong}"):
            main(common + other + ["--combine", str(tmp_path / "fed.json"),
                                   str(tmp_path / "loc.json"), "--out", str(tmp_path / "x.json")])
    assert not (tmp_path / "x.json").exists()
    # a second pass over the subjects (spec §4's fresh shuffles): fold 5 of 2 sites of 5 and 4
    with pytest.raises(ValueError, match="fold"):
        main(common + ["--kind", "federated", "--first-fold", "5"])
    again = main(common + ["--kind", "federated", "--first-fold", "5", "--n-folds", "6",
                           "--out", str(tmp_path / "again.json")])
    assert again["folds"] == [5] and again["n_folds"] == 6
    assert all(len(subjects) == 1 for subjects in again["per"].values())


def test_site_gain_figure_sorts_sites_by_size():
    def row(n, fed, loc):
        return {"n_subjects": n, "federated_acc": fed, "local_acc": loc, "gain": fed - loc,
                "subjects": {"S01": {"federated": fed, "local": loc}}}

    result = {"sites": {"big": row(50, 0.9, 0.85), "small": row(4, 0.7, 0.5),
                        "mid": row(12, 0.8, 0.7)},
              "mean_gain": 0.117, "paired": {"n": 3, "wilcoxon": {"pvalue": 0.25}},
              "gain_vs_size": -1.0, "rounds": 3}
    fig = plot_site_gains(result)
    bars = fig.axes[0].patches
    assert [b.get_height() for b in bars[:3]] == [0.7, 0.8, 0.9]  # federated, small -> big
    assert [b.get_height() for b in bars[3:6]] == [0.5, 0.7, 0.85]  # local
    means = fig.axes[1].collections[-1].get_offsets()
    assert means[:, 0].tolist() == [4, 12, 50]
    assert means[:, 1].tolist() == pytest.approx([0.2, 0.1, 0.05])
    assert "Wilcoxon p = 0.25" in fig._suptitle.get_text()


def test_folds_run_apart_join():
    specs = [SiteSpec("a", 14, 160.0, 1.0, 4, 10)]

    def part(kind, fold, subject, acc):
        return {"per": {"a": {subject: {"federated": [acc] if kind == "federated" else [],
                                        "local": [acc] if kind == "local" else []}}},
                "kinds": [kind], "rounds": 5, "folds": [fold], "n_test": 1}

    parts = [part("federated", 0, "S01", 0.9), part("local", 0, "S01", 0.6),
             part("federated", 1, "S02", 0.7), part("local", 1, "S02", 0.8)]
    out = combine_comparisons(parts, specs)
    assert out["folds"] == [0, 1] and out["paired"]["n"] == 2
    assert out["selection"] == {}  # parts written before the kept snapshots were recorded
    parts = [{**q, "selection": {"a": {q["kinds"][0]: [{"fold": q["folds"][0], "round": i}]}}}
             for i, q in enumerate(parts)]
    assert combine_comparisons(parts, specs)["selection"] == {
        "a": {"federated": [{"fold": 0, "round": 0}, {"fold": 1, "round": 2}],
              "local": [{"fold": 0, "round": 1}, {"fold": 1, "round": 3}]}}
    assert "last_round" not in combine_comparisons(parts, specs)  # no last-round scores
    last = {("federated", 0): 0.5, ("local", 0): 0.7, ("federated", 1): 1.0,
            ("local", 1): 0.6}
    for q in parts:
        (kind,), (fold,) = q["kinds"], q["folds"]
        q["selection"]["a"][kind][0]["last_subject_acc"] = {f"S0{fold + 1}": last[kind, fold]}
    lr = combine_comparisons(parts, specs)["last_round"]
    assert lr["sites"]["a"] == pytest.approx({"federated_acc": 0.75, "local_acc": 0.65,
                                              "gain": 0.1})
    assert lr["paired"]["n"] == 2 and lr["paired"]["mean_diff"] == pytest.approx(0.1)
    del parts[3]["selection"]["a"]["local"][0]["last_subject_acc"]  # one part predates them
    assert "last_round" not in combine_comparisons(parts, specs)
    assert out["sites"]["a"]["subjects"] == {"S01": {"federated": 0.9, "local": 0.6},
                                             "S02": {"federated": 0.7, "local": 0.8}}
    assert out["sites"]["a"]["gain"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="cover different folds"):
        combine_comparisons(parts[:3], specs)
    with pytest.raises(ValueError, match="federated arm holds a fold twice"):
        combine_comparisons(parts + [part("federated", 1, "S02", 0.7)], specs)
    with pytest.raises(ValueError, match=r"differ in \(rounds, n_test\)"):
        combine_comparisons(parts[:3] + [{**parts[3], "rounds": 6}], specs)


def test_gain_by_size_tests_over_subjects():
    from scipy import stats

    def site(n, gains):
        return {"n_subjects": n, "subjects": {f"S{i:02d}": {"federated": 0.6 + g, "local": 0.6}
                                              for i, g in enumerate(gains)}}

    sites = {"big": site(50, [0.0, 0.01, -0.01, 0.02]), "mid": site(20, [0.03, 0.0, 0.02]),
             "small": site(6, [0.2, 0.1, 0.15]), "tiny": site(4, [0.04, 0.3])}
    out = gain_by_size(sites)
    sizes = [50] * 4 + [20] * 3 + [6] * 3 + [4] * 2
    gains = [0.0, 0.01, -0.01, 0.02, 0.03, 0.0, 0.02, 0.2, 0.1, 0.15, 0.04, 0.3]
    ref = stats.spearmanr(sizes, gains)
    assert out["spearman"]["n"] == 12
    assert out["spearman"]["rho"] == pytest.approx(ref.statistic) and out["spearman"]["rho"] < 0
    assert out["spearman"]["pvalue"] == pytest.approx(ref.pvalue)
    assert out["median_size"] == 13  # sites up to 13 subjects are the small ones
    assert out["small"]["sites"] == ["small", "tiny"] and out["small"]["n"] == 5
    assert out["small"]["mean_gain"] == pytest.approx(np.mean([0.2, 0.1, 0.15, 0.04, 0.3]))
    assert out["large"]["sites"] == ["big", "mid"] and out["large"]["n"] == 7
    assert out["mannwhitney_p"] == pytest.approx(stats.mannwhitneyu(
        [0.2, 0.1, 0.15, 0.04, 0.3], [0.0, 0.01, -0.01, 0.02, 0.03, 0.0, 0.02],
        alternative="greater").pvalue)
    assert out["mannwhitney_p"] < 0.05
    # the pattern reversed: the small sites lose, and the one-sided test no longer holds
    flipped = {k: {**v, "subjects": {s: {"federated": 1.2 - d["federated"], "local": 0.6}
                                     for s, d in v["subjects"].items()}}
               for k, v in sites.items()}
    rev = gain_by_size(flipped)
    assert rev["spearman"]["rho"] == pytest.approx(-out["spearman"]["rho"])
    assert rev["mannwhitney_p"] > 0.9
