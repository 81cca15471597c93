"""sEEG/ECoG reading, electrode tables, re-referencing and high-gamma (bcikit.io.ieeg)."""

from __future__ import annotations

from collections import Counter

import mne
import numpy as np
import pandas as pd
import pytest

from bcikit.io.ieeg import (
    bipolar_reference,
    find_electrodes_file,
    high_gamma,
    is_ieeg_path,
    parse_contact_name,
    read_electrodes,
    read_ieeg,
    regions,
    shaft_car,
)
from bcikit.utils import BcikitWarning

SFREQ = 512.0
SHAFTS = {"LA": 6, "B'": 5, "C": 4}
CONTACTS = [f"{s}{i}" for s, n in SHAFTS.items() for i in range(1, n + 1)]


def _synthetic_raw(rng, *, names=None, extra=("ECG1", "DC01"), seconds=8.0):
    names = list(names or CONTACTS) + list(extra)
    n = int(seconds * SFREQ)
    # shaft-correlated background plus independent noise, ~50 uV
    data = rng.standard_normal((len(names), n)) * 20e-6
    for shaft in SHAFTS:
        rows = [i for i, ch in enumerate(names)
                if ch.startswith(shaft) and ch[len(shaft):].isdigit()]
        data[rows] += rng.standard_normal(n) * 30e-6
    info = mne.create_info(names, SFREQ, "eeg")
    return mne.io.RawArray(data, info, verbose="error")


def _positions(rng):
    pos = {}
    for k, (shaft, n) in enumerate(SHAFTS.items()):
        start = np.array([20.0 + 10 * k, -30.0, 5.0 * k])
        step = rng.normal(size=3)
        step = 3.5 * step / np.linalg.norm(step)
        for i in range(1, n + 1):
            pos[f"{shaft}{i}"] = start + (i - 1) * step
    return pos


def _write_electrodes(path, pos, *, extra_cols=None):
    rows = []
    for name, xyz in pos.items():
        row = {"name": name, "x": xyz[0], "y": xyz[1], "z": xyz[2]}
        row.update((extra_cols or {}).get(name, {}))
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def _write_edf(path, raw):
    mne.export.export_raw(path, raw, fmt="edf", verbose="error")
    return path


# --------------------------------------------------------------------------- names and tables
@pytest.mark.parametrize("name, expected", [
    ("ROC1", ("ROC", 1)), ("L'1", ("L'", 1)), ("LA10", ("LA", 10)), ("A'12", ("A'", 12)),
    ("LACN 1", ("LACN", 1)), ("POL LA3", ("LA", 3)), ("EEG C12-Ref", ("C", 12)),
    ("DC01", ("DC", 1)), ("EKGL", ("EKGL", None)),
])
def test_parse_contact_name(name, expected):
    assert parse_contact_name(name) == expected


@pytest.mark.parametrize("name", ["B1-B2", "L'1-L'2", "ROC14 - ROC15"])
def test_parse_contact_name_refuses_bipolar(name):
    with pytest.raises(ValueError, match="bipolar"):
        parse_contact_name(name)


def test_read_electrodes_units_and_columns(tmp_path, rng):
    pos = _positions(rng)
    anat = {n: {"anatomy": "hippocampus" if n.startswith("LA") else "n/a"} for n in pos}
    mm = _write_electrodes(tmp_path / "a_electrodes.tsv", pos, extra_cols=anat)
    m = tmp_path / "b_electrodes.tsv"
    _write_electrodes(m, {k: v / 1000 for k, v in pos.items()})
    t_mm, t_m = read_electrodes(mm), read_electrodes(m)
    xyz = np.array(list(pos.values())) / 1000
    np.testing.assert_allclose(t_mm[["x", "y", "z"]].to_numpy(), xyz, rtol=1e-12)
    np.testing.assert_allclose(t_m[["x", "y", "z"]].to_numpy(), xyz, rtol=1e-12)
    assert t_mm.attrs["units"] == "mm" and t_m.attrs["units"] == "m"
    assert list(t_mm["shaft"]) == [parse_contact_name(n)[0] for n in pos]
    assert list(t_mm["contact"]) == [parse_contact_name(n)[1] for n in pos]
    assert t_mm["region"].tolist()[:6] == ["hippocampus"] * 6
    assert pd.isna(t_mm["region"].iloc[6])
    assert "anatomy" in t_mm.columns  # raw columns kept
    # an explicit unit overrides the guess; RAS columns are understood
    ras = tmp_path / "c_electrodes.tsv"
    pd.DataFrame({"name": list(pos), "R": xyz[:, 0] * 100, "A": xyz[:, 1] * 100,
                  "S": xyz[:, 2] * 100}).to_csv(ras, sep="\t", index=False)
    t_cm = read_electrodes(ras, units="cm")
    np.testing.assert_allclose(t_cm[["x", "y", "z"]].to_numpy(), xyz, rtol=1e-12)
    assert t_cm.attrs["coord_frame"] == "ras"
    with pytest.raises(ValueError, match="units"):
        read_electrodes(ras)  # |max| of a few cm: metres or millimetres cannot be told apart


def test_read_electrodes_bad_tables(tmp_path):
    bip = tmp_path / "bip_electrodes.tsv"
    pd.DataFrame({"name": ["B1-B2", "B2-B3"], "x": [1.0, 2], "y": [0.0, 0], "z": [0.0, 0]}).to_csv(
        bip, sep="\t", index=False)
    with pytest.raises(ValueError, match="bipolar"):
        read_electrodes(bip)
    noname = tmp_path / "x_electrodes.tsv"
    pd.DataFrame({"foo": ["A1"], "x": [0.01], "y": [0.0], "z": [0.0]}).to_csv(
        noname, sep="\t", index=False)
    with pytest.raises(ValueError, match="no name column"):
        read_electrodes(noname)
    with pytest.raises(FileNotFoundError, match="missing_electrodes.tsv"):
        read_electrodes(tmp_path / "missing_electrodes.tsv")


# --------------------------------------------------------------------------- read_ieeg
def test_read_ieeg_edf_with_electrodes(tmp_path, rng):
    raw0 = _synthetic_raw(rng)
    pos = _positions(rng)
    edf = _write_edf(tmp_path / "pat01.edf", raw0)
    assert not is_ieeg_path(edf)  # no token, no sidecar yet
    with pytest.raises(ValueError, match="ch_type='seeg'"):
        read_ieeg(edf)
    ecog = read_ieeg(edf, ch_type="ecog")
    assert Counter(ecog.get_channel_types()) == {"ecog": 15, "ecg": 1, "misc": 1}

    types = {n: {"type": "depth"} for n in pos}
    _write_electrodes(tmp_path / "pat01_electrodes.tsv", pos, extra_cols=types)
    assert is_ieeg_path(edf)
    raw = read_ieeg(edf)
    ct = dict(zip(raw.ch_names, raw.get_channel_types()))
    assert all(ct[c] == "seeg" for c in CONTACTS)
    assert ct["ECG1"] == "ecg" and ct["DC01"] == "misc"
    got = raw.get_montage().get_positions()["ch_pos"]
    assert set(got) == set(CONTACTS)
    for name, xyz in pos.items():
        np.testing.assert_allclose(got[name], xyz / 1000, atol=1e-9)
    # the EDF round trip keeps the signals (16-bit quantisation)
    err = np.abs(raw.get_data() - raw0.get_data()).max()
    assert err < 1e-3 * np.abs(raw0.get_data()).max()

    # an explicit table that names none of the channels is an error
    other = _write_electrodes(tmp_path / "other.tsv", {"Z1": np.array([30.0, 1, 1])})
    with pytest.raises(ValueError, match="names none"):
        read_ieeg(edf, electrodes=other)


def test_read_ieeg_bids_channels_tsv(tmp_path, rng):
    raw0 = _synthetic_raw(rng, extra=("EKG", "TRIG"))
    folder = tmp_path / "sub-01" / "ses-1" / "ieeg"
    folder.mkdir(parents=True)
    edf = _write_edf(folder / "sub-01_ses-1_task-rest_ieeg.edf", raw0)
    ch = pd.DataFrame({"name": raw0.ch_names,
                       "type": ["ECOG"] * 15 + ["ECG", "TRIG"],
                       "units": "V", "status": ["good"] * 2 + ["bad"] + ["good"] * 14})
    ch.to_csv(folder / "sub-01_ses-1_task-rest_channels.tsv", sep="\t", index=False)
    pos = _positions(rng)
    # BIDS electrodes in the session folder (inheritance); another subject's table is ignored
    _write_electrodes(folder.parent / "sub-01_ses-1_electrodes.tsv", pos)
    _write_electrodes(folder.parent / "sub-02_ses-1_electrodes.tsv", {"Q1": np.ones(3) * 40})
    assert find_electrodes_file(edf).name == "sub-01_ses-1_electrodes.tsv"
    raw = read_ieeg(edf)
    assert Counter(raw.get_channel_types()) == {"ecog": 15, "ecg": 1, "stim": 1}
    assert raw.info["bads"] == [raw0.ch_names[2]]
    assert len(raw.get_montage().get_positions()["ch_pos"]) == 15


# --------------------------------------------------------------------------- re-referencing
@pytest.fixture
def seeg_raw(rng):
    raw = _synthetic_raw(rng, seconds=4.0)
    raw.set_channel_types({c: "seeg" for c in CONTACTS} | {"ECG1": "ecg", "DC01": "misc"},
                          verbose="error")
    return raw


def test_bipolar_matches_mne(seeg_raw):
    raw = seeg_raw.copy()
    raw.info["bads"] = ["LA3"]
    out = bipolar_reference(raw)
    anodes = ["LA1", "LA4", "LA5", "B'1", "B'2", "B'3", "B'4", "C1", "C2", "C3"]
    cathodes = ["LA2", "LA5", "LA6", "B'2", "B'3", "B'4", "B'5", "C2", "C3", "C4"]
    names = [f"{a}-{c}" for a, c in zip(anodes, cathodes)]
    assert out.ch_names == names + ["ECG1", "DC01"]  # the bad LA3 breaks the chain: no LA2-LA4
    assert set(out.get_channel_types(picks=names)) == {"seeg"}
    ref = mne.set_bipolar_reference(seeg_raw.copy(), anodes, cathodes, verbose="error")
    np.testing.assert_array_equal(out.get_data(picks=names), ref.get_data(picks=names))
    np.testing.assert_array_equal(out.get_data(picks=["LA4-LA5"])[0],
                                  raw.get_data(picks=["LA4"])[0] - raw.get_data(picks=["LA5"])[0])
    np.testing.assert_array_equal(out.get_data(picks=["ECG1"]), raw.get_data(picks=["ECG1"]))
    # bridging the gap is explicit
    bridged = bipolar_reference(raw, max_gap=2)
    assert "LA2-LA4" in bridged.ch_names
    with pytest.raises(ValueError, match="already a bipolar"):
        bipolar_reference(out)


def test_shaft_car(seeg_raw):
    raw = seeg_raw.copy()
    raw.info["bads"] = ["B'2"]
    out = shaft_car(raw)
    x, y = raw.get_data(), out.get_data()
    idx = {c: i for i, c in enumerate(raw.ch_names)}
    for shaft, n in SHAFTS.items():
        members = [f"{shaft}{i}" for i in range(1, n + 1)]
        goods = [c for c in members if c not in raw.info["bads"]]
        rows = [idx[c] for c in goods]
        np.testing.assert_allclose(y[rows].mean(axis=0), 0.0, atol=1e-18)
        mean = x[rows].mean(axis=0)
        for c in members:
            np.testing.assert_allclose(y[idx[c]], x[idx[c]] - mean, rtol=1e-12, atol=1e-18)
    np.testing.assert_array_equal(y[idx["ECG1"]], x[idx["ECG1"]])
    # the shaft-shared background is removed: what is left of two contacts is their independent
    # noise minus its shaft mean, correlated -1/(n - 1) for n = 4 equal-variance contacts
    r_before = np.corrcoef(x[idx["C1"]], x[idx["C2"]])[0, 1]
    r_after = np.corrcoef(y[idx["C1"]], y[idx["C2"]])[0, 1]
    assert r_before > 0.5 and abs(r_after - (-1 / 3)) < 0.1
    with pytest.warns(BcikitWarning, match="fewer than two good"):
        raw.info["bads"] = ["C1", "C2", "C3"]
        shaft_car(raw)


def test_regions_from_table(tmp_path, rng):
    pos = _positions(rng)
    region = {n: {"region": "STG" if n.startswith("B'") else ("vSMC" if n == "C1" else "n/a")}
              for n in pos}
    path = _write_electrodes(tmp_path / "r_electrodes.tsv", pos, extra_cols=region)
    got = regions(path)
    assert got["STG"] == [f"B'{i}" for i in range(1, 6)]
    assert got["vSMC"] == ["C1"]
    assert len(got["unknown"]) == 6 + 3


# --------------------------------------------------------------------------- high gamma
def _modulated(rng, sfreq=1000.0, seconds=10.0, carrier=110.0):
    t = np.arange(int(seconds * sfreq)) / sfreq
    slow = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (0.3, 0.7, 1.3, 2.1))
    mod = 1.0 + 0.2 * slow  # stays positive
    x = mod * np.sin(2 * np.pi * carrier * t) + 0.2 * rng.standard_normal(t.size)
    return x, mod, t


def test_high_gamma_recovers_modulation(rng):
    sfreq = 1000.0
    x, mod, t = _modulated(rng, sfreq)
    inner = (t > 0.5) & (t < t[-1] - 0.5)
    for n_bands in (1, 8):
        env = high_gamma(x[None], sfreq=sfreq, n_bands=n_bands)
        assert env.shape == (1, x.size)
        r = np.corrcoef(env[0, inner], mod[inner])[0, 1]
        assert r > 0.9, (n_bands, r)
    # an out-of-band rhythm of the same amplitude gives (almost) nothing
    alpha = np.sin(2 * np.pi * 30.0 * t)
    hg_alpha = high_gamma(alpha, sfreq=sfreq)
    hg_carrier = high_gamma(np.sin(2 * np.pi * 110.0 * t), sfreq=sfreq, n_bands=1)
    assert hg_alpha[inner].mean() < 0.01 * hg_carrier[inner].mean()
    np.testing.assert_allclose(hg_carrier[inner], 1.0, atol=0.05)  # unit sine -> envelope 1
    # resampling and dtype
    down = high_gamma(x.astype(np.float32), sfreq=sfreq, out_sfreq=100.0)
    assert down.dtype == np.float32 and down.shape == (1000,)


def test_high_gamma_raw_equals_array(rng):
    x, _, _ = _modulated(rng, seconds=3.0)
    info = mne.create_info(["A1", "A2", "ECG"], 1000.0, ["seeg", "seeg", "ecg"])
    data = np.vstack([x, x[::-1], x * 2]) * 1e-5
    raw = mne.io.RawArray(data, info, verbose="error")
    out = high_gamma(raw, notch=60.0)
    np.testing.assert_allclose(out.get_data()[:2], high_gamma(data[:2], sfreq=1000.0, notch=60.0),
                               rtol=1e-10, atol=1e-20)
    np.testing.assert_array_equal(out.get_data()[2], data[2])  # ECG untouched


def test_high_gamma_needs_sampling_rate(rng):
    with pytest.raises(ValueError, match="sampled at 250 Hz"):
        high_gamma(rng.standard_normal((2, 1000)), sfreq=250.0)
    with pytest.raises(ValueError, match="sfreq"):
        high_gamma(rng.standard_normal(1000))


# --------------------------------------------------------------------------- real recordings
@pytest.mark.realdata
def test_realdata_sample_seeg(realdata):
    folder = realdata / "mne_misc_ieeg"
    edf = folder / "sample_seeg.edf"
    assert is_ieeg_path(edf)
    # The sidecar sample_seeg_electrodes.tsv is of another implant (LACN 1...; the EDF has L'1...):
    # a found table that matches nothing is ignored with a warning, a given one is an error.
    with pytest.warns(BcikitWarning, match="names none"):
        raw = read_ieeg(edf)
    assert len(raw.ch_names) == 98
    assert Counter(raw.get_channel_types()) == {"seeg": 88, "misc": 8, "ecg": 2}  # DC01-08, EKG1-2
    with pytest.raises(ValueError, match="names none"):
        read_ieeg(edf, electrodes=folder / "sample_seeg_electrodes.tsv")
    table = read_electrodes(folder / "sample_seeg_electrodes.tsv")
    assert len(table) == 127 and table.attrs["units"] == "mm"
    assert table["shaft"].nunique() == 15 and table.loc[0, "x"] == pytest.approx(-8.704027e-3)
    bip = bipolar_reference(read_ieeg(edf, electrodes=False))
    # 6 shafts (L' 14, N' 12, F' 14, O' 16, G' 16, X' 16 contacts) -> 88 - 6 derivations
    assert len(mne.pick_types(bip.info, seeg=True)) == 82


@pytest.mark.realdata
def test_realdata_sample_ecog(realdata):
    folder = realdata / "mne_misc_ieeg"
    raw = read_ieeg(folder / "sample_ecog.edf")
    assert len(raw.ch_names) == 78
    assert Counter(raw.get_channel_types()) == {"ecog": 76, "ecg": 2}  # EKGL, EKGR
    table = pd.read_csv(folder / "sample_ecog_electrodes.tsv", sep="\t")
    pos = raw.get_montage().get_positions()["ch_pos"]
    for _, row in table.iterrows():  # the tsv is in metres already
        np.testing.assert_allclose(pos[row["name"]], row[["x", "y", "z"]].to_numpy(float),
                                   atol=1e-9)
    assert np.isnan(pos["BTM1"]).all()  # strips are not in the table
    hg = high_gamma(raw.copy().crop(0, 4), notch=60.0, out_sfreq=100.0)
    assert hg.info["sfreq"] == 100.0 and np.all(hg.get_data(picks="ecog") >= 0)


@pytest.mark.realdata
def test_realdata_ccep(realdata):
    folder = realdata / "ccep_seeg_ieeglab"
    fif = folder / "DERIVED_sub-01_ccep_100Hz_raw.fif"
    assert is_ieeg_path(fif)  # through the BIDS electrodes.tsv in its folder
    raw = read_ieeg(fif)
    assert raw.ch_names == [f"ROC{i}" for i in range(1, 16)]
    assert set(raw.get_channel_types()) == {"seeg"}
    stim = [d for d in raw.annotations.description if d.startswith("stim/")]
    assert len(stim) == 120 and len(set(stim)) == 10
    pos = raw.get_montage().get_positions()["ch_pos"]
    np.testing.assert_allclose(pos["ROC1"], [4.927709702e-3, -67.78510134e-3, 1.678152871e-3],
                               atol=1e-9)  # mm in the tsv (coordsystem.json) -> metres
    assert np.isnan(pos["ROC15"]).all()  # n/a in the table
    reg = regions(raw)
    assert reg["rh_G_oc-temp_med-Lingual"] == ["ROC1", "ROC2"]
    assert reg["Right_Cerebral_White_Matter"] == [f"ROC{i}" for i in range(3, 10)]
    assert reg["unknown"] == ["ROC14", "ROC15"]
    bip = bipolar_reference(raw)
    assert bip.ch_names == [f"ROC{i}-ROC{i + 1}" for i in range(1, 15)]
    np.testing.assert_array_equal(bip.get_data(picks="ROC7-ROC8")[0],
                                  raw.get_data(picks="ROC7")[0] - raw.get_data(picks="ROC8")[0])
    assert regions(bip)["rh_G_temporal_inf"] == ["ROC12-ROC13", "ROC13-ROC14"]  # anode's region
    with pytest.raises(ValueError, match="100 Hz"):
        high_gamma(raw)
    with pytest.raises(ValueError, match="MEF3"):
        read_ieeg(folder / "sub-01_ses-ieeg01_task-ccep_run-01_ieeg.mefd")


@pytest.mark.realdata
def test_realdata_scalp_eeg_is_not_ieeg(realdata):
    assert not is_ieeg_path(realdata / "eegmmidb_S001" / "S001R03.edf")


@pytest.mark.realdata
def test_realdata_ccep_trials(realdata):
    from bcikit.io.ieeg import load_ieeg_trials

    fif = realdata / "ccep_seeg_ieeglab" / "DERIVED_sub-01_ccep_100Hz_raw.fif"
    sites = [f"ROC{i}-ROC{i + 1}" for i in (1, 2, 3, 4, 6, 7, 8, 9, 11, 12)]
    trials = load_ieeg_trials(fif, event_map={f"stim/{s}/good": s for s in sites}, tmin=-0.2,
                              tmax=0.5, reference="bipolar", classes=sites,
                              baseline=(-0.2, -0.02), meta={"subject": "01", "dataset": "ccep"})
    assert trials.X.shape == (120, 14, 70) and trials.ch_names[0] == "ROC1-ROC2"
    assert np.bincount(trials.y).tolist() == [12] * 10
    # the evoked response (stimulation artefact included) dwarfs the baseline: PROVENANCE reports
    # ~17x (monopolar); we measure ~18x monopolar, ~24x bipolar
    evoked = np.abs(trials.X.mean(axis=0))
    assert evoked[:, 20:].mean() > 10 * evoked[:, :18].mean()
