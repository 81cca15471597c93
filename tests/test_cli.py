"""The `bcikit` command: help, one-line errors with exit status 2, info, datasets, simulate, run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bcikit.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_is_fast_and_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("run", "info", "datasets", "simulate"):
        assert cmd in out
    # `import bcikit` and `bcikit --help` must not pull in torch, mne or braindecode
    code = ("import sys, bcikit, bcikit.cli, bcikit.config; "
            "print(sorted(m for m in ('torch','mne','braindecode') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("args, expected", [
    (["run", "pipelines/nope.toml"], "pipelines/nope.toml' does not exist"),
    (["run", "pipelines/csp_lda.toml", "--set", "train.epochs=0"],
     "[train] epochs must be an integer >= 1; got 0"),
    (["run", "pipelines/csp_lda.toml", "--set", "evaluate.protocol=random"],
     "[evaluate] protocol must be one of"),
    (["run", "pipelines/csp_lda.toml", "--set", "data.classes=['left_hand','jump']"],
     "[data] classes ['jump'] are not in the data"),
    (["info", "does/not/exist.edf"], "does/not/exist.edf"),
])
def test_bad_input_is_one_line_and_exit_2(args, expected, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    args = args + (["--out", str(tmp_path / "run")] if args[0] == "run" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_datasets_lists_cards(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "eegmmidb" in out and "bnci2014_001" in out.lower()


def test_simulate_then_info(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["simulate", str(out), "--format", "edf", "--set", "n_subjects=1",
                 "--set", "n_sessions=1", "--set", "n_runs=1", "--set", "n_trials_per_class=5"]) == 0
    files = sorted(out.rglob("*.edf"))
    assert len(files) == 1
    capsys.readouterr()
    assert main(["info", str(files[0])]) == 0
    info = capsys.readouterr().out
    assert "eeg" in info.lower() and "left_hand" in info and "Hz" in info


def test_main_job_runs_through_the_command(tmp_path):
    """`bcikit run pipelines/shallow_fbcsp.toml` (smaller simulator, fewer epochs) in a subprocess."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "bcikit.cli", "run", "pipelines/shallow_fbcsp.toml",
           "--out", str(run_dir), "--device", "cpu", "--set", "data.simulate.n_subjects=2",
           "--set", "train.epochs=12"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"run folder: {run_dir}" in res.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model"] == "ShallowFBCSPNet" and metrics["n_params"] > 10_000
    assert metrics["summary"]["accuracy"]["mean"] > metrics["chance_threshold_p05"]
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("split,epoch") and len(history) > 2
    assert (run_dir / "figures" / "learning_curves.png").exists()
    assert (run_dir / "checkpoints").is_dir()
