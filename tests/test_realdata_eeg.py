"""Real recordings (../shared/realdata, see PROVENANCE.md): the S001 PhysioNet card gives the
documented trial counts and decodes near the documented CSP+LDA accuracies; ``describe`` types
the clinical iEEG samples; CR/LF damage of a real EDF is recognised."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

mne = pytest.importorskip("mne")

from bcikit.io import describe, load_card, read_raw  # noqa: E402
from bcikit.utils import BcikitWarning  # noqa: E402

pytestmark = pytest.mark.realdata
CARD = Path(__file__).resolve().parents[1] / "datasets" / "realdata_eegmmidb_S001.toml"


@pytest.fixture(scope="module")
def s001_card(realdata, tmp_path_factory):
    card = load_card(CARD)
    folder = realdata / "eegmmidb_S001"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return card, folder


@pytest.mark.parametrize("task, counts", [
    ("imagery_lr", {"left_hand": 23, "right_hand": 22}),
    ("imagery_ff", {"hands": 21, "feet": 24}),
    ("execution_lr", {"left_hand": 23, "right_hand": 22}),
])
def test_s001_card_trial_counts(s001_card, task, counts):
    card, folder = s001_card
    trials = card.load(task=task, root=folder, cache=False)
    assert Counter(trials.label_names.tolist()) == counts
    assert trials.X.shape == (45, 64, 320)  # 0.5-2.5 s at 160 Hz
    assert trials.sfreq == 160.0
    assert trials.info.get_channel_types() == ["eeg"] * 64
    assert trials.ch_names[:7] == ["FC5", "FC3", "FC1", "FCz", "FC2", "FC4", "FC6"]
    assert "Iz" in trials.ch_names and "AFz" in trials.ch_names
    assert trials.info.get_montage() is not None
    assert sorted(set(trials.meta["run"])) == sorted(str(r) for r in card.tasks[task].runs)
    peak = float(np.abs(trials.X).max())
    assert 1e-4 < peak < 2e-3  # volts: PROVENANCE reports peaks of about 600 µV


def _csp_lda_accuracy(card, folder, task) -> float:
    """7-30 Hz, 0.5-2.5 s, CSP(4)+LDA, stratified 5-fold (seed 0), as in PROVENANCE.

    Trials are cut wider (-1..4 s), filtered, then cropped to 0.5-2.5 s, so the filter's edges
    fall outside the analysed window.
    """
    from threadpoolctl import threadpool_limits

    wide = card.load(task=task, root=folder, cache=False, tmin=-1.0, tmax=4.0)
    X = mne.filter.filter_data(wide.X.astype(np.float64), wide.sfreq, 7.0, 30.0,
                               verbose="error")
    start = int(round(1.5 * wide.sfreq))
    X = X[:, :, start:start + 320]
    try:
        from bcikit.data.protocols import apply_split, get_protocol
        from bcikit.models.baselines import make_csp_lda
    except ImportError:  # the project's baselines are not there yet: the same thing by hand
        from mne.decoding import CSP
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
        from sklearn.model_selection import StratifiedKFold, cross_val_score
        from sklearn.pipeline import make_pipeline

        with threadpool_limits(1):
            return float(cross_val_score(
                make_pipeline(CSP(4, log=True), LinearDiscriminantAnalysis()), X, wide.y,
                cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean())
    trials = wide.with_data(X)
    scores = []
    with threadpool_limits(1):
        for split in get_protocol("kfold", k=5, seed=0, valid_frac=0.0).split(trials):
            train, valid, test = apply_split(trials, split)
            assert len(valid) == 0
            model = make_csp_lda(4).fit(train.X.astype(np.float64), train.y)
            scores.append(model.score(test.X.astype(np.float64), test.y))
    return float(np.mean(scores))


def test_s001_csp_lda_near_reference(s001_card):
    card, folder = s001_card
    # PROVENANCE: 0.71 (L/R imagery) and 0.98 (fists/feet imagery), chance 0.5. Our windows
    # hold exactly 320 samples (PROVENANCE's MNE epochs had 321); we measure 0.67 and 0.98.
    assert _csp_lda_accuracy(card, folder, "imagery_lr") >= 0.6
    assert _csp_lda_accuracy(card, folder, "imagery_ff") >= 0.9


def test_describe_types_clinical_ieeg(realdata):
    folder = realdata / "mne_misc_ieeg"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    # the sidecar sample_seeg_electrodes.tsv belongs to another implant: read_ieeg warns
    with pytest.warns(BcikitWarning):
        seeg = describe(folder / "sample_seeg.edf")
    assert "98 channels, 1000 Hz, 20.000 s" in seeg
    assert "seeg (" in seeg and "L'1, L'2" in seeg
    assert "test annotation: 2" in seeg and "test mark: 1" in seeg
    ecog = describe(folder / "sample_ecog.edf")
    assert "78 channels" in ecog and "ecog (" in ecog and "C1, C2, C3" in ecog
    assert "eeg sz start: 1" in ecog


def test_real_edf_with_crlf_damage(realdata, tmp_path):
    good = realdata / "eegmmidb_S001" / "S001R04.edf"
    if not good.is_file():
        pytest.skip(f"{good} is absent")
    content = good.read_bytes()
    assert len(content) == 256 * (64 + 1 + 1) + 125 * 10320 * 2  # the header's size
    damaged = tmp_path / "S001R04.edf"
    damaged.write_bytes(content.replace(b"\n", b"\r\n"))  # what the committed copies had
    with pytest.raises(ValueError, match=r"S001R04\.edf.*CR/LF \(text-mode\)"):
        read_raw(damaged)
    raw = read_raw(good, verbose="error")
    assert len(raw.ch_names) == 64 and raw.n_times == 20000


def test_load_dataset_by_card_name(s001_card, monkeypatch):
    from bcikit.io import load_dataset

    _, folder = s001_card
    monkeypatch.setenv("BCIKIT_REALDATA", str(folder.parent))
    trials = load_dataset("realdata_eegmmidb_S001", task="imagery_ff", subjects=1, cache=False)
    assert len(trials) == 45 and trials.classes == ["hands", "feet"]
    assert set(trials.meta["dataset"]) == {"eegmmidb_S001"}
