"""engines/: the real models built with random weights and loaded through the user's path."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from dupecheck.engines import MODELS, embed_images, get_model_spec, load_engine
from dupecheck.engines.weights import cached_weights, file_sha256, resolve_weights, torch_hub_dir
from dupecheck.errors import EXIT_UNUSABLE, UsageError, WeightsUnavailable
from helpers import synthetic_photo


def inputs(spec, n=3):
    return np.stack([spec.to_input(synthetic_photo(s, (400, 300))) for s in range(n)])


def test_registry_holds_both_models_with_their_preprocessing():
    r50, clip = get_model_spec("resnet50"), get_model_spec("mobileclip-s2")
    assert (r50.dim, r50.resize, r50.crop) == (2048, 232, 224)
    assert (clip.dim, clip.resize, clip.crop, clip.mean, clip.std) == (
        512, 256, 256, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert r50.preprocessing != clip.preprocessing
    with pytest.raises(UsageError, match="unknown model 'vgg'.*mobileclip-s2"):
        get_model_spec("vgg")


@pytest.mark.parametrize("name,fixture", [("resnet50", "resnet50_weights"),
                                          ("mobileclip-s2", "mobileclip_weights")])
def test_real_model_loads_random_weights_through_the_user_path(name, fixture, request):
    spec = MODELS[name]
    weights = request.getfixturevalue(fixture)
    engine = load_engine(spec, weights)
    vectors = embed_images(engine, inputs(spec), batch_size=2)
    assert vectors.shape == (3, spec.dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The weights were really loaded: the engine equals the model built straight from the
    # checkpoint with the libraries' own code, and other weights give other vectors.
    reference = _reference_embeddings(name, weights, inputs(spec))
    assert np.allclose(vectors, reference, atol=2e-4), np.abs(vectors - reference).max()
    other = request.getfixturevalue(f"other_{fixture}")
    assert not np.allclose(load_engine(spec, other).embed_batch(inputs(spec)[:1])[0],
                           vectors[0], atol=1e-2)


def _reference_embeddings(name: str, weights, pixels: np.ndarray) -> np.ndarray:
    """Embeddings computed without dupecheck's loading code: eager torch, no ONNX."""
    import torch

    x = torch.from_numpy(pixels)
    if name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.fc = torch.nn.Identity()
        module = model.eval()
    else:
        import open_clip
        from safetensors.torch import load_file

        model = open_clip.create_model("MobileCLIP-S2", pretrained=None)
        model.load_state_dict(load_file(str(weights)))
        module = model.visual.eval()
    with torch.inference_mode():
        out = module(x).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_resnet50_drops_the_classifier_and_loads_the_checkpoint(resnet50_weights):
    import torch

    from dupecheck.engines.torch_models import resnet50_module

    spec = MODELS["resnet50"]
    model = resnet50_module(resnet50_weights, spec)
    assert isinstance(model.fc, torch.nn.Identity)
    state = torch.load(resnet50_weights, weights_only=True)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_mobileclip_is_the_reparameterised_image_tower(mobileclip_weights):
    import torch
    from safetensors.torch import load_file

    from dupecheck.engines.torch_models import mobileclip_s2_module

    spec = MODELS["mobileclip-s2"]
    visual = mobileclip_s2_module(mobileclip_weights, spec)
    assert not hasattr(visual, "transformer")  # no text tower
    x = torch.from_numpy(inputs(spec, 1))
    with torch.inference_mode():
        assert visual(x).shape == (1, 512)
    # Reparameterised: every train-time multi-branch block is fused into one conv, which
    # the unfused tower does not have, and the function is the same.
    fused = [m for m in visual.modules() if hasattr(m, "reparam_conv")]
    assert fused and all(m.reparam_conv is not None for m in fused)
    unfused = mobileclip_s2_module(mobileclip_weights, spec, reparameterize=False).eval()
    assert all(m.reparam_conv is None for m in unfused.modules() if hasattr(m, "reparam_conv"))
    with torch.inference_mode():
        a, b = visual(x)[0], unfused(x)[0]
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.9999
    assert load_file  # safetensors is what the weights were read with


def test_preprocessing_equals_the_reference_transforms():
    """Our PIL/numpy preprocessing against torchvision's and open_clip's own transforms."""
    import open_clip
    from torchvision.models import ResNet50_Weights

    photos = [synthetic_photo(s, size) for s, size in
              ((1, (640, 480)), (2, (480, 640)), (3, (1000, 333)), (4, (257, 300)))]
    r50 = MODELS["resnet50"]
    ref_r50 = ResNet50_Weights.IMAGENET1K_V2.transforms()
    clip = MODELS["mobileclip-s2"]
    cfg = open_clip.get_pretrained_cfg("MobileCLIP-S2", "datacompdr")
    ref_clip = open_clip.image_transform(clip.crop, is_train=False, mean=cfg["mean"],
                                         std=cfg["std"], interpolation=cfg["interpolation"],
                                         resize_mode=cfg["resize_mode"])
    for img in photos:
        for spec, ref in ((r50, ref_r50), (clip, ref_clip)):
            ours = spec.to_input(img)
            theirs = ref(img).numpy()
            assert ours.shape == theirs.shape
            # Same PIL resize; the difference is float rounding only (stated bound: 1e-5).
            assert np.abs(ours - theirs).max() < 1e-5, spec.name


def test_a_pickle_checkpoint_is_refused_without_executing_it(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"conv1.weight": Evil()}))
    with pytest.raises(WeightsUnavailable, match="not a loadable checkpoint") as info:
        load_engine(MODELS["resnet50"], bad)
    assert info.value.exit_code == EXIT_UNUSABLE
    assert not marker.exists()


def test_a_checkpoint_of_another_model_is_refused(mobileclip_weights, resnet50_weights):
    with pytest.raises(WeightsUnavailable, match="not a resnet50 checkpoint"):
        load_engine(MODELS["resnet50"], mobileclip_weights)
    with pytest.raises(WeightsUnavailable, match="not a mobileclip-s2 checkpoint"):
        load_engine(MODELS["mobileclip-s2"], resnet50_weights)


def test_garbage_checkpoint_is_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsUnavailable):
        load_engine(MODELS["resnet50"], junk)


def test_weights_come_from_the_torch_cache_when_present(resnet50_weights):
    spec = MODELS["resnet50"]
    assert cached_weights(spec) is None
    target = torch_hub_dir() / "checkpoints" / "resnet50-11ad3fa6.pth"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(resnet50_weights.read_bytes())
    try:
        assert resolve_weights(spec) == target
    finally:
        target.unlink()


def test_no_weights_and_no_download_says_what_to_get(monkeypatch):
    import dupecheck.engines.weights as w

    def offline(url, dest):
        raise OSError("Name or service not known")

    monkeypatch.setattr(w, "download_checked", offline)
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights(MODELS["resnet50"])
    text = str(info.value)
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in text
    assert "hub/checkpoints" in text and "--weights" in text
    with pytest.raises(WeightsUnavailable) as info:
        resolve_weights(MODELS["mobileclip-s2"])  # HF_HUB_OFFLINE=1 in tests
    assert "open_clip_model.safetensors" in str(info.value)
    assert "apple/MobileCLIP-S2-OpenCLIP" in str(info.value)


def test_weights_hash_is_cached_by_stat_and_notices_changes(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 1000)
    first = file_sha256(f)
    assert file_sha256(f) == first
    f.write_bytes(b"b" * 1001)
    assert file_sha256(f) != first


def test_explicit_weights_must_exist(tmp_path):
    with pytest.raises(WeightsUnavailable, match="weights file not found"):
        resolve_weights(MODELS["resnet50"], tmp_path / "nope.pth")


@pytest.mark.parametrize("name,fixture", [("resnet50", "resnet50_weights"),
                                          ("mobileclip-s2", "mobileclip_weights")])
def test_onnx_and_torch_engines_agree(name, fixture, request):
    spec = MODELS[name]
    weights = request.getfixturevalue(fixture)
    pixels = inputs(spec, 4)
    via_torch = load_engine(spec, weights, "torch").embed_batch(pixels)
    via_onnx = load_engine(spec, weights, "onnx").embed_batch(pixels)
    assert type(load_engine(spec, weights, "onnx")).__name__ == "OnnxEngine"
    cosines = (via_torch * via_onnx).sum(axis=1)
    assert cosines.min() >= 0.9999, cosines
    # Dynamic batch: one image at a time gives the same rows.
    single = load_engine(spec, weights, "onnx").embed_batch(pixels[2:3])
    assert float(single[0] @ via_onnx[2]) >= 0.99999


def test_the_onnx_export_is_cached_by_weights(resnet50_weights, monkeypatch, tmp_path):
    from dupecheck.engines import onnx_engine, resnet_onnx
    from dupecheck.engines.weights import file_sha256

    spec = MODELS["resnet50"]
    load_engine(spec, resnet50_weights, "onnx")
    path = onnx_engine.onnx_cache_path(spec, file_sha256(resnet50_weights))
    assert path.is_file()

    def no_export(*a, **kw):
        raise AssertionError("exported again")

    monkeypatch.setattr(resnet_onnx, "build_resnet50_onnx", no_export)  # no torch for it
    load_engine(spec, resnet50_weights, "onnx")  # from the cache
    other = tmp_path / "other.pth"
    import torch
    import torchvision

    torch.save(torchvision.models.resnet50(weights=None).state_dict(), other)
    with pytest.raises(AssertionError, match="exported again"):
        load_engine(spec, other, "onnx")  # other weights: another cache entry


def test_the_optimized_graph_is_saved_once_and_gives_the_same_embeddings(resnet50_weights):
    """The first ONNX session optimizes the graph and saves it beside the model, its
    weights in a file of their own that later sessions map; the next session loads that
    without optimizing, and embeds exactly as the first did. A damaged or cut copy is
    replaced, never trusted."""
    from dupecheck.engines import onnx_engine
    from dupecheck.engines.weights import file_sha256

    spec = MODELS["resnet50"]
    pixels = inputs(spec, 3)
    path = onnx_engine.onnx_cache_path(spec, file_sha256(resnet50_weights))
    load_engine(spec, resnet50_weights, "onnx")  # exported (if not yet) and optimized
    optimized = onnx_engine.optimized_path(path)
    graph = optimized / onnx_engine.OPTIMIZED_GRAPH
    weights = optimized / onnx_engine.OPTIMIZED_WEIGHTS
    shutil.rmtree(optimized, ignore_errors=True)
    legacy = optimized.with_name(f"{optimized.name}.onnx")  # the one-file copy of 1.0
    legacy.write_bytes(b"an old optimized copy")
    first = onnx_engine.OnnxEngine(spec, path).embed_batch(pixels)
    assert graph.is_file() and not legacy.exists()
    # The weights are outside the graph: the graph is small, the weights file holds them.
    assert graph.stat().st_size < 1_000_000 < 90_000_000 < weights.stat().st_size
    saved = graph.stat().st_mtime_ns
    engine = onnx_engine.OnnxEngine(spec, path)
    second = engine.embed_batch(pixels)
    assert graph.stat().st_mtime_ns == saved  # loaded, not optimized again
    # Its idle threads sleep: spinning would take CPU from decoding and the search.
    options = engine.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    np.testing.assert_allclose(first, second, atol=1e-6)
    del engine
    graph.write_bytes(b"damaged")
    third = onnx_engine.OnnxEngine(spec, path).embed_batch(pixels)
    np.testing.assert_allclose(first, third, atol=1e-6)
    assert graph.stat().st_size > 1000
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:  # cut short
        fh.truncate(size // 2)
    fourth = onnx_engine.OnnxEngine(spec, path).embed_batch(pixels)
    np.testing.assert_allclose(first, fourth, atol=1e-6)
    assert weights.stat().st_size == size
    assert not list(optimized.parent.glob(".*.tmp"))  # no half-written copy left behind


def test_auto_engine_is_onnx_without_an_accelerator(monkeypatch):
    from dupecheck.engines import base

    monkeypatch.setattr(base, "accelerator_present", lambda: False)
    assert base.choose_engine("auto") == "onnx"
    monkeypatch.setattr(base, "accelerator_present", lambda: True)
    assert base.choose_engine("auto") == "torch"
    assert base.choose_engine("torch") == "torch"
    with pytest.raises(UsageError, match="unknown engine"):
        base.choose_engine("tensorrt")


def test_draft_decoding_stays_close_to_the_reference_on_real_photos(real_photos):
    """The bound we state: decoded in full, our preprocessing equals torchvision's
    (< 1e-5); with the draft decode the index uses (JPEG's, or a whole-factor reduce
    for HEIC and other formats), the mean absolute pixel
    difference is under 1% (measured 0.6%), under 3% on the worst photo (measured 2.6%),
    while single pixels at sharp edges can differ by up to ~0.5."""
    from PIL import Image, ImageOps
    from pillow_heif import register_heif_opener
    from torchvision.models import ResNet50_Weights

    register_heif_opener()

    from dupecheck.imaging import decode

    spec = MODELS["resnet50"]
    ref = ResNet50_Weights.IMAGENET1K_V2.transforms()
    std = np.array(spec.std, np.float32)[:, None, None]
    means = []
    paths = sorted(real_photos.glob("jpg__*"))[:20] + sorted(real_photos.glob("heic__*"))
    for path in paths:
        data = path.read_bytes()
        reference = ref(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).numpy()
        full = spec.to_input(decode(data, path.name).image)
        assert np.abs(full - reference).max() < 1e-5, path.name
        drafted = spec.to_input(decode(data, path.name, draft=spec.archive_draft_size).image)
        means.append(float((np.abs(drafted - reference) * std).mean()))
    assert np.mean(means) < 0.01 and max(means) < 0.03, means
