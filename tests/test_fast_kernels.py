"""The Trainer's kernel substitutions compute what the original modules compute.

Each substituted pattern is run on random inputs of several shapes with and without
:func:`bcikit.train.fast_kernels.fast_kernels`; outputs and the gradients of the input, the
weights and the bias must agree to 1e-5 of the largest reference value (float32: the two
kernels add the same products in a different order). Patterns outside a rule must run torch's
own forward, bit for bit. A model trained with the substitution has exactly the state_dict of
the unmodified model and loads into plain braindecode. One thread, small shapes."""

from __future__ import annotations

import platform
import sys
from unittest import mock

import numpy as np
import pytest
import torch

from bcikit.train import Trainer, find_substitutions
from bcikit.train.fast_kernels import fast_kernels, reuse_freed_memory

braindecode = pytest.importorskip("braindecode")
from braindecode.models import EEGNet, ShallowFBCSPNet  # noqa: E402
from braindecode.modules import CombinedConv, Conv2dWithConstraint  # noqa: E402

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_close_scaled(a: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """``|a - ref| <= TOL * max(1, max|ref|)`` elementwise."""
    assert a.shape == ref.shape, what
    scale = max(1.0, float(ref.abs().max()))
    err = float((a - ref).abs().max())
    assert err <= TOL * scale, f"{what}: max error {err:.3g} > {TOL} x {scale:.3g}"


def run(module: torch.nn.Module, x: torch.Tensor, fast: bool, seed: int = 0):
    """Output, input gradient and parameter gradients of ``module(x)`` for a fixed upstream
    gradient."""
    module.zero_grad(set_to_none=True)
    xg = x.detach().clone().requires_grad_(True)
    with fast_kernels(module, enabled=fast):
        y = module(xg)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    y.backward(g)
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters()}
    return y.detach(), xg.grad.detach(), grads


def compare(module: torch.nn.Module, x: torch.Tensor) -> None:
    y0, gx0, gp0 = run(module, x, fast=False)
    y1, gx1, gp1 = run(module, x, fast=True)
    assert_close_scaled(y1, y0, "output")
    assert_close_scaled(gx1, gx0, "input gradient")
    assert gp0.keys() == gp1.keys()
    for n in gp0:
        assert_close_scaled(gp1[n], gp0[n], f"gradient of {n}")


def no_torch_conv2d():
    """Inside: calling torch's Conv2d computation fails (proves the fast path ran)."""
    return mock.patch.object(torch.nn.Conv2d, "_conv_forward",
                             side_effect=AssertionError("torch's Conv2d forward was called"))


# ------------------------------------------------------------------------------ Conv2d rule
# (in, out, kernel, stride, padding, dilation, groups, bias, input (n, c, h, w))
COVERED = [
    # kernel covers the height (EEGNet's depthwise spatial conv and its relatives)
    (8, 16, (5, 1), 1, 0, 1, 8, False, (3, 8, 5, 37)),
    (4, 6, (3, 5), (1, 2), (0, 2), (1, 3), 2, True, (2, 4, 3, 41)),
    (3, 5, (1, 7), (1, 3), (0, 3), 1, 1, True, (2, 3, 1, 50)),      # height 1
    (6, 6, (1, 4), 1, (0, 2), 1, 6, False, (2, 6, 1, 33)),          # depthwise, even kernel
    (5, 4, (1, 1), 1, 0, 1, 1, False, (2, 5, 1, 19)),               # pointwise
    (7, 3, (4, 9), (5, 1), 0, (1, 2), 1, True, (2, 7, 4, 29)),      # stride on the covered axis
    # kernel covers the width (ShallowFBCSPNet's time x channel layout, classifier convs)
    (1, 10, (9, 6), 1, 0, 1, 1, True, (3, 1, 45, 6)),
    (4, 3, (11, 1), 1, 0, 1, 1, True, (2, 4, 11, 1)),               # classifier: whole plane
    (2, 4, (5, 3), (2, 1), (2, 0), (2, 1), 2, False, (2, 2, 31, 3)),
]


@pytest.mark.parametrize("cfg", COVERED, ids=lambda c: f"k{c[2]}-in{c[8]}")
def test_conv2d_covering_an_axis_equals_torch(cfg):
    cin, cout, k, s, p, d, g, bias, shape = cfg
    torch.manual_seed(0)
    m = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p, dilation=d, groups=g, bias=bias)
    x = torch.randn(shape)
    assert find_substitutions(m) == [("", "full_axis_conv2d")]
    compare(m, x)
    with fast_kernels(m), no_torch_conv2d():  # the fast path really ran
        m(x)


def test_conv2d_on_a_permuted_view_and_with_max_norm_parametrization():
    torch.manual_seed(1)
    # ShallowFBCSPNet's layout: (n, 1, time, chans) as a view of (n, chans, time)
    m = torch.nn.Conv2d(1, 7, (13, 9))
    base = torch.randn(3, 9, 101)
    compare(m, base.unsqueeze(-1).permute(0, 3, 2, 1))
    # braindecode's Conv2dWithConstraint: the weight is read through its parametrisation
    mc = Conv2dWithConstraint(4, 8, (6, 1), max_norm=0.5, groups=4, bias=False)
    with torch.no_grad():
        mc.parametrizations.weight.original.mul_(5.0)  # so the max-norm renorm is active
    assert find_substitutions(mc) == [("", "full_axis_conv2d")]
    compare(mc, torch.randn(2, 4, 6, 77))


# ------------------------------------------------------------------------------ left alone
class _OwnForward(torch.nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2.0


@pytest.mark.parametrize("make", [
    lambda: torch.nn.Conv2d(2, 3, (1, 5), padding="same"),
    lambda: torch.nn.Conv2d(2, 3, (4, 1), padding_mode="reflect", padding=(0, 1)),
    lambda: _OwnForward(2, 3, (4, 1)),
    lambda: torch.nn.Conv1d(2, 3, 5),
], ids=["padding-same", "reflect", "own-forward", "conv1d"])
def test_unsupported_modules_are_not_substituted(make):
    m = make()
    assert find_substitutions(m) == []
    x = torch.randn(2, 2, 4, 12) if not isinstance(m, torch.nn.Conv1d) else torch.randn(2, 2, 12)
    ref = m(x)
    with fast_kernels(m) as done:
        assert done == [] and "forward" not in vars(m)
        assert torch.equal(m(x), ref)


@pytest.mark.parametrize("cfg", [
    # (in, out, kernel, padding, input): the kernel covers no whole axis, or pads the one it
    # covers -> torch's own forward runs, bit for bit
    (2, 3, (3, 3), 0, (2, 2, 7, 9)),
    (2, 3, (1, 5), (0, 2), (2, 2, 4, 20)),   # EEGNet's temporal conv on a plane of 4 rows
    (2, 3, (4, 1), (1, 0), (2, 2, 4, 20)),   # covers the height but pads it
    (2, 3, (4, 1), 0, (2, 2, 6, 20)),        # taller input than the kernel
], ids=["3x3", "temporal", "padded-axis", "taller-input"])
def test_inputs_outside_the_rule_run_torchs_forward(cfg):
    cin, cout, k, p, shape = cfg
    torch.manual_seed(2)
    m = torch.nn.Conv2d(cin, cout, k, padding=p)
    x = torch.randn(shape)
    ref = m(x)
    spy = mock.patch.object(torch.nn.Conv2d, "_conv_forward", autospec=True,
                            side_effect=torch.nn.Conv2d._conv_forward)
    with fast_kernels(m), spy as called:
        out = m(x)
    assert called.call_count == 1
    assert torch.equal(out, ref)


# ------------------------------------------------------------------------------ CombinedConv
@pytest.mark.parametrize("cfg", [
    # (in_chans, n_filters_time, n_filters_spat, filter_time_length, bias_time, bias_spat, T)
    (22, 40, 40, 25, True, True, 211),
    (5, 3, 7, 4, False, True, 33),
    (6, 4, 2, 9, True, False, 50),
    (3, 2, 3, 1, False, False, 17),
])
def test_combined_conv_equals_braindecode(cfg):
    c, ft, fs, k, bt, bs, t = cfg
    torch.manual_seed(3)
    m = CombinedConv(in_chans=c, n_filters_time=ft, n_filters_spat=fs, filter_time_length=k,
                     bias_time=bt, bias_spat=bs)
    if bt:
        torch.nn.init.normal_(m.conv_time.bias)
    # its children are not called by the substituted forward, so they are not listed
    assert find_substitutions(m) == [("", "combined_conv")]
    base = torch.randn(3, c, t)
    compare(m, base.unsqueeze(-1).permute(0, 3, 2, 1))  # the network's view
    compare(m, torch.randn(2, 1, t, c))                  # a contiguous input
    with fast_kernels(m), no_torch_conv2d():
        m(torch.randn(2, 1, t, c))


def test_combined_conv_other_inputs_run_braindecodes_forward():
    torch.manual_seed(4)
    m = CombinedConv(in_chans=4, n_filters_time=3, n_filters_spat=5, filter_time_length=3)
    x = torch.randn(2, 1, 20, 7)  # wider than in_chans: braindecode slides over it
    ref = m(x)
    with fast_kernels(m):
        out = m(x)
    assert out.shape == ref.shape == (2, 5, 18, 4)
    assert torch.equal(out, ref)


# ------------------------------------------------------------------------------ whole models
def _models():
    torch.manual_seed(5)
    shallow = ShallowFBCSPNet(n_chans=6, n_outputs=3, n_times=120, sfreq=100.0)
    eegnet = EEGNet(n_chans=6, n_outputs=3, n_times=130, sfreq=100.0)
    return {"ShallowFBCSPNet": shallow, "EEGNet": eegnet}


def test_networks_forward_backward_and_state_dict_untouched():
    for name, model in _models().items():
        model.train()
        x = torch.randn(8, 6, model.n_times)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        subs = find_substitutions(model)
        assert subs, name
        if name == "ShallowFBCSPNet":
            assert ("conv_time_spat", "combined_conv") in subs
        else:
            assert ("conv_spatial", "full_axis_conv2d") in subs
            assert "conv_temporal" in [n for n, _ in subs]  # listed; runs torch's forward
        # dropout draws the same masks on both runs
        torch.manual_seed(6)
        y0, gx0, gp0 = run(model, x, fast=False)
        torch.manual_seed(6)
        y1, gx1, gp1 = run(model, x, fast=True)
        assert_close_scaled(y1, y0, f"{name} logits")
        assert_close_scaled(gx1, gx0, f"{name} input gradient")
        for n in gp0:
            assert_close_scaled(gp1[n], gp0[n], f"{name} gradient of {n}")
        after = model.state_dict()
        assert list(after) == list(before)
        assert all(after[k].shape == before[k].shape for k in before)
        for k, _ in model.named_parameters():  # no step was taken: weights unchanged
            assert torch.equal(after[k], before[k]), k
        assert not any("forward" in vars(m) for m in model.modules()), name


def test_substitution_is_undone_after_an_exception():
    model = _models()["ShallowFBCSPNet"]
    with pytest.raises(RuntimeError, match="boom"):
        with fast_kernels(model) as subs:
            assert all("forward" in vars(model.get_submodule(n)) for n, _ in subs)
            raise RuntimeError("boom")
    assert not any("forward" in vars(m) for m in model.modules())


def _data(n_chans: int, n_times: int, n: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    pattern = rng.standard_normal((3, n_chans, 1)) * np.sin(np.arange(n_times) / 5.0)
    X = rng.standard_normal((n, n_chans, n_times)) + 0.8 * pattern[y]
    return X.astype(np.float32), y.astype(np.int64)


@pytest.mark.parametrize("name", ["ShallowFBCSPNet", "EEGNet"])
@pytest.mark.parametrize("optimizer, rtol", [("sgd", 1e-5), ("adamw", 2e-3)])
def test_fit_with_fast_kernels_matches_fit_without(name, optimizer, rtol):
    """Same loss history, and the trained weights load into an unmodified braindecode model.

    Tolerances: with SGD the float32 rounding differences of the two kernels stay at their own
    size (1e-5 relative). Adam(W) divides each gradient element by its running RMS, so an
    element that is ~0 (where rounding decides its sign) still moves by ~lr: the histories of
    any two convolution libraries differ by ~1e-4 after a few steps, hence 2e-3 there."""
    X, y = _data(6, 130)
    histories, states, probas = [], [], []
    for fast in (False, True):
        torch.manual_seed(7)
        model = (ShallowFBCSPNet(n_chans=6, n_outputs=3, n_times=130, sfreq=100.0)
                 if name == "ShallowFBCSPNet"
                 else EEGNet(n_chans=6, n_outputs=3, n_times=130, sfreq=100.0))
        tr = Trainer(model, epochs=3, batch_size=16, lr=1e-3, weight_decay=1e-2,
                     optimizer=optimizer,
                     device="cpu", precision="fp32", seed=0, fast_kernels=fast, verbose=False)
        tr.fit(X[:36], y[:36], X[36:], y[36:])
        assert bool(tr.fast_kernels_) is fast
        assert not any("forward" in vars(m) for m in model.modules())  # undone after fit
        histories.append(tr.history_)
        states.append(model.state_dict())
        probas.append(tr.predict_proba(X))
    for key in ("train_loss", "val_loss"):
        a = [r[key] for r in histories[0]]
        b = [r[key] for r in histories[1]]
        np.testing.assert_allclose(b, a, rtol=rtol, err_msg=key)
    assert list(states[0]) == list(states[1])
    assert all(states[0][k].shape == states[1][k].shape for k in states[0])
    np.testing.assert_allclose(probas[1], probas[0], atol=100 * rtol)
    # round trip: the fast-trained state_dict into a plain braindecode model
    plain = (ShallowFBCSPNet(n_chans=6, n_outputs=3, n_times=130, sfreq=100.0)
             if name == "ShallowFBCSPNet"
             else EEGNet(n_chans=6, n_outputs=3, n_times=130, sfreq=100.0))
    plain.load_state_dict(states[1])
    plain.eval()
    with torch.no_grad():
        p = torch.softmax(plain(torch.from_numpy(X)), 1).numpy()
    np.testing.assert_array_equal(p, probas[1])


def test_reuse_freed_memory_changes_no_result():
    torch.manual_seed(8)
    x = torch.randn(4, 3, 50)
    w = torch.randn(5, 3, 7)
    ref = torch.nn.functional.conv1d(x, w)
    with reuse_freed_memory() as active:
        assert active is (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")
        with reuse_freed_memory() as nested:  # nested blocks: the outer one acts
            assert nested == active
            big = [torch.ones(3_000_000) for _ in range(3)]  # 12 MB blocks
            del big
        out = torch.nn.functional.conv1d(x, w)
    assert torch.equal(out, ref)
    with reuse_freed_memory(enabled=False) as off:
        assert off is False


def test_bad_fast_kernels_parameter():
    X, y = _data(4, 40, n=8)
    with pytest.raises(ValueError, match="fast_kernels"):
        Trainer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(160, 3)),
                epochs=1, fast_kernels="yes", device="cpu").fit(X, y)
    with pytest.raises(TypeError, match="Module"):
        find_substitutions("not a model")
