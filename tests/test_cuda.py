"""CUDA checks: the same code on a GPU gives the CPU's numbers, mixed precision keeps the
contrastive loss in float32, checkpoints cross devices, and the harness and the estimators run
end to end on the GPU. Skipped without a CUDA device (CI has none); `benchmarks/gpu_check.sh`
runs them on a lent GPU and saves the log under `benchmarks/results/`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _exact_fp32():
    """Full fp32 matmuls for the CPU/GPU equality checks (TF32 would differ at 1e-3)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _trials(n=48, n_times=500, seed=0, difficulty=0.3):
    from bcikit.simulate import make_motor_imagery

    ts = make_motor_imagery(n_subjects=1, n_sessions=1, n_runs=1, n_classes=2,
                            n_trials_per_class=n // 2, sfreq=125.0,
                            trial_duration=n_times / 125.0, difficulty=difficulty,
                            seed=seed)
    return ts


def _mvcnet(ts, **kw):
    from bcikit.models import MVCNet

    torch.manual_seed(0)
    return MVCNet(n_chans=ts.X.shape[1], n_outputs=2, n_times=ts.X.shape[2], sfreq=125.0,
                  chs_info=[{"ch_name": c} for c in ts.ch_names], classes=list(ts.classes), **kw)


def test_mvcnet_forward_and_embedding_match_the_cpu():
    ts = _trials()
    model = _mvcnet(ts).eval()
    X = torch.from_numpy(ts.X[:16]).float()
    with torch.no_grad():
        logits_cpu, z_cpu = model(X), model.embed(X)
        gpu = model.to(CUDA)
        logits_gpu, z_gpu = gpu(X.to(CUDA)).cpu(), gpu.embed(X.to(CUDA)).cpu()
    assert torch.allclose(logits_gpu, logits_cpu, rtol=1e-4, atol=1e-4)
    assert torch.allclose(z_gpu, z_cpu, rtol=1e-4, atol=1e-4)


def test_nt_xent_stays_float32_under_bf16_autocast():
    from bcikit.train.losses import nt_xent

    g = torch.Generator().manual_seed(1)
    a = torch.randn(32, 64, generator=g)
    b = torch.randn(32, 64, generator=g)
    ref = nt_xent(a, b, tau=0.2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = nt_xent(a.to(CUDA).bfloat16(), b.to(CUDA).bfloat16(), tau=0.2)
    assert out.dtype == torch.float32
    # inputs rounded to bf16 (8 bits of mantissa), the loss itself in fp32
    ref_bf16 = nt_xent(a.bfloat16().float(), b.bfloat16().float(), tau=0.2)
    assert out.item() == pytest.approx(ref_bf16.item(), rel=1e-5)
    assert out.item() == pytest.approx(ref.item(), rel=2e-2)


def test_trainer_on_the_gpu_learns_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    from bcikit.models import MVCNetStem
    from bcikit.train import Trainer

    ts = _trials(n=96)
    X, y = ts.X.astype(np.float32), ts.y
    torch.manual_seed(0)
    model = MVCNetStem(n_chans=X.shape[1], n_outputs=2, n_times=X.shape[2], sfreq=125.0)
    trainer = Trainer(model, epochs=30, batch_size=32, lr=1e-3, optimizer="adam", device="cuda",
                      precision="fp32", checkpoint_dir=tmp_path / "ck", seed=1, verbose=False)
    trainer.fit(X[:64], y[:64])
    assert next(model.parameters()).device.type == "cuda"
    losses = [h["train_loss"] for h in trainer.history_]
    assert losses[-1] < 0.7 * losses[0]
    proba_gpu = trainer.predict_proba(X[64:])
    assert proba_gpu.shape == (32, 2) and np.allclose(proba_gpu.sum(1), 1, atol=1e-5)
    # the checkpoint written from the GPU loads into a CPU model and predicts the same
    from bcikit.train import CHECKPOINT_NAME, load_checkpoint

    state = load_checkpoint(tmp_path / "ck" / CHECKPOINT_NAME)
    cpu_model = MVCNetStem(n_chans=X.shape[1], n_outputs=2, n_times=X.shape[2], sfreq=125.0)
    cpu_model.load_state_dict(state["model"])
    cpu_model.eval()
    with torch.no_grad():
        proba_cpu = torch.softmax(cpu_model(torch.from_numpy(X[64:])), 1).numpy()
    assert np.allclose(proba_cpu, proba_gpu, atol=1e-4)


def test_trainer_gpu_resume_is_exact_with_deterministic_kernels(tmp_path):
    from bcikit.models import MVCNetStem
    from bcikit.train import Trainer

    ts = _trials(n=64)
    X, y = ts.X.astype(np.float32), ts.y

    def fit(ck, epochs):
        torch.manual_seed(0)
        model = MVCNetStem(n_chans=X.shape[1], n_outputs=2, n_times=X.shape[2], sfreq=125.0)
        t = Trainer(model, epochs=epochs, batch_size=16, device="cuda", precision="fp32",
                    deterministic=True, checkpoint_dir=ck, seed=3, verbose=False)
        t.fit(X, y)
        return model

    whole = fit(tmp_path / "a", 6)
    fit(tmp_path / "b", 3)
    resumed = fit(tmp_path / "b", 6)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_mvcnet_classifier_fits_on_the_gpu_above_chance():
    """The estimator test of tests/test_estimators.py (band-passed simulated imagery, first 80 %
    of each class trains), trained on the GPU with the default precision (bf16 autocast)."""
    from test_estimators import CH_NAMES, MI_EPOCHS, SFREQ, _mi_data

    from bcikit.estimators import MVCNetClassifier
    from bcikit.evaluate import chance_threshold

    X_tr, y_tr, X_te, y_te = _mi_data()
    clf = MVCNetClassifier(sfreq=SFREQ, ch_names=CH_NAMES, epochs=MI_EPOCHS, batch_size=16,
                           device="cuda", random_state=0, verbose=False)
    clf.fit(X_tr, y_tr)
    assert clf.device_.type == "cuda"
    assert clf.score(X_te, y_te) > chance_threshold(len(y_te), 2)


def test_pipeline_runs_on_the_gpu(tmp_path):
    from bcikit.pipeline import run_pipeline

    result = run_pipeline(REPO / "pipelines" / "mvcnet.toml", out=tmp_path / "run", device="cuda",
                          overrides=["data.simulate.n_subjects=1",
                                     "data.simulate.n_trials_per_class=24", "train.epochs=3",
                                     "evaluate.seeds=[1]"])
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda")
    assert metrics["n_params"] == 62_139_954 and metrics["n_params_deployed"] == 6_722


def test_duin_stages_match_the_cpu():
    """Du-IN's classifier and VQ-VAE give the CPU's outputs on the GPU (fp32), and the VQ-VAE's
    codes (cosine lookup of the k-means-initialised codebook) are the same indices."""
    from bcikit.models.duin import DuIN, DuINVQVAE

    torch.manual_seed(0)
    X = torch.randn(8, 10, 3000)
    clf = DuIN(n_chans=10, n_outputs=61, n_times=3000, sfreq=1000).eval()
    vq = DuINVQVAE(n_chans=10, n_times=4000, sfreq=1000)
    vq.train()
    vq.training_loss(torch.randn(32, 10, 4000))  # initialises the codebook (k-means)
    vq.eval()
    with torch.no_grad():
        logits_cpu, codes_cpu, rec_cpu = clf(X), vq.quantize(X), vq(X)
        clf, vq = clf.to(CUDA), vq.to(CUDA)
        logits_gpu = clf(X.to(CUDA)).cpu()
        codes_gpu, rec_gpu = vq.quantize(X.to(CUDA)).cpu(), vq(X.to(CUDA)).cpu()
    assert torch.allclose(logits_gpu, logits_cpu, rtol=1e-4, atol=1e-4)
    assert (codes_gpu == codes_cpu).float().mean() >= 0.99  # ties at 1e-7 may flip a code
    assert torch.allclose(rec_gpu, rec_cpu, rtol=1e-3, atol=1e-3)


def test_fleeg_round_on_the_gpu_matches_the_cpu():
    """One federated round of three tiny sites on the GPU ends where the CPU's does: every state
    tensor and the batch-statistics logits on the test trials differ from the CPU's, in mean
    absolute difference, by at most 10 times what the CPU's own results move when the initial
    weights are nudged by 1e-6 (relative). Merging with equal instead of sample-count weights
    moves the shared tensors 150-450 times further than that bound.

    Why that bound and not a fixed tolerance: block 1's temporal bias has a gradient that is zero
    in exact arithmetic (the linear spatial convolution turns it into a per-channel constant that
    the batch norm removes), so AdamW turns rounding noise into +-lr steps, and the batch norm's
    running mean follows that bias. On the CPU alone the nudge moves them by 5.7e-3 and 7e-4 on
    average, every other tensor by 1e-7 to 6e-5; the second GPU run of this test (H200,
    2026-11-27), with a fixed 1e-3 on every element, failed on that bias.

    Dropout is switched off: a site's dropout stream is the device's generator (MT19937 on the
    CPU, Philox on CUDA), so its masks differ by design (the first GPU run failed on that).
    Shuffling uses the site's CPU generator on both devices."""
    from bcikit.federated import run_federated
    from bcikit.federated.simulate import make_sites, simulate_sites

    sims = simulate_sites(3, size="tiny", seed=0)

    def one_round(device, nudge=0.0):
        sites = make_sites(sims, rounds=1, device=device)
        n_dropout = 0
        for site in sites:
            for m in site.model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p, n_dropout = 0.0, n_dropout + 1
            with torch.no_grad():
                for w in site.model.parameters():
                    w.mul_(1.0 + nudge)
        assert n_dropout >= len(sites)  # FLEEGNet has dropout: the switch above is needed
        res = run_federated(sites, 1, verbose=False)
        model = sites[0].model
        state = {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items()}
        X = torch.as_tensor(np.asarray(sites[0].data.test.X), dtype=torch.float32)
        with torch.no_grad():
            state["logits (batch statistics)"] = model.train()(X.to(device)).cpu()
        return res, state

    old_deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        res_cpu, cpu = one_round("cpu")
        _, nudged = one_round("cpu", nudge=1e-6)
        res_gpu, gpu = one_round("cuda")
    finally:
        torch.backends.cudnn.deterministic = old_deterministic
    assert cpu.keys() == gpu.keys() == nudged.keys()
    spread = {k: float((nudged[k] - v).abs().mean()) for k, v in cpu.items()}
    # the bound is informative: the nudge moves the weights by 1e-7 to 6e-6 on average
    assert max(v for k, v in spread.items() if k.endswith(".weight")) < 1e-4, spread
    for key, value in cpu.items():
        diff = float((gpu[key] - value).abs().mean())
        assert diff <= 10 * spread[key] + 1e-6, (key, diff, spread[key])
    assert res_gpu.sites.keys() == res_cpu.sites.keys()
