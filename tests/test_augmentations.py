"""Augmented views (bcikit.data.augmentations): values against references and known signals."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from bcikit.data import augmentations as aug
from bcikit.simulate import BNCI2014_001_CHANNELS

torch.set_num_threads(1)

#: Zhou2016 channel order (MOABB).
ZHOU2016 = ["Fp1", "Fp2", "FC3", "FCz", "FC4", "C3", "Cz", "C4", "CP3", "CPz", "CP4", "O1", "Oz",
            "O2"]


def _batch(rng, b=6, c=5, t=300, dtype=torch.float32):
    return torch.as_tensor(rng.standard_normal((b, c, t)), dtype=dtype)


def _inst_freq_median(x: np.ndarray, sfreq: float) -> float:
    """Median instantaneous frequency over the central 80 % of samples (analytic phase)."""
    phase = np.unwrap(np.angle(scipy.signal.hilbert(x)))
    f = np.diff(phase) * sfreq / (2 * np.pi)
    n = len(f)
    return float(np.median(f[int(0.1 * n):int(0.9 * n)]))


# ------------------------------------------------------------------------------------ time domain
def test_flip_and_scale_values(rng):
    X = _batch(rng)
    assert torch.equal(aug.flip(X), -X)
    assert torch.equal(aug.scale(X), X * 0.8)
    assert torch.equal(aug.scale(X, 1.5), X * 1.5)
    Xv, yv = aug.Flip()(X, torch.zeros(6, dtype=torch.long))
    assert torch.equal(Xv, -X) and torch.equal(yv, torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="factor"):
        aug.scale(X, 0)
    with pytest.raises(ValueError, match="batch, n_chans, n_times"):
        aug.flip(X[0])


def test_noise_is_uniform_scaled_by_trial_std(rng):
    X = _batch(rng, b=4, c=8, t=4000, dtype=torch.float64)
    X = X * torch.tensor([1.0, 3.0, 0.5, 10.0], dtype=torch.float64)[:, None, None]
    g = torch.Generator().manual_seed(0)
    out = aug.noise(X, generator=g)
    std = X.std(dim=(1, 2), correction=0)
    u = (out - X) / std[:, None, None]  # should be U(-0.5, 0.5), independent per sample
    assert float(u.min()) >= -0.5 and float(u.max()) <= 0.5
    assert abs(float(u.mean())) < 0.01
    assert float(u.std()) == pytest.approx(1 / np.sqrt(12), rel=0.02)
    # the scale parameter is honoured (the official code overwrote it)
    out2 = aug.noise(X, 0.25, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out2 - X, 0.25 * (out - X))
    assert torch.equal(aug.noise(X, 0.0), X)
    # seeded wrapper: reproducible, and not the identity
    a = aug.Noise(seed=3).transform(X)
    b = aug.Noise(seed=3).transform(X)
    assert torch.equal(a, b) and not torch.equal(a, X)


def test_noise_keeps_float32(rng):
    X = _batch(rng)
    assert aug.noise(X).dtype == torch.float32


# ------------------------------------------------------------------------------- frequency domain
@pytest.mark.parametrize("sfreq, n_times", [(250.0, 1000), (512.0, 2560)])
def test_fshift_moves_a_sine_by_0_1_hz(sfreq, n_times):
    t = np.arange(n_times) / sfreq
    X = torch.tensor(np.sin(2 * np.pi * 10 * t + 0.3), dtype=torch.float64)[None, None]
    out = aug.fshift(X, sfreq)
    assert out.shape == X.shape and out.dtype == X.dtype
    assert _inst_freq_median(out[0, 0].numpy(), sfreq) == pytest.approx(10.1, abs=0.01)
    quirk = aug.fshift(X, sfreq, reference_quirks=True)
    expected = 10 + 0.1 * sfreq / 250  # the official 1/250 s step: 10.2048 Hz at 512 Hz
    assert _inst_freq_median(quirk[0, 0].numpy(), sfreq) == pytest.approx(expected, abs=0.01)
    if sfreq == 512.0:
        assert _inst_freq_median(quirk[0, 0].numpy(), sfreq) == pytest.approx(10.205, abs=0.01)


def test_fshift_matches_scipy_hilbert_reference(rng):
    X = _batch(rng, b=3, c=4, t=1000, dtype=torch.float64)
    sfreq, df = 250.0, 0.1
    n_fft = 1024
    analytic = scipy.signal.hilbert(np.pad(X.numpy(), ((0, 0), (0, 0), (0, n_fft - 1000))),
                                    axis=-1)
    ramp = np.exp(2j * np.pi * df * np.arange(n_fft) / sfreq)
    expected = (analytic * ramp)[..., :1000].real
    np.testing.assert_allclose(aug.fshift(X, sfreq, df).numpy(), expected, atol=1e-10)
    # no shift gives the signal back; a power-of-two length is not padded further
    np.testing.assert_allclose(aug.fshift(X, sfreq, 0.0).numpy(), X.numpy(), atol=1e-10)
    X2 = X[..., :512]
    expected2 = (scipy.signal.hilbert(X2.numpy(), axis=-1) * ramp[:512]).real
    np.testing.assert_allclose(aug.fshift(X2, sfreq, df).numpy(), expected2, atol=1e-10)
    assert aug.fshift(X.float(), sfreq).dtype == torch.float32


def test_fsurr_keeps_amplitude_and_cross_spectra(rng):
    X = _batch(rng, b=4, c=3, t=257, dtype=torch.float64)  # odd length
    for n_times in (257, 256):
        Xn = X[..., :n_times]
        out = aug.fsurr(Xn, 0.5, generator=torch.Generator().manual_seed(1))
        assert out.shape == Xn.shape and not torch.allclose(out, Xn)
        F_in, F_out = np.fft.fft(Xn.numpy()), np.fft.fft(out.numpy())
        np.testing.assert_allclose(np.abs(F_out), np.abs(F_in), rtol=1e-9, atol=1e-9)
        # same phase noise on every channel: cross-spectra between channels unchanged
        cross_in = F_in[:, 0] * np.conj(F_in[:, 1])
        cross_out = F_out[:, 0] * np.conj(F_out[:, 1])
        np.testing.assert_allclose(cross_out, cross_in, rtol=1e-8, atol=1e-8)
        # added phase of the positive frequencies lies in [0, magnitude * 2 pi) = [0, pi)
        k = np.arange(1, (n_times - 1) // 2 + 1)
        dphi = np.angle(F_out[:, 0, k] / F_in[:, 0, k])
        assert dphi.min() > -1e-9 and dphi.max() < np.pi + 1e-9
        assert np.abs(np.angle(F_out[:, 0, 0] / F_in[:, 0, 0])).max() < 1e-9  # DC kept
    np.testing.assert_allclose(aug.fsurr(X, 0.0).numpy(), X.numpy(), atol=1e-12)
    a = aug.FTSurrogate(seed=5).transform(X)
    assert torch.equal(a, aug.FTSurrogate(seed=5).transform(X))


# ------------------------------------------------------------------------------------------ space
def test_mirror_pairs_bnci2014_001_equals_official_index_lists():
    pairs = aug.mirror_pairs(list(BNCI2014_001_CHANNELS))
    # the hand-written lists of the official code for BNCI2014_001
    left = [1, 2, 6, 7, 8, 13, 14, 18]
    right = [5, 4, 12, 11, 10, 17, 16, 20]
    assert pairs == sorted(zip(left, right))
    names = list(BNCI2014_001_CHANNELS)
    assert {(names[i], names[j]) for i, j in pairs} >= {("C3", "C4"), ("FC1", "FC2"),
                                                         ("CP3", "CP4"), ("P1", "P2")}
    lft, mid, rgt = aug.hemisphere_indices(names)
    assert [names[i] for i in mid] == ["Fz", "FCz", "Cz", "CPz", "Pz", "POz"]
    assert aug.mirror_pairs(ZHOU2016) == [(0, 1), (2, 4), (5, 7), (8, 10), (11, 13)]


def test_mirror_pairs_generic_names():
    names = ["FP1", "Fp2", "AF3", "AF4", "F7", "F8", "FC5", "FC6", "T7", "T8", "P9", "P10",
             "FFC3h", "FFC4h", "O1", "O2", "Oz", "T3", "T4"]
    got = {(names[i], names[j]) for i, j in aug.mirror_pairs(names)}
    assert got == {("FP1", "Fp2"), ("AF3", "AF4"), ("F7", "F8"), ("FC5", "FC6"), ("T7", "T8"),
                   ("P9", "P10"), ("FFC3h", "FFC4h"), ("O1", "O2"), ("T3", "T4")}


@pytest.mark.parametrize("names, bad", [
    (["C3", "Cz", "FC1", "FC2"], "C3"),      # left without its right partner
    (["Cz", "C4", "C3", "CP2"], "CP2"),      # right without its left partner
    (["C3", "C4", "EOG"], "EOG"),            # not a 10-20 name
    (["C3", "C4", "c3"], "c3"),              # duplicate
])
def test_mirror_pairs_raise_naming_the_channel(names, bad):
    with pytest.raises(ValueError, match=f"'{bad}'"):
        aug.mirror_pairs(names)


def test_cr_twice_is_identity_and_maps_c3_to_c4(rng):
    names = list(BNCI2014_001_CHANNELS)
    X = _batch(rng, b=3, c=len(names), t=50)
    view = aug.ChannelReflection(names, ["left_hand", "right_hand"])
    y = torch.tensor([0, 1, 1])
    Xr, yr = view(X, y)
    assert torch.equal(yr, torch.tensor([1, 0, 0]))
    assert torch.equal(Xr[:, names.index("C4")], X[:, names.index("C3")])
    assert torch.equal(Xr[:, names.index("C3")], X[:, names.index("C4")])
    assert torch.equal(Xr[:, names.index("Cz")], X[:, names.index("Cz")])
    Xrr, yrr = view(Xr, yr)
    assert torch.equal(Xrr, X) and torch.equal(yrr, y)
    assert not torch.equal(Xr, X)


def test_mirror_label_map():
    assert aug.mirror_label_map(["left_hand", "right_hand"]) == [1, 0]
    assert aug.mirror_label_map(["left_hand", "right_hand", "feet", "tongue"]) == [1, 0, 2, 3]
    assert aug.mirror_label_map(["Right", "rest", "Left"]) == [2, 1, 0]
    with pytest.raises(ValueError, match=r"BNCI2014_002.*right_hand.*feet"):
        aug.mirror_label_map(["right_hand", "feet"], dataset="BNCI2014_002")
    with pytest.raises(ValueError, match="'A'"):
        aug.mirror_label_map(["A", "B"])


def test_cr_on_bnci2014_002_classes_raises():
    with pytest.raises(ValueError, match="right_hand"):
        aug.make_view("cr", ch_names=["C3", "Cz", "C4"], classes=["right_hand", "feet"],
                      dataset="BNCI2014_002")


def test_hs_keeps_row_order_and_swaps_one_hemisphere(rng):
    names = list(BNCI2014_001_CHANNELS)
    left, mid, right = aug.hemisphere_indices(names)
    X = _batch(rng, b=10, c=len(names), t=20, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 1])
    out = aug.hs(X, y, aug.mirror_pairs(names), generator=torch.Generator().manual_seed(0))
    for i in range(10):
        kept = mid + (right if y[i] == 0 else left)
        swapped = left if y[i] == 0 else right
        assert torch.equal(out[i, kept], X[i, kept])  # row i is still trial i
        donors = [j for j in range(10) if torch.equal(X[j, swapped], out[i, swapped])]
        assert len(donors) == 1 and donors[0] != i and y[donors[0]] == y[i]
    # a class with a single trial is left unchanged; labels are kept by the wrapper
    y1 = torch.tensor([0, 1, 1])
    out1, yv = aug.HemisphereSwap(names, seed=0)(X[:3], y1)
    assert torch.equal(out1[0], X[0]) and torch.equal(yv, y1)
    with pytest.raises(ValueError, match="two classes"):
        aug.hs(X[:3], torch.tensor([0, 2, 1]), aug.mirror_pairs(names))


def test_make_view_registry_and_errors():
    assert set(aug.VIEWS) == {"flip", "scale", "noise", "fshift", "fsurr", "cr", "hs"}
    names = ["C3", "Cz", "C4"]
    for name in aug.VIEWS:
        view = aug.make_view(name, sfreq=100.0, ch_names=names, classes=["left_hand",
                                                                          "right_hand"])
        assert isinstance(view, aug.VIEWS[name]) and view.name == name
    assert aug.make_view("fshift", sfreq=512.0, reference_quirks=True).reference_quirks
    assert aug.make_view("scale", factor=0.5).factor == 0.5
    with pytest.raises(ValueError, match="sfreq"):
        aug.make_view("fshift")
    with pytest.raises(ValueError, match="channel names"):
        aug.make_view("hs")
    with pytest.raises(ValueError, match="class names"):
        aug.make_view("cr", ch_names=names)
    with pytest.raises(ValueError, match="'name'"):
        aug.make_view("mixup")
    with pytest.raises(ValueError, match="'magnitude'"):
        aug.make_view("flip", magnitude=0.1)
