"""MVCNet (bcikit.models.mvcnet) and NT-Xent (bcikit.train.losses): counts, units, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bcikit.data import augmentations as aug
from bcikit.models import count_parameters, get_model
from bcikit.models.mvcnet import MVCNet
from bcikit.train.losses import nt_xent

torch.set_num_threads(1)

NAMES8 = ["C3", "C4", "Cz", "FC1", "FC2", "CP1", "CP2", "Pz"]
LR = ["left_hand", "right_hand"]


def _chs(names):
    return [{"ch_name": n} for n in names]


def _small(**kw):
    params = dict(n_outputs=2, n_times=200, sfreq=100.0, chs_info=_chs(NAMES8), classes=LR)
    params.update(kw)
    return MVCNet(**params)


def _millions(n: int) -> float:
    return round(n / 1e6, 1)


# ----------------------------------------------------------------------------- parameter counts
# preset: (C, fs, T, P, F, deployed, projector (M), encoder per layer (M))
PRESETS = {
    "BNCI2014_001": (22, 250.0, 1000, 125, 512, 6722, 46.1, 8.0),
    "Zhou2016": (14, 250.0, 1250, 125, 640, 6466, 46.4, 12.5),
    "BCI IV-1": (59, 250.0, 750, 125, 384, 8834, 68.6, 4.5),
    "BNCI2014_002": (15, 512.0, 2560, 128, 1280, 7810, 203.2, 52.5),
    "BNCI2015_001": (13, 512.0, 2560, 128, 1280, 7682, 177.0, 52.5),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_parameter_counts_match_the_spec_table(preset):
    C, fs, T, P, F_, deployed, proj_m, enc_m = PRESETS[preset]
    pool = P if round(0.5 * fs) != P else None  # the 512 Hz presets set 128 explicitly
    with torch.device("meta"):
        model = MVCNet(C, 2, T, fs, pool_size=pool, encoder_layers=1)
    assert model.pool_size == P and model.n_features == F_
    assert model.count_parameters("deployed") == deployed
    assert count_parameters(model.deployed_module()) == deployed
    proj = sum(p.numel() for p in model.projector.parameters())
    enc = sum(p.numel() for p in model.transformer.layers[0].parameters())
    # exact values from the layer formulas, then the table's rounding
    ff = max(2 * T, 128)
    assert enc == (3 * T * T + 3 * T) + (T * T + T) + (T * ff + ff) + (ff * T + T) + 4 * T
    assert proj == (C * T * 4 * F_ + 4 * F_) + 2 * 4 * F_ + (4 * F_ * F_ + F_)
    assert _millions(proj) == proj_m and _millions(enc) == enc_m
    assert model.count_parameters("training") == deployed + proj + enc


def test_training_totals_bnci2014_001():
    with torch.device("meta"):
        one = MVCNet(22, 2, 1000, 250.0, encoder_layers=1)
        two = MVCNet(22, 2, 1000, 250.0)  # default: 2 layers
    assert sum(p.numel() for p in one.transformer.parameters()) == 8_011_000
    assert sum(p.numel() for p in one.projector.parameters()) == 46_111_232
    assert one.count_parameters("training") == 54_128_954
    assert two.count_parameters("training") == 62_139_954
    assert two.count_parameters() == 6_722
    with torch.device("meta"):
        assert MVCNet(15, 2, 2560, 512.0).pool_size == 256  # default round(0.5 * sfreq)


# ------------------------------------------------------------------------------------ NT-Xent
def _nt_xent_loop(A: np.ndarray, P: np.ndarray, tau: float) -> float:
    S = np.concatenate([P, A]).astype(np.float64)
    n2 = len(S)
    N = n2 // 2

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    total = 0.0
    for j in range(n2):
        p = j + N if j < N else j - N
        denom = 0.0
        for k in range(n2):
            if k != j:
                denom += math.exp(cos(S[j], S[k]) / tau)
        total += -cos(S[j], S[p]) / tau + math.log(denom)
    return total / n2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nt_xent_equals_brute_force(rng, dtype):
    for N, d, tau in ((5, 7, 0.2), (3, 16, 0.5), (1, 4, 0.2)):
        A = rng.standard_normal((N, d))
        P = A + 0.5 * rng.standard_normal((N, d))
        got = float(nt_xent(torch.tensor(A, dtype=dtype), torch.tensor(P, dtype=dtype), tau))
        assert got == pytest.approx(_nt_xent_loop(A, P, tau), abs=1e-6)


@pytest.mark.parametrize("N, tau", [(4, 0.2), (8, 0.5), (3, 1.0)])
def test_nt_xent_orthogonal_closed_form(rng, N, tau):
    Q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    A = torch.tensor(Q[:N] * rng.uniform(0.5, 3, (N, 1)))  # orthogonal rows, any norms
    expected = math.log(1 + (2 * N - 2) * math.exp(-1 / tau))
    assert float(nt_xent(A, A, tau)) == pytest.approx(expected, abs=1e-10)


def test_nt_xent_is_fp32_under_autocast_and_checks_input(rng):
    A = torch.tensor(rng.standard_normal((6, 9)), dtype=torch.float32, requires_grad=True)
    P = torch.tensor(rng.standard_normal((6, 9)), dtype=torch.float32)
    ref = nt_xent(A, P)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(A, P)
    assert got.dtype == torch.float32
    assert float(got.detach()) == pytest.approx(float(ref.detach()), abs=1e-6)
    got.backward()
    assert A.grad is not None and bool(torch.isfinite(A.grad).all())
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(A, P[:5])
    with pytest.raises(ValueError, match="tau"):
        nt_xent(A, P, 0.0)


# ---------------------------------------------------------------------- signature and views
def test_signature_inference_and_errors():
    model = MVCNet(n_outputs=2, n_times=200, sfreq=100.0, chs_info=_chs(NAMES8))
    assert model.n_chans == 8 and model.ch_names == NAMES8 and model.pool_size == 50
    assert MVCNet(n_chans=8, n_times=200, sfreq=100.0, classes=LR).n_outputs == 2
    with pytest.raises(ValueError, match="n_chans or chs_info"):
        MVCNet(n_outputs=2, n_times=200, sfreq=100.0)
    with pytest.raises(ValueError, match="n_outputs or classes"):
        MVCNet(n_chans=8, n_times=200, sfreq=100.0)
    with pytest.raises(ValueError, match="n_times"):
        MVCNet(n_chans=8, n_outputs=2, sfreq=100.0)
    with pytest.raises(ValueError, match="sfreq"):
        MVCNet(n_chans=8, n_outputs=2, n_times=200)
    with pytest.raises(ValueError, match="even"):
        MVCNet(n_chans=8, n_outputs=2, n_times=201, sfreq=100.0)
    with pytest.raises(ValueError, match="describes 8 channels"):
        MVCNet(n_chans=9, n_outputs=2, n_times=200, sfreq=100.0, chs_info=_chs(NAMES8))
    with pytest.raises(ValueError, match="n_outputs is 3"):
        MVCNet(n_chans=8, n_outputs=3, n_times=200, sfreq=100.0, classes=LR)
    with pytest.raises(ValueError, match="pool_size"):
        MVCNet(n_chans=8, n_outputs=2, n_times=200, sfreq=100.0, pool_size=400)
    with pytest.raises(ValueError, match="views"):
        MVCNet(n_chans=8, n_outputs=2, n_times=200, sfreq=100.0, views=("flip", "mixup"))
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(2, 8, 100))


def test_registered_for_get_model():
    model = get_model("MVCNet", n_chans=8, n_outputs=2, n_times=200, sfreq=100.0,
                      encoder_layers=1)
    assert isinstance(model, MVCNet) and model.encoder_layers == 1


def test_default_views_follow_channels_and_classes():
    assert _small().resolved_views() == ("flip", "fshift", "cr")
    assert _small(classes=np.array(LR)).resolved_views() == ("flip", "fshift", "cr")
    assert _small(classes=["right_hand", "feet"]).resolved_views() == ("flip", "fshift")
    assert _small(chs_info=None, n_chans=8).resolved_views() == ("flip", "fshift")
    late = _small(classes=None)
    assert late.resolved_views() == ("flip", "fshift")
    late.classes = ["left_hand", "right_hand"]  # set later, e.g. by an estimator
    assert late.resolved_views() == ("flip", "fshift", "cr")
    # explicit CR on right hand / feet (BNCI2014_002) or unmatched channels: errors
    with pytest.raises(ValueError, match="right_hand"):
        _small(classes=["right_hand", "feet"], views=("flip", "fshift", "cr"))
    with pytest.raises(ValueError, match="'CP1'"):
        _small(chs_info=_chs(["C3", "C4", "Cz", "FC1", "FC2", "CP1", "CP4", "Pz"]),
               views=("flip", "cr"))
    quirky = _small(reference_quirks=True, views=("flip", "fshift"))
    assert quirky._views()[1].reference_quirks


# -------------------------------------------------------------------------- training step
def test_training_loss_assembles_the_spec_objective(rng):
    torch.manual_seed(0)
    model = _small(encoder_layers=1).eval()  # eval: no dropout, fixed BN -> deterministic
    X = torch.tensor(rng.standard_normal((6, 8, 200)), dtype=torch.float32)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    loss, logits = model.training_loss(X, y)
    with torch.no_grad():
        pairs = aug.mirror_pairs(NAMES8)
        views = [X, -X, aug.fshift(X, 100.0), aug.cr(X, pairs)]
        ys = [y, y, y, 1 - y]
        f = [model.features(v) for v in views]
        z = [model.embed(v) for v in views]
        ce = sum(F.cross_entropy(model(v), yv) for v, yv in zip(views, ys))
        cvc = sum(nt_xent(torch.cat([f[0], z[0]]), torch.cat([f[v], z[v]]), 0.2)
                  for v in (1, 2, 3)) / 3
        cmc = nt_xent(torch.cat(f), torch.cat(z), 0.2)
    torch.testing.assert_close(logits, model(X))
    torch.testing.assert_close(model.last_losses["ce"], ce)
    torch.testing.assert_close(model.last_losses["cvc"], cvc)
    torch.testing.assert_close(model.last_losses["cmc"], cmc)
    torch.testing.assert_close(loss.detach(), ce + 0.1 * cvc + 0.1 * cmc)
    # two views: CE over three terms, CVC the mean of two, CMC over 3B rows
    two = _small(encoder_layers=1, views=("flip", "fshift"), lambda_cvc=0.5,
                 gamma_cmc=2.0).eval()
    two.load_state_dict(model.state_dict())
    loss2, _ = two.training_loss(X, y)
    cvc2 = sum(nt_xent(torch.cat([f[0], z[0]]), torch.cat([f[v], z[v]]), 0.2)
               for v in (1, 2)) / 2
    ce2 = sum(F.cross_entropy(model(v), y) for v in views[:3])
    cmc2 = nt_xent(torch.cat(f[:3]), torch.cat(z[:3]), 0.2)
    torch.testing.assert_close(loss2.detach(), (ce2 + 0.5 * cvc2 + 2.0 * cmc2).detach())


def test_training_step_updates_both_branches_and_deployed_export(rng):
    torch.manual_seed(0)
    model = _small(encoder_layers=1)
    X = torch.tensor(rng.standard_normal((8, 8, 200)), dtype=torch.float32)
    y = torch.tensor([0, 1] * 4)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, logits = model.training_loss(X, y)
    assert loss.ndim == 0 and bool(torch.isfinite(loss)) and logits.shape == (8, 2)
    opt.zero_grad()
    loss.backward()
    for name in ("cnn.spatial.weight", "cnn.temporal.weight", "head.weight",
                 "transformer.layers.0.self_attn.in_proj_weight",
                 "transformer.layers.0.linear1.weight", "projector.fc1.weight",
                 "projector.fc2.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    opt.step()
    after = dict(model.named_parameters())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(before)  # every parameter of both branches moved
    # deployed part: forward = CNN + head, reproduced exactly by the exported module
    model.eval()
    out = model(X)
    assert out.shape == (8, 2)
    deployed = model.deployed_module()
    assert torch.equal(deployed(X), out)
    state = model.deployed_state_dict()
    assert not any(k.startswith(("transformer", "projector")) for k in state)
    fresh = _small(encoder_layers=1).deployed_module()
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(fresh(X), out)
    assert count_parameters(deployed) == model.count_parameters("deployed") == 64 * 8 + 128 + \
        64 * 63 + 128 + 256 * 2 + 2


def test_federation_hook_names():
    model = _small(encoder_layers=1)
    names = {n for n, _ in model.named_parameters()}
    shared = set(model.shared_parameter_names())
    assert shared == {"cnn.temporal.weight", "head.weight", "head.bias"} and shared <= names
    assert set(model.local_parameter_names()) == names - shared


def test_stem_initialisation():
    torch.manual_seed(0)
    model = MVCNet(22, 2, 200, 100.0, encoder_layers=1)
    for w in (model.cnn.spatial.weight, model.cnn.temporal.weight):
        assert float(w.detach().std()) == pytest.approx(0.01, rel=0.1)
    for bn in (model.cnn.spatial_bn, model.cnn.temporal_bn):
        assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))


# ---------------------------------------------------------------------------- learning check
def test_learns_simulated_motor_imagery_with_trainer():
    from bcikit.simulate import make_motor_imagery
    from bcikit.train import Trainer

    ts = make_motor_imagery(n_subjects=1, n_sessions=1, n_runs=1, n_classes=2,
                            n_trials_per_class=20, sfreq=64.0, trial_duration=2.0,
                            artifact_rate=0.0, seed=0)
    X = ts.X / ts.X.std(axis=(0, 2), keepdims=True)
    y = ts.y
    torch.manual_seed(0)
    model = MVCNet(n_outputs=2, n_times=X.shape[-1], sfreq=64.0, chs_info=ts.info["chs"],
                   classes=list(ts.classes), encoder_layers=1)
    assert model.resolved_views() == ("flip", "fshift", "cr")
    trainer = Trainer(model, epochs=8, batch_size=20, lr=1e-3, optimizer="adam",
                      device="cpu", precision="fp32", seed=0, verbose=False)
    trainer.fit(X, y)
    acc = trainer.evaluate(X, y)["accuracy"]  # model(X): the deployed CNN + head, eval mode
    # chance 0.5; the 95 % binomial upper bound of chance with 40 trials is about 0.65
    assert acc >= 0.75, acc
