"""The federated and local-only arms of the 9-site check run apart and join to the same result."""

import json

import pytest

from bcikit.federated.simulate import main


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_arms_apart_equal_arms_together(tmp_path):
    common = ["--size", "tiny", "--sites", "2", "--rounds", "1", "--trials-per-class", "4", "--n-test", "1",
              "--device", "cpu", "--seed", "1"]
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
    assert json.loads((tmp_path / "joined.json").read_text())["mean_gain"] == both["mean_gain"]
    with pytest.raises(ValueError, match="need a federated and a local part"):
        main(common + ["--combine", str(tmp_path / "fed.json"),
                       "--out", str(tmp_path / "bad.json")])
