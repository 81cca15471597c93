"""Du-IN networks and objectives (spec duin.md §2): counts, shapes, quantiser, masks, stages."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from bcikit.models import get_model  # noqa: E402
from bcikit.models import duin as duin_mod  # noqa: E402
from bcikit.models.duin import (CodebookMonitor, DuIN, DuINBlock, DuINMAE,  # noqa: E402
                                DuINVQVAE, PatchTokenizer, TimeRegressor, VectorQuantizer,
                                complementary_masks, kmeans_cosine, load_duin, random_shift,
                                save_duin, sinusoidal_table, stage_loss)
from bcikit.train import Trainer  # noqa: E402
from bcikit.train.duin_recipe import (STAGE_RECIPES, duin_optimizer,  # noqa: E402
                                      duin_scheduler, epoch_lr, param_groups, trainer_kwargs)

torch.set_num_threads(1)

TINY = dict(n_blocks=1, dropout=0.0)  # small encoders for the training tests


def _tiny_vqvae(n_chans=3, n_times=400, **kw):
    return DuINVQVAE(n_chans=n_chans, n_times=n_times, n_codes=16, n_decoder_blocks=1,
                     **{**TINY, **kw})


# ------------------------------------------------------------------ counts and shapes
def test_reference_parameter_counts():
    model = DuIN(n_chans=10, n_outputs=61, n_times=3000, sfreq=1000)
    assert model.count_parameters("official") == 4_377_639
    assert model.count_parameters("used") == 4_182_813
    assert model.count_parameters("total") == 4_182_813
    # spec §2.6 table, component by component
    by = lambda prefix: sum(p.numel() for n, p in model.named_parameters()  # noqa: E731
                            if n.startswith(prefix))
    assert by("encoder.subject.") == 176
    assert by("encoder.tokenizer.") == 95_024
    assert by("encoder.transformer.blocks.0.") + 1 == 433_153  # + the fixed scale
    assert by("encoder.transformer.") + 8 == 3_465_224
    assert by("head.") == 622_397
    vq = VectorQuantizer()
    assert (sum(p.numel() for p in vq.parameters())
            + sum(b.numel() for b in vq.buffers())) == 179_713
    assert model.encoder.positions.numel() == 4_800
    # registered via get_model with the same result
    m2 = get_model("DuIN", n_chans=10, n_outputs=61, n_times=3000, sfreq=1000)
    assert isinstance(m2, DuIN) and m2.count_parameters("official") == 4_377_639


@torch.no_grad()
def test_stage_shapes_reference():
    X3 = torch.randn(2, 10, 3000)
    X4 = torch.randn(2, 10, 4000)
    clf = DuIN(n_chans=10, n_outputs=61, n_times=3000).eval()
    tok = clf.encoder.tokens(X3, None)
    assert tok.shape == (2, 30, 160)
    assert clf.encoder(X3).shape == (2, 30, 160)
    assert clf(X3).shape == (2, 61)
    vq = DuINVQVAE(n_chans=10, n_times=4000)
    assert vq.encoder.tokens(X4, None).shape == (2, 40, 160)
    h = vq.encoder(X4, None)
    zq, loss, codes = vq.quantizer(h)
    assert zq.shape == (2, 40, 160) and codes.shape == (2, 40) and loss.ndim == 0
    assert vq.regressor(vq.decoder(vq.encoder.add_positions(zq))).shape == (2, 4000, 16)
    assert vq(X4).shape == (2, 10, 4000)
    assert vq.quantize(X4).shape == (2, 40) and vq.quantize(X4).dtype == torch.int64
    vq.eval()
    mae = DuINMAE(vqvae=vq)
    l1, l2, logits = mae.view_logits(X4, complementary_masks(2, 40))
    assert l1.shape == l2.shape == logits.shape == (2, 40, 2048)
    assert len(mae.encoder.transformer.blocks) == 8 and len(vq.decoder.blocks) == 4


def test_regressor_maps_40_tokens_to_4000_samples():
    reg = TimeRegressor()
    with torch.no_grad():
        assert reg(torch.randn(1, 40, 160)).shape == (1, 4000, 16)
        assert reg(torch.randn(1, 30, 160)).shape == (1, 3000, 16)
    convs = [m for m in reg.deconvs]
    assert [m.out_channels for m in convs] == [128, 128, 128, 128, 16]
    assert [m.kernel_size[0] for m in convs] == [3, 3, 10, 9, 19]
    assert [m.stride[0] for m in convs] == [1, 1, 10, 1, 10]
    # no activations: the regressor is affine in its input
    a, b = torch.randn(1, 4, 160), torch.randn(1, 4, 160)
    with torch.no_grad():
        z = reg(torch.zeros(1, 4, 160))
        torch.testing.assert_close(reg(a + b) - z, (reg(a) - z) + (reg(b) - z), atol=1e-5,
                                   rtol=1e-4)


def test_tokenizer_is_linear_and_patchwise():
    tok = PatchTokenizer().eval()
    H = torch.randn(2, 500, 16)
    out = tok(H)
    assert out.shape == (2, 5, 160)
    # patch 2 depends only on samples 200..299
    H2 = H.clone()
    H2[:, 200:300] += 1.0
    changed = (tok(H2) - out).abs().amax(dim=(0, 2)) > 0
    assert changed.tolist() == [False, False, True, False, False]
    # no activations (eval-mode batch norm is affine): affine in the input
    z = tok(torch.zeros_like(H))
    torch.testing.assert_close(tok(2 * H) - z, 2 * (out - z), atol=1e-4, rtol=1e-4)
    gelu = PatchTokenizer(activation="gelu").eval()
    assert sum(isinstance(m, torch.nn.GELU) for m in gelu.modules()) == 3
    assert DuIN(n_chans=4, n_outputs=3, n_times=300, tokenizer_activation="gelu",
                n_blocks=1).count_parameters() == DuIN(n_chans=4, n_outputs=3, n_times=300,
                                                       n_blocks=1).count_parameters()


def test_sinusoidal_positions_and_depth_scaled_init():
    table = sinusoidal_table(40, 160)
    p, i = 7, 5
    assert table[p, 2 * i].item() == pytest.approx(math.sin(p / 1e4 ** (2 * i / 160)), abs=1e-6)
    assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 1e4 ** (2 * i / 160)),
                                                      abs=1e-6)
    torch.manual_seed(0)
    model = DuIN(n_chans=4, n_outputs=3, n_times=300)
    assert "encoder.positions" not in model.state_dict()  # fixed, rebuilt, never saved
    torch.testing.assert_close(model.encoder.positions, sinusoidal_table(3, 160))
    blocks = model.encoder.transformer.blocks
    s0 = blocks[0].q.weight.std().item()
    s3 = blocks[3].q.weight.std().item()
    assert s0 / s3 == pytest.approx(math.sqrt(8) / math.sqrt(2), rel=0.03)
    assert blocks[0].scale == pytest.approx(1 / 8)
    assert blocks[0].norm_q.normalized_shape == (64,)


def test_block_matches_a_reference_attention_computation():
    # the CPU path writes the attention out; CUDA uses F.scaled_dot_product_attention: same maths
    torch.manual_seed(21)
    block = DuINBlock(dropout=0.2).eval()
    x = torch.randn(3, 7, 160)
    B, N, _ = x.shape
    heads = lambda t: t.view(B, N, 8, 64).transpose(1, 2)  # noqa: E731
    q = block.norm_q(block.q(x).view(B, N, 8, 64)).transpose(1, 2)
    k = block.norm_k(block.k(x).view(B, N, 8, 64)).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, heads(block.v(x)), scale=1 / 8)
    h = block.norm_attn(x + block.proj(a.transpose(1, 2).reshape(B, N, 512)))
    want = block.norm_ffn(h + block.ffn.fc2(torch.relu(block.ffn.fc1(h))))
    torch.testing.assert_close(block(x), want, atol=1e-5, rtol=1e-5)
    # post-norm: every token of the output is layer-normalised
    out = block(x)
    torch.testing.assert_close(out.mean(-1), torch.zeros(3, 7), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ quantiser
def test_cosine_lookup_picks_max_cosine_code():
    torch.manual_seed(1)
    vq = VectorQuantizer(d_model=8, n_codes=20, d_code=4)
    z_e = vq.encode(torch.randn(50, 8))
    assert torch.allclose(z_e.norm(dim=1), torch.ones(50), atol=1e-5)
    codes = vq.lookup(z_e).numpy()
    C = vq.codebook.numpy()
    Z = z_e.detach().numpy()
    cos = (Z @ C.T) / np.linalg.norm(Z, axis=1)[:, None] / np.linalg.norm(C, axis=1)[None]
    np.testing.assert_array_equal(codes, cos.argmax(axis=1))


def test_vq_loss_value_and_output():
    torch.manual_seed(2)
    vq = VectorQuantizer(d_model=8, n_codes=6, d_code=4, beta=0.5).eval()
    z = torch.randn(3, 5, 8)
    out, loss, codes = vq(z)
    z_e = vq.encode(z).detach().numpy()
    z_q = vq.codebook.numpy()[codes.numpy()]
    assert loss.item() == pytest.approx(0.5 * np.mean((z_e - z_q) ** 2), rel=1e-5)
    expected = vq.proj_out(vq.norm(torch.from_numpy(z_q)))
    torch.testing.assert_close(out, expected)
    assert not bool(vq.initialised)  # eval mode: no k-means, no update


def test_ema_update_matches_hand_computation():
    vq = VectorQuantizer(d_model=4, n_codes=3, d_code=2, decay=0.9)
    cb = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    vq.codebook.copy_(torch.tensor(cb, dtype=torch.float32))
    vq.cluster_size.copy_(torch.tensor([2.0, 0.5, 1.0]))
    z = np.array([[0.8, 0.6], [0.6, 0.8], [0.0, 1.0]])
    codes = np.array([0, 0, 1])
    vq.ema_update(torch.tensor(z, dtype=torch.float32), torch.tensor(codes))
    d = 0.9
    counts = np.array([2.0, 1.0, 0.0])
    np.testing.assert_allclose(vq.cluster_size.numpy(), d * np.array([2.0, 0.5, 1.0])
                               + (1 - d) * counts, rtol=1e-6)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    m0 = unit(z[:2].mean(axis=0))
    m1 = unit(z[2])
    want = np.stack([unit(d * cb[0] + (1 - d) * m0), unit(d * cb[1] + (1 - d) * m1), cb[2]])
    np.testing.assert_allclose(vq.codebook.numpy(), want, rtol=1e-5, atol=1e-6)


def test_kmeans_init_happens_once_on_the_first_batch(monkeypatch):
    calls = []

    def counting(samples, n_clusters, n_iters=10, generator=None):
        calls.append((samples.shape, n_clusters, n_iters))
        return kmeans_cosine(samples, n_clusters, n_iters, generator)

    monkeypatch.setattr(duin_mod, "kmeans_cosine", counting)
    torch.manual_seed(3)
    vq = VectorQuantizer(d_model=8, n_codes=4, d_code=3)
    z1 = torch.randn(2, 10, 8)
    vq.eval()
    vq(z1)
    assert calls == [] and not bool(vq.initialised)  # eval batches do not initialise
    vq.train()
    vq(z1)
    assert calls == [((20, 3), 4, 10)] and bool(vq.initialised)
    # the codebook is the (EMA-updated) k-means solution of that batch: every code is close to
    # a normalised mean of batch vectors, and all are unit vectors
    assert torch.allclose(vq.codebook.norm(dim=1), torch.ones(4), atol=1e-5)
    vq(torch.randn(2, 10, 8))
    vq(torch.randn(2, 10, 8))
    assert len(calls) == 1
    # a reloaded, initialised quantiser never re-runs k-means
    vq2 = VectorQuantizer(d_model=8, n_codes=4, d_code=3)
    vq2.load_state_dict(vq.state_dict())
    vq2.train()(z1)
    assert len(calls) == 1


def test_kmeans_cosine_recovers_separated_directions():
    g = torch.Generator().manual_seed(0)
    dirs = torch.eye(3)
    samples = torch.cat([d + 0.05 * torch.randn(30, 3, generator=g) for d in dirs])
    means = kmeans_cosine(samples, 3, 10, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(means.norm(dim=1), torch.ones(3), atol=1e-5)
    best = (means @ dirs.T).max(dim=0).values  # every true direction has a mean close to it
    assert (best > 0.99).all()
    # more clusters than samples: drawn with replacement, still unit vectors
    means = kmeans_cosine(samples[:5], 8, 10)
    assert means.shape == (8, 3) and torch.allclose(means.norm(dim=1), torch.ones(8), atol=1e-5)


def test_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(5)
    model = _tiny_vqvae(beta=0.0)  # no VQ loss: the only path is the straight-through one
    X = torch.randn(4, 3, 400)
    loss, _ = model.training_loss(X)
    loss.backward()
    assert model.last_losses["vq"] == 0.0
    for name in ("encoder.subject.layers.0.weight", "encoder.tokenizer.convs.conv1.weight",
                 "encoder.transformer.blocks.0.q.weight", "quantizer.proj_in.fc1.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert not model.quantizer.codebook.requires_grad
    assert "quantizer.codebook" not in dict(model.named_parameters())


def test_vqvae_loss_is_reconstruction_plus_vq():
    torch.manual_seed(6)
    model = _tiny_vqvae().eval()
    model.quantizer.initialised.fill_(1.0)
    X = torch.randn(3, 3, 400)
    loss, out = model.training_loss(X)
    assert out is None
    rec = F.mse_loss(model(X), X)  # one subject: every channel weighted
    assert model.last_losses["rec"] == pytest.approx(rec.item(), rel=1e-5)
    assert loss.item() == pytest.approx(model.last_losses["rec"] + model.last_losses["vq"],
                                        rel=1e-6)


# ------------------------------------------------------------------ masked code model
def test_complementary_masks_cover_every_token_once():
    mask = complementary_masks(64, 40, 0.5, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (64, 40)
    assert (mask.sum(dim=1) == 20).all()  # floor(40 * 0.5) kept, 20 masked in view 1
    views = torch.stack([mask, ~mask])  # view 2 masks the complement
    assert (views.sum(dim=0) == 1).all()
    assert len({tuple(r) for r in mask.tolist()}) > 60  # random per sample
    odd = complementary_masks(8, 5, 0.5)
    assert (odd.sum(dim=1) == 3).all()  # floor(5 * 0.5) = 2 kept


def _trained_tiny_vqvae(n_chans=3):
    torch.manual_seed(7)
    vq = _tiny_vqvae(n_chans=n_chans)
    vq.train()
    vq.training_loss(torch.randn(6, n_chans, 400))  # k-means initialisation
    return vq.eval()


def test_mae_loss_is_ce_from_the_view_where_each_token_is_masked():
    vq = _trained_tiny_vqvae()
    torch.manual_seed(8)
    mae = DuINMAE(vqvae=vq, **TINY).eval()
    X = torch.randn(2, 3, 400)
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    l1, l2, logits = mae.view_logits(X, mask)
    # view 1 by hand: masked tokens replaced after the tokenizer, before the positions
    tok = mae.encoder.tokens(X, None)
    v1 = torch.where(mask[..., None], mae.mask_token, tok)
    torch.testing.assert_close(l1, mae.head(mae.encoder.transform(v1)))
    torch.testing.assert_close(logits, torch.where(mask[..., None], l1, l2))
    target = vq.quantize(X)
    loss, _ = mae.training_loss(X, mask=mask)
    want = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # a token's prediction never sees its own patch: perturbing patch 1 of trial 0 leaves the
    # prediction of token 1 unchanged (it comes from view 2, where token 1 is masked)
    X2 = X.clone()
    X2[0, :, 100:200] += 3.0
    _, _, logits2 = mae.view_logits(X2, mask)
    torch.testing.assert_close(logits2[0, 1], logits[0, 1])
    assert not torch.allclose(logits2[0, 0], logits[0, 0])


def test_mae_keeps_the_vqvae_frozen_and_in_eval():
    vq = _trained_tiny_vqvae()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    torch.manual_seed(9)
    mae = DuINMAE(vqvae=vq, **TINY)
    mae.train()
    assert not mae.vqvae.training and mae.encoder.training
    loss, _ = mae.training_loss(torch.randn(4, 3, 400))
    loss.backward()
    assert all(p.grad is None for p in mae.vqvae.parameters())
    for k, v in vq.state_dict().items():
        torch.testing.assert_close(v, before[k])  # no EMA, no batch-norm statistics
    assert mae.count_parameters("used") < mae.count_parameters("total")
    # a fresh encoder, not the VQ-VAE's
    assert not torch.equal(mae.encoder.subject.layers["0"].weight,
                           vq.encoder.subject.layers["0"].weight)
    with pytest.raises(ValueError, match="never been trained"):
        DuINMAE(vqvae=_tiny_vqvae(), **TINY).training_loss(torch.randn(2, 3, 400))


# ------------------------------------------------------------------ classifier
def test_classifier_init_from_mae_checkpoint_copies_exactly_the_encoder(tmp_path):
    vq = _trained_tiny_vqvae(n_chans=4)
    torch.manual_seed(10)
    mae = DuINMAE(vqvae=vq, **TINY)
    mae.training_loss(torch.randn(4, 4, 400))  # move batch-norm statistics away from defaults
    path = save_duin(mae, tmp_path / "mae.pt")
    with pytest.raises(FileExistsError):
        save_duin(mae, path)
    torch.manual_seed(11)
    clf = DuIN(n_chans=4, n_outputs=5, n_times=300, **TINY)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    keys = clf.load_pretrained(path)
    expected = sorted(k for k in before if k.startswith(
        ("encoder.subject.", "encoder.tokenizer.", "encoder.transformer.")))
    assert keys == expected
    src = mae.state_dict()
    after = clf.state_dict()
    for k in expected:  # from the MAE's own encoder, never from its frozen VQ-VAE
        torch.testing.assert_close(after[k], src[k])
    assert any(not torch.equal(src[k], src["vqvae." + k]) for k in expected
               if k.endswith("weight"))
    for k in before:
        if k not in expected:
            torch.testing.assert_close(after[k], before[k])  # head untouched
    assert any(k.endswith("running_mean") for k in keys)
    # from a VQ-VAE model too; wrong channel count or tokenizer is an error
    assert clf.load_pretrained(vq) == expected
    with pytest.raises(ValueError, match="shape"):
        DuIN(n_chans=5, n_outputs=5, n_times=300, **TINY).load_pretrained(path)
    with pytest.raises(ValueError, match="tokenizer_activation"):
        DuIN(n_chans=4, n_outputs=5, n_times=300, tokenizer_activation="gelu",
             **TINY).load_pretrained(path)
    with pytest.raises(ValueError, match="depth"):
        DuIN(n_chans=4, n_outputs=5, n_times=300, n_blocks=2).load_pretrained(path)


def test_random_shift_is_zero_filled_and_train_only(monkeypatch):
    X = torch.arange(1, 11, dtype=torch.float32).repeat(50, 2, 1)  # (50, 2, 10), no zeros
    out, s = random_shift(X, 3, generator=torch.Generator().manual_seed(0))
    assert s.abs().max() <= 3 and len(set(s.tolist())) > 3
    for b in range(50):
        k = int(s[b])
        ref = torch.zeros(10)
        if k >= 0:
            ref[k:] = X[b, 0, :10 - k]
        else:
            ref[:k] = X[b, 0, -k:]
        torch.testing.assert_close(out[b, 0], ref)
        torch.testing.assert_close(out[b, 1], ref)
    assert torch.equal(random_shift(X, 0)[0], X)

    calls = []
    real = duin_mod.random_shift

    def spy(Xb, max_shift, generator=None):
        calls.append(max_shift)
        return real(Xb, max_shift, generator=generator)

    monkeypatch.setattr(duin_mod, "random_shift", spy)
    torch.manual_seed(12)
    clf = DuIN(n_chans=2, n_outputs=3, n_times=300, max_shift=30, **TINY)
    Xc = torch.randn(4, 2, 300)
    y = torch.tensor([0, 1, 2, 0])
    clf.train()
    clf(Xc)
    clf.eval()
    with torch.no_grad():
        a, b = clf(Xc), clf(Xc)
    assert calls == [] and torch.equal(a, b)  # forward (validation, prediction): no shift
    clf.training_loss(Xc, y)
    assert calls == [30]


def test_official_quirks_sigmoid():
    torch.manual_seed(13)
    clf = DuIN(n_chans=3, n_outputs=4, n_times=300, max_shift=0, **TINY).eval()
    X = torch.randn(5, 3, 300)
    y = torch.tensor([0, 1, 2, 3, 0])
    with torch.no_grad():
        logits = clf(X)
        loss, _ = clf.training_loss(X, y)
        assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
        clf.official_quirks = True
        out = clf(X)
        torch.testing.assert_close(out, torch.sigmoid(logits))
        loss_q, _ = clf.training_loss(X, y)
        assert loss_q.item() == pytest.approx(F.cross_entropy(torch.sigmoid(logits), y).item(),
                                              rel=1e-6)
    # the sigmoid caps the softmax confidence at e / (e + 60) for 61 words
    probs = torch.softmax(torch.sigmoid(torch.full((1, 61), -50.0).index_fill(1,
                          torch.tensor([0]), 50.0)), dim=1)
    assert probs.max().item() == pytest.approx(math.e / (math.e + 60), rel=1e-4)


def test_channel_contributions_and_federation_split():
    torch.manual_seed(14)
    clf = DuIN(n_chans=6, n_outputs=3, n_times=300, **TINY)
    with torch.no_grad():
        clf.subject_layer.weight[:, 2] *= 10
    c = clf.channel_contributions()
    assert c.shape == (6,) and int(np.argmax(c)) == 2
    np.testing.assert_allclose(c, np.abs(clf.subject_layer.weight.detach().numpy()).mean(0))
    assert clf.channel_weights().shape == (16, 6)
    shared = clf.shared_parameter_names()
    assert not any(n.startswith("encoder.subject.") for n in shared)
    assert "head.fc2.weight" in shared and "encoder.tokenizer.convs.conv1.weight" in shared
    local = set(dict(clf.named_parameters())) - set(shared)
    assert local == {"encoder.subject.layers.0.weight", "encoder.subject.layers.0.bias"}
    try:
        from bcikit.federated.state import shared_keys
    except ImportError:  # pragma: no cover - the federated package is optional here
        return
    keys = shared_keys(clf)
    assert not any(k.startswith("encoder.subject.") for k in keys)
    assert not any("norm" in k or ".bn" in k for k in keys)  # normalisation stays local
    assert "encoder.transformer.blocks.0.q.weight" in keys


# ------------------------------------------------------------------ several subjects
def test_multi_subject_vqvae_masks_padded_channels():
    torch.manual_seed(15)
    vq = DuINVQVAE(subjects={"A": 2, "B": 4}, n_times=300, n_codes=8, n_decoder_blocks=1,
                   **TINY)
    assert vq.subjects == {"A": 2, "B": 4}
    X = torch.randn(4, 4, 300)
    codes = torch.tensor([0, 1, 1, 0])
    X[codes == 0, 2:] = 0.0
    vq.train()
    vq.training_loss(X, codes)  # k-means on a first batch
    vq.eval()
    out = vq(X, codes)
    assert out.shape == (4, 4, 300)
    assert (out[codes == 0, 2:] == 0).all() and (out[codes == 1, 2:] != 0).any()
    loss1, _ = vq.training_loss(X, codes)
    X2 = X.clone()
    X2[codes == 0, 2:] = 5.0  # padded channels of subject A: ignored by layer and loss
    loss2, _ = vq.training_loss(X2, codes)
    assert loss1.item() == pytest.approx(loss2.item(), rel=1e-6)
    with pytest.raises(ValueError, match="pass the subject"):
        vq(X)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vq.training_loss(X, torch.tensor([0, 1, 2, 0]))
    mae = DuINMAE(vqvae=vq, **TINY)  # subjects follow the VQ-VAE
    assert mae.subjects == {"A": 2, "B": 4}
    loss, _ = mae.training_loss(X, codes)
    assert math.isfinite(loss.item())
    clf = DuIN(n_chans=4, n_outputs=3, n_times=300, **TINY)
    with pytest.raises(ValueError, match="pass subject="):
        clf.load_pretrained(vq)
    keys = clf.load_pretrained(vq, subject="B")
    torch.testing.assert_close(clf.subject_layer.weight, vq.encoder.subject.layers["B"].weight)
    assert "encoder.subject.layers.0.weight" in keys


# ------------------------------------------------------------------ checkpoints, errors
def test_checkpoint_round_trip_plain_config(tmp_path):
    vq = _trained_tiny_vqvae()
    path = save_duin(vq, tmp_path / "vq.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["class"] == "DuINVQVAE" and isinstance(raw["config"], dict)
    assert all(isinstance(v, (int, float, str, dict, type(None))) for v in raw["config"].values())
    vq2 = load_duin(path).eval()
    X = torch.randn(2, 3, 400)
    torch.testing.assert_close(vq2(X), vq(X))
    torch.testing.assert_close(vq2.quantize(X), vq.quantize(X))
    torch.manual_seed(16)
    mae = DuINMAE(vqvae=vq, **TINY)
    mae2 = load_duin(save_duin(mae, tmp_path / "mae.pt"))
    assert isinstance(mae2, DuINMAE) and bool(mae2.vqvae.quantizer.initialised)
    for k, v in mae.state_dict().items():
        torch.testing.assert_close(mae2.state_dict()[k], v)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_duin(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_duin(tmp_path / "missing.pt")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sfreq.*resample"):
        DuIN(n_chans=4, n_outputs=3, n_times=300, sfreq=512)
    with pytest.raises(ValueError, match="multiple of 100"):
        DuIN(n_chans=4, n_outputs=3, n_times=350)
    with pytest.raises(ValueError, match="tokenizer_activation"):
        DuIN(n_chans=4, n_outputs=3, n_times=300, tokenizer_activation="relu")
    with pytest.raises(ValueError, match="n_chans"):
        DuIN(n_outputs=3, n_times=300)
    clf = DuIN(n_chans=4, n_outputs=3, n_times=300, n_blocks=1)
    with pytest.raises(ValueError, match=r"\(batch, 4, T\)"):
        clf(torch.randn(2, 5, 300))
    with pytest.raises(ValueError, match="differ"):
        DuINMAE(n_chans=5, vqvae=_tiny_vqvae())


# ------------------------------------------------------------------ training (CPU, tiny)
def _fit(model, X, y, *, loss=None, epochs=25, lr=2e-3, callbacks=()):
    trainer = Trainer(model, epochs=epochs, batch_size=len(X), lr=lr, loss=loss, device="cpu",
                      seed=0, verbose=False, optimizer=duin_optimizer(), callbacks=callbacks)
    trainer.fit(X, y)
    return [row["train_loss"] for row in trainer.history_]


def _smooth_trials(n, n_chans, n_times, g):
    """Sums of three sinusoids with random amplitudes and phases, plus a little noise."""
    t = torch.arange(n_times) / 1000.0
    freqs = torch.tensor([5.0, 11.0, 23.0])[: n_chans, None]
    amp = torch.randn(n, n_chans, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, n_chans, 1, generator=g)
    X = amp * torch.sin(2 * math.pi * freqs * t + phase)
    return X + 0.1 * torch.randn(n, n_chans, n_times, generator=g)


def test_tiny_stages_overfit_a_tiny_batch():
    g = torch.Generator().manual_seed(17)
    X = _smooth_trials(8, 3, 400, g)
    torch.manual_seed(17)
    vq = _tiny_vqvae()
    monitor = CodebookMonitor()
    hist = _fit(vq, X, np.zeros(8, dtype=np.int64), loss=stage_loss, epochs=24,
                callbacks=[monitor])
    assert hist[-1] < 0.8 * hist[0]
    assert bool(vq.quantizer.initialised)
    usage = vq.codebook_usage()
    assert 0 < usage["used_fraction"] <= 1 and usage["n_codes"] == 16
    assert len(monitor.history_) == 24 and monitor.history_[-1]["n_dead"] == usage["n_dead"]
    assert vq.code_histogram(X).sum() == 8 * 4
    vq.eval()
    torch.manual_seed(18)
    mae = DuINMAE(vqvae=vq, **TINY)
    hist = _fit(mae, X, np.zeros(8, dtype=np.int64), loss=stage_loss, epochs=15)
    assert hist[-1] < 0.5 * hist[0]
    assert mae.last_losses["accuracy"] >= mae.last_losses["majority"]
    # classifier from the MAE: 4 classes told apart by their frequency (shift-invariant)
    y = np.arange(8) % 4
    t = torch.arange(300) / 1000.0
    f = torch.tensor([10.0, 20.0, 40.0, 80.0])[torch.tensor(y)][:, None, None]
    Xc = (torch.sin(2 * math.pi * f * t + 2 * math.pi * torch.rand(8, 3, 1, generator=g))
          + 0.3 * torch.randn(8, 3, 300, generator=g))
    torch.manual_seed(19)
    clf = DuIN(n_chans=3, n_outputs=4, n_times=300, max_shift=20, **TINY)
    clf.load_pretrained(mae)
    hist = _fit(clf, Xc, y, epochs=30, lr=1e-3)
    assert hist[-1] < 0.5 * hist[0]
    # eval mode (running statistics): bias-corrected batch norms are usable after 30 steps
    clf.eval()
    with torch.no_grad():
        assert (clf(Xc).argmax(1).numpy() == y).mean() >= 0.75  # chance 0.25


def test_batch_norm_running_statistics_are_bias_corrected():
    """Eval mode must see the statistics training saw, from the first batch on.

    With plain ``BatchNorm1d`` (momentum 0.1, running variance starting at 1) the tokenizer's
    eval-mode output was ~30x smaller than in training for the first ~100 steps (the subject
    layer's std-0.02 init gives the first convolution a variance of ~1e-3), so every input got
    nearly the same tokens: one VQ code, one class.
    """
    torch.manual_seed(3)
    clf = DuIN(n_chans=6, n_outputs=3, n_times=400, **TINY)
    X = [torch.randn(8, 6, 400) for _ in range(5)]
    clf.train()
    with torch.no_grad():
        tok_train = clf.encoder.tokens(X[0], None)
        clf.eval()
        tok_eval = clf.encoder.tokens(X[0], None)
    assert tok_train.std() == pytest.approx(1.0, rel=0.05)
    assert tok_eval.std() == pytest.approx(float(tok_train.std()), rel=0.02)
    torch.testing.assert_close(tok_eval, tok_train, atol=0.02, rtol=0.02)
    # the first batches are averaged equally (momentum 1/k), then the usual momentum 0.1
    bn = clf.encoder.tokenizer.convs.bn1
    assert isinstance(bn, duin_mod.RunningStatsBatchNorm1d)
    clf.train()
    means = []
    with torch.no_grad():
        for xb in X:
            pre = clf.encoder.tokenizer.convs.conv1(
                clf.encoder.subject(xb, None).reshape(-1, 100, 16).transpose(1, 2))
            means.append(pre.mean(dim=(0, 2)))
            clf.encoder.tokens(xb, None)
    # X[0] was seen twice (above), so 6 batches: running mean = average of all 6 batch means
    torch.testing.assert_close(bn.running_mean, torch.stack([means[0]] + means).mean(0),
                               atol=1e-6, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 6 and bn.momentum == pytest.approx(1 / 6)
    for _ in range(10):
        with torch.no_grad():
            clf.encoder.tokens(X[1], None)
    assert bn.momentum == pytest.approx(0.1)
    assert "convs.bn1.running_var" in clf.encoder.tokenizer.state_dict()


def test_dead_code_restart_reseeds_only_codes_unused_for_k_steps():
    vq = VectorQuantizer(d_model=8, n_codes=4, d_code=3, restart_after=2)
    assert VectorQuantizer(d_model=8, n_codes=4, d_code=3).restart_after is None  # the spec
    book = torch.eye(4, 3)
    book[3] = torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2)
    vq.codebook.copy_(book)
    z = duin_mod.l2norm(torch.tensor([[1.0, 0.1, 0.0], [0.1, 1.0, 0.0]]))
    vq.ema_update(z, torch.tensor([0, 1]))  # codes 2, 3 unused once
    assert vq.n_restarted == 0
    before = vq.codebook.clone()
    vq.ema_update(z, torch.tensor([0, 0]))  # 2, 3 unused twice -> re-seeded; 1 once
    assert vq.n_restarted == 2
    torch.testing.assert_close(vq.codebook[1], before[1])  # unused once: unchanged
    for k in (2, 3):  # a row of z
        assert min(float((vq.codebook[k] - r).abs().max()) for r in z) < 1e-6
    with pytest.raises(ValueError, match="restart_after"):
        VectorQuantizer(restart_after=0)
    with pytest.raises(ValueError, match="restart_dead_codes"):
        DuINVQVAE(n_chans=2, n_times=400, restart_dead_codes=0)


def _smooth_prototypes(seed):
    """8 smooth 100-sample patterns on 3 channels (one token each)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(100) / 100.0
    f = 1.0 + 3.0 * torch.rand(8, 3, 1, generator=g)
    return 2.0 * torch.sin(2 * math.pi * f * t + 6.3 * torch.rand(8, 3, 1, generator=g))


def _prototype_crops(n, protos, n_tokens, seed, *, cyclic=False):
    """Crops of ``n_tokens`` patterns plus noise: drawn independently, or (``cyclic``) from a
    random start, pattern k + 1 following pattern k."""
    g = torch.Generator().manual_seed(seed)
    if cyclic:
        lab = (torch.randint(0, len(protos), (n, 1), generator=g)
               + torch.arange(n_tokens)) % len(protos)
    else:
        lab = torch.randint(0, len(protos), (n, n_tokens), generator=g)
    X = protos[lab].permute(0, 2, 1, 3).reshape(n, protos.shape[1], -1)
    return X + 0.2 * torch.randn(X.shape, generator=g)


def _fit_briefly(model, X, steps, *, weight_decay, seed):
    """``steps`` AdamW steps (lr 1e-3) of ``model.training_loss`` on random batches of 32."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        loss, _ = model.training_loss(X[torch.randint(0, len(X), (32,), generator=g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_vqvae_uses_its_codebook_on_held_out_structured_crops():
    """Spec §6.2 on data with known structure: each 100 ms token is one of 8 smooth patterns.

    A briefly trained tiny VQ-VAE must use > 25 % of its 16 codes on HELD-OUT crops in eval
    mode and reconstruct them better than each crop's per-channel mean. With the spec's
    quantiser alone (no restarts) the codebook goes stale and 2-6 codes stay in use, depending
    on the seed (session 4); ``restart_dead_codes=5`` (bcikit option) gave 6-9 on 3 seeds.
    """
    protos = _smooth_prototypes(5)
    Xtr = _prototype_crops(256, protos, 4, seed=6)
    Xte = _prototype_crops(64, protos, 4, seed=7)
    torch.manual_seed(8)
    vq = _fit_briefly(_tiny_vqvae(dropout=0.2, restart_dead_codes=5), Xtr, 60,
                      weight_decay=0.01, seed=9)
    hist = vq.code_histogram(Xte)  # eval mode
    assert (hist > 0).mean() > 0.25, hist
    assert vq.quantizer.n_restarted > 0
    vq.eval()
    with torch.no_grad():
        rec = float(((vq(Xte) - Xte) ** 2).mean())
    channel_mean = float(((Xte - Xte.mean(dim=2, keepdim=True)) ** 2).mean())
    assert rec < 0.9 * channel_mean


def test_mae_learns_masked_codes_that_the_context_predicts():
    """Spec §6.3 on data with known structure: the masked-code stage must learn codes that the
    neighbouring tokens determine, and only those.

    Each 100 ms token is one of 8 smooth patterns. In "cyclic" crops pattern n + 1 follows
    pattern n, so a masked token's pattern (and so its VQ-VAE code) follows from its unmasked
    neighbours; in "shuffled" crops the patterns are drawn independently, so nothing but the
    code frequencies can be learnt. A briefly trained tiny MAE must score well above the
    majority-code rate on held-out cyclic crops, and far above what the same recipe reaches on
    shuffled ones. A model that saw the masked patches themselves would score high on both, so
    the second check fails it (predicting from the unmasked view: 0.97 against 0.84).
    """
    protos = _smooth_prototypes(15)
    torch.manual_seed(16)
    Xvq = torch.cat([_prototype_crops(128, protos, 4, 17, cyclic=True),
                     _prototype_crops(128, protos, 4, 18)])
    vq = _fit_briefly(_tiny_vqvae(dropout=0.2, restart_dead_codes=5), Xvq, 60,
                      weight_decay=0.01, seed=19).eval()
    scores = {}
    for cyclic in (True, False):
        torch.manual_seed(20)
        mae = _fit_briefly(DuINMAE(vqvae=vq, **TINY),
                           _prototype_crops(256, protos, 4, 21, cyclic=cyclic), 80,
                           weight_decay=0.05, seed=22)
        scores[cyclic] = mae.score_codes(_prototype_crops(64, protos, 4, 23, cyclic=cyclic),
                                         seed=24)
    cyc, shuf = scores[True], scores[False]
    assert cyc["accuracy"] > max(0.6, 2.5 * cyc["majority"]), scores
    assert cyc["accuracy"] > shuf["accuracy"] + 0.3, scores


# ------------------------------------------------------------------ recipe
def test_epoch_lr_warmup_then_half_cosine():
    kw = dict(epochs=10, warmup_epochs=4, lr_max=1e-3, lr_min=1e-4)
    lrs = [epoch_lr(e, **kw) for e in range(10)]
    np.testing.assert_allclose(lrs[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4] == pytest.approx(1e-3)
    p = 3 / 6
    assert lrs[7] == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * p)))
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] > 1e-4
    assert epoch_lr(12, **kw) == 1e-4
    assert STAGE_RECIPES["classifier"]["epochs"] == 200


def test_recipe_in_the_trainer():
    torch.manual_seed(20)
    model = DuIN(n_chans=2, n_outputs=2, n_times=200, max_shift=0, **TINY)
    groups = param_groups(model.parameters(), 0.05)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"])
    assert all(p.ndim <= 1 for p in groups[1]["params"])
    kw = trainer_kwargs("classifier", epochs=5, warmup_epochs=2, lr_max=1e-3, lr_min=1e-4)
    assert kw["lr"] == 1e-3 and kw["weight_decay"] == 0.05 and kw["batch_size"] == 32
    kw["batch_size"] = 2
    X = torch.randn(6, 2, 200)
    y = np.array([0, 1, 0, 1, 0, 1])
    trainer = Trainer(model, device="cpu", seed=0, verbose=False, **kw).fit(X, y)
    got = [row["lr"] for row in trainer.history_]
    want = [epoch_lr(e, epochs=5, warmup_epochs=2, lr_max=1e-3, lr_min=1e-4) for e in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    with pytest.raises(ValueError, match="lr_min"):
        duin_scheduler(1, 1.0)(torch.optim.AdamW(model.parameters(), lr=1e-3),
                               steps_per_epoch=1, epochs=2)
    with pytest.raises(ValueError, match="stage"):
        trainer_kwargs("pretrain")


# ------------------------------------------------------------------ distributed quantiser
def _vq_rank_worker():
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank = dist.get_rank()
    torch.manual_seed(100 + rank)  # different k-means draws on each rank unless broadcast
    vq = VectorQuantizer(d_model=6, n_codes=5, d_code=3).train()
    z = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(rank))
    vq(z)
    after_init_and_update = vq.codebook.clone()
    return {"codebook": after_init_and_update, "counts": vq.cluster_size.clone(),
            "z": z, "rank": rank}


@pytest.mark.slow
def test_kmeans_on_rank0_and_ema_statistics_summed_over_processes():
    from bcikit.train.ddp import run_distributed

    r0, r1 = run_distributed(_vq_rank_worker, 2, "gloo")
    torch.testing.assert_close(r0["codebook"], r1["codebook"])  # one codebook everywhere
    torch.testing.assert_close(r0["counts"], r1["counts"])
    # the counts are the EMA of the codes of both ranks' batches
    assert r0["counts"].sum().item() == pytest.approx((1 - 0.99) * 16, rel=1e-5)


def test_codebook_usage_sees_a_collapse_the_dead_count_misses(caplog):
    """Top-code share and perplexity come from the EMA counts; the monitor warns once when one
    code holds more than half of them, even while few codes count as dead (session 12: a
    40-epoch pre-training used 2 codes on held-out crops while ``used_fraction`` read 0.60; the
    spec's 400-epoch recipe reached an EMA share of 0.997 for one code)."""
    vq = _tiny_vqvae()
    usage = vq.codebook_usage()
    assert math.isnan(usage["top_share"]) and math.isnan(usage["perplexity"])  # no step yet
    counts = torch.zeros(16)
    counts[:2] = torch.tensor([3.0, 1.0])
    vq.quantizer.cluster_size.copy_(counts)
    usage = vq.codebook_usage()
    assert usage["top_share"] == pytest.approx(0.75)
    assert usage["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75)
                                                           + 0.25 * math.log(0.25))))
    assert usage["n_dead"] == 14
    # collapsed: one code holds 99.7 % while every code still counts as alive
    counts = torch.full((16,), 0.2)
    counts[5] = 1000.0
    vq.quantizer.cluster_size.copy_(counts)
    usage = vq.codebook_usage()
    assert usage["n_dead"] == 0 and usage["top_share"] > 0.99 and usage["perplexity"] < 1.1
    monitor = CodebookMonitor()
    trainer = type("T", (), {"model": vq})()
    with caplog.at_level("WARNING", logger="bcikit"):
        monitor.on_epoch_end(trainer, 1, {})
        monitor.on_epoch_end(trainer, 2, {})
    warned = [r for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(warned) == 1 and "restart_dead_codes" in warned[0].getMessage()
    assert monitor.history_[-1]["top_share"] == usage["top_share"]
    # a healthy codebook: no warning
    vq.quantizer.cluster_size.fill_(1.0)
    caplog.clear()
    with caplog.at_level("WARNING", logger="bcikit"):
        CodebookMonitor().on_epoch_end(trainer, 1, {})
    assert not caplog.records
    assert vq.codebook_usage()["perplexity"] == pytest.approx(16.0)
