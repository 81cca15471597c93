"""FLEEGNet (spec fleeg.md §2) and the FLEEG band-pass (§3)."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bcikit.models import available_models, get_model  # noqa: E402
from bcikit.models.fleeg import (REFERENCE_SITES, FLEEGNet, bandpass,  # noqa: E402
                                 fleeg_geometry, preprocess, solve_geometry)

torch.set_num_threads(1)

# spec §2 table: dataset, C, T, total, local
TABLE = [
    ("Lee2019_MI", 62, 1000, 305_077, 102_275),
    ("Shin2017A", 30, 2000, 272_527, 69_725),
    ("SHU", 32, 1000, 286_327, 83_525),
    ("BNCI2014_001", 22, 1000, 280_077, 77_275),
    ("Weibo2014", 60, 800, 291_277, 88_475),
    ("Cho2017", 64, 1536, 381_627, 178_825),
    ("GrosseWentrup2009", 128, 1750, 346_327, 143_525),
    ("Schirrmeister2017", 128, 2000, 359_077, 156_275),
    ("Kaya2018", 22, 200, 254_977, 52_175),
]
LENGTHS = {
    "Lee2019_MI": (330, 107, 32, 7), "Shin2017A": (398, 97, 30, 7), "SHU": (330, 107, 32, 7),
    "BNCI2014_001": (330, 107, 32, 7), "Weibo2014": (396, 129, 30, 7),
    "Cho2017": (378, 119, 32, 7), "GrosseWentrup2009": (435, 106, 32, 7),
    "Schirrmeister2017": (330, 103, 31, 7), "Kaya2018": (195, 95, 30, 7),
}
SHARED = {"block4.conv.weight", "head.conv.weight", "head.conv.bias"}


@pytest.mark.parametrize("dataset, n_chans, n_times, total, local", TABLE)
def test_reference_counts(dataset, n_chans, n_times, total, local):
    row = REFERENCE_SITES[dataset]
    model = FLEEGNet(n_chans, 2, n_times, row["sfreq"], stem_geometry="reference",
                     dataset=dataset)
    assert model.count_parameters("total") == total
    assert model.count_parameters("local") == local
    assert model.count_parameters("shared") == 202_802
    assert model.lengths == LENGTHS[dataset]
    assert (model.kernels, model.pools) == (row["kernels"], row["pools"])
    # 811 kB float32 per upload
    assert 4 * model.count_parameters("shared") == 811_208


def test_official_names_and_shared_keys():
    from bcikit.federated import shared_keys, split_state

    model = FLEEGNet(22, 2, 1000, 250.0, stem_geometry="reference", dataset="BCI2a_MI")
    assert set(model.shared_parameter_names()) == SHARED
    keys = shared_keys(model)
    assert set(keys) == SHARED
    assert not any("bn" in k for k in keys)
    shared, local = split_state(model)
    assert set(shared) == SHARED
    assert sum(v.numel() for v in shared.values()) == 202_802
    # every batch-norm tensor (parameters and buffers) is local
    assert {f"block{i}.bn.{n}" for i in range(1, 5)
            for n in ("weight", "bias", "running_mean", "running_var",
                      "num_batches_tracked")} <= set(local)


def test_solve_reproduces_five_rows():
    reproduced = []
    for dataset, row in REFERENCE_SITES.items():
        kernels, pools = solve_geometry(row["n_times"], row["sfreq"])
        if (kernels, pools) == (row["kernels"], row["pools"]):
            reproduced.append(dataset)
        # whatever it picks reaches the shared length within the L3 window
        lengths = fleeg_geometry(row["n_times"], row["sfreq"])[2]
        assert lengths[3] == 7 and 30 <= lengths[2] <= 32
    assert sorted(reproduced) == sorted(["Lee2019_MI", "Shin2017A", "SHU", "BNCI2014_001",
                                         "GrosseWentrup2009"])
    # the tie-break: Shin's 200 Hz, 2000 samples admits (5, 4, 3) and (5, 3, 4) at max pool 5
    assert solve_geometry(2000, 200.0)[1] == (5, 4, 3)


def test_geometry_errors_name_site_and_lengths():
    # Shin's official preprocessing halves the rate: 1000 samples reach L4 = 1, not 7
    with pytest.raises(ValueError, match=r"Shin2017A.*T=1000.*\(198, 47, 13, 1\)"):
        FLEEGNet(30, 2, 1000, 100.0, stem_geometry="reference", dataset="Shin2017A")
    with pytest.raises(ValueError, match="site 'tiny'.*T=50"):
        FLEEGNet(8, 2, 50, 100.0, site="tiny")
    with pytest.raises(ValueError, match="reference sites"):
        FLEEGNet(8, 2, 1000, 250.0, stem_geometry="reference", dataset="NotADataset")
    with pytest.raises(ValueError, match="stem_geometry"):
        FLEEGNet(8, 2, 1000, 250.0, stem_geometry="adaptive")
    with pytest.raises(ValueError, match="n_chans or chs_info"):
        FLEEGNet(None, 2, 1000, 250.0)
    # explicit geometry overrides both modes
    m = FLEEGNet(8, 3, 1000, None, kernels=(10, 10, 10), pools=(3, 3, 3))
    assert m.lengths == (330, 107, 32, 7) and m.count_parameters("shared") == 200_000 + 3 * 1401


def test_forward_backward_and_registry():
    assert "FLEEGNet" in available_models()
    model = get_model("FLEEGNet", n_chans=14, n_outputs=2, n_times=320, sfreq=160.0)
    assert isinstance(model, FLEEGNet)
    X = torch.randn(5, 14, 320)
    out = model(X)
    assert out.shape == (5, 2)
    assert torch.allclose(out.exp().sum(1), torch.ones(5), atol=1e-5)
    out4 = model.eval()(X.unsqueeze(1))
    assert torch.allclose(model(X), out4)
    model.train()
    torch.nn.functional.nll_loss(model(X), torch.tensor([0, 1, 0, 1, 1])).backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match=r"\(batch, 14, 320\)"):
        model(torch.randn(2, 13, 320))


def test_max_norm():
    model = FLEEGNet(22, 2, 1000, 250.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(50.0)
        small = model.block2.conv.weight[0].clone() / 1e4
        model.block2.conv.weight[0] = small  # far below the limit: untouched
    model.apply_max_norm()
    convs = [model.block1.temporal, model.block1.spatial, model.block2.conv,
             model.block3.conv, model.block4.conv]
    for conv in convs:
        norms = conv.weight.flatten(1).norm(dim=1)
        assert norms.max() <= 2.0 + 1e-5
        assert norms.max() > 1.99  # the large filters sit at the limit
    head = model.head.conv.weight.flatten(1).norm(dim=1)
    assert head.max() <= 0.5 + 1e-6 and head.max() > 0.49
    assert torch.equal(model.block2.conv.weight[0], small)
    # biases and batch norms are not constrained
    assert model.block1.bn.weight.abs().max() > 10


def test_bandpass_response():
    from scipy import signal

    fs = 250.0
    # long enough for the 0.3 Hz high-pass edge transients (poles at radius 0.9995) to die out
    t = np.arange(int(80 * fs)) / fs
    tone = np.sin(2 * np.pi * 10 * t)
    drift = np.sin(2 * np.pi * 0.05 * t)
    line = np.sin(2 * np.pi * 60 * t)
    X = np.stack([tone, drift, line])[None].astype(np.float32)
    out = bandpass(X, fs)[0]
    assert out.dtype == np.float32 and out.shape == X.shape[1:]
    mid = slice(int(30 * fs), int(50 * fs))
    # pass band: at most 1 dB off; stop bands: at least 40 dB down
    gain = np.std(out[0, mid]) / np.std(tone[mid])
    assert 10 ** (-1 / 20) - 5e-3 <= gain <= 1 + 5e-3
    assert np.std(out[2, mid]) / np.std(line[mid]) < 10 ** (-40 / 20)
    assert np.std(out[1, mid]) / np.std(drift[mid]) < 10 ** (-40 / 20)
    # zero phase: the 10 Hz tone is not delayed
    lag = np.argmax(np.correlate(out[0, mid], tone[mid], "full")) - (mid.stop - mid.start - 1)
    assert lag == 0
    # the order is the one cheb2ord gives for 1 dB / 40 dB and edges 0.1 and 45 Hz
    order, _ = signal.cheb2ord([0.3, 40], [0.1, 45], 1, 40, fs=fs)
    assert order >= 4
    with pytest.raises(ValueError, match="Nyquist"):
        bandpass(X, 80.0)


def test_preprocess_trialset():
    from bcikit.federated import simulate_sites

    spec, ts = simulate_sites(1, size="tiny", seed=1)[0]
    out = preprocess(ts)
    assert out.X.shape == ts.X.shape and out.X.dtype == np.float32
    np.testing.assert_array_equal(out.y, ts.y)
    np.testing.assert_allclose(out.X, bandpass(ts.X, ts.sfreq), rtol=0, atol=0)
    res = preprocess(ts, sfreq=80.0 * 2)
    assert res.X.shape[2] == ts.X.shape[2]  # already 160 Hz: no resampling
    res = preprocess(ts, sfreq=100.0)
    assert res.sfreq == 100.0 and res.X.shape[2] == round(ts.X.shape[2] * 100 / 160)


def test_import_light():
    code = ("import sys, bcikit, bcikit.federated, bcikit.models; "
            "assert 'torch' not in sys.modules, 'torch'; "
            "from bcikit.federated import sites, loop, simulate, state; "
            "import bcikit.models.fleeg; "
            "assert 'flwr' not in sys.modules, 'flwr'")
    subprocess.run([sys.executable, "-c", code], check=True)
