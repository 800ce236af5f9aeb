"""engines/checkpoint.py and engines/resnet_onnx.py: ResNet-50 without PyTorch, the same
embeddings as the torch export, and its download checked by the hash in its name."""

from __future__ import annotations

import io
import pickle
import shutil
import zipfile

import numpy as np
import pytest

from dupecheck.engines import MODELS
from dupecheck.engines.checkpoint import read_state_dict
from dupecheck.engines.weights import download_checked
from dupecheck.errors import EXIT_UNUSABLE, WeightsUnavailable
from dupecheck.imaging import decode
from helpers import PHOTOS

SPEC = MODELS["resnet50"]


def test_the_reader_gives_what_torch_load_gives(resnet50_weights):
    import torch

    ours = read_state_dict(resnet50_weights)
    theirs = torch.load(resnet50_weights, map_location="cpu", weights_only=True)
    assert list(ours) == list(theirs) and len(ours) == 320
    for name, tensor in theirs.items():
        assert ours[name].dtype == tensor.numpy().dtype, name
        assert np.array_equal(ours[name], tensor.numpy()), name


def test_a_view_into_a_shared_storage_is_read_as_torch_reads_it(tmp_path):
    """Tensors saved as strided views of one storage (a transpose, a slice)."""
    import torch

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"t": base.t(), "s": base[1:, 2:4], "n": torch.tensor(7), "h": base.half()}
    path = tmp_path / "views.pth"
    torch.save(state, path)
    ours = read_state_dict(path)
    for name, tensor in state.items():
        assert np.array_equal(ours[name], tensor.numpy()), name


def _zip_checkpoint(path, pickled: bytes, storages: dict[str, bytes] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickled)
        zf.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", data)
    return path


def test_pickled_code_in_a_zip_checkpoint_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = _zip_checkpoint(tmp_path / "evil.pth", pickle.dumps({"conv1.weight": Evil()}))
    with pytest.raises(WeightsUnavailable, match=r"names io\.open") as info:
        read_state_dict(path)
    assert info.value.exit_code == EXIT_UNUSABLE and not marker.exists()
    plain = tmp_path / "plain.pth"  # a bare pickle: not even opened as one
    plain.write_bytes(pickle.dumps({"conv1.weight": Evil()}))
    with pytest.raises(WeightsUnavailable, match="not a loadable checkpoint"):
        read_state_dict(plain)
    assert not marker.exists()


def test_a_storage_that_is_missing_short_or_outside_the_archive_is_refused(tmp_path):
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buf)
    with zipfile.ZipFile(buf) as zf:
        pickled = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    for storages, reason in (({}, "missing"), ({"0": b"\0" * 8}, "cut short")):
        path = _zip_checkpoint(tmp_path / f"{reason}.pth", pickled, storages)
        with pytest.raises(WeightsUnavailable, match=reason):
            read_state_dict(path)
    escaping = pickled.replace(b"X\x01\x00\x00\x000", b"X\x01\x00\x00\x00/")  # key "/"
    path = _zip_checkpoint(tmp_path / "escape.pth", escaping, {"0": b"\0" * 16})
    with pytest.raises(WeightsUnavailable, match="persistent id"):
        read_state_dict(path)


def test_safetensors_weights_are_read_without_torch(tmp_path, resnet50_weights):
    from safetensors.numpy import save_file

    state = read_state_dict(resnet50_weights)
    path = tmp_path / "resnet50.safetensors"
    save_file(state, str(path))
    again = read_state_dict(path)
    assert all(np.array_equal(again[k], v) for k, v in state.items())


@pytest.mark.parametrize("fixture", ["resnet50_weights", "resnet50_weights_bn"])
def test_the_graph_built_from_the_arrays_embeds_as_the_torch_export_does(tmp_path, fixture,
                                                                         request):
    """cosine >= 0.99999 per photo, real photos, random weights (the issue's bar); once
    with batch norms that are not the identity, so that the fold itself is tested."""
    from dupecheck.engines.onnx_engine import OnnxEngine
    from dupecheck.engines.resnet_onnx import build_resnet50_onnx
    from dupecheck.engines.torch_models import export_onnx

    weights = request.getfixturevalue(fixture)
    light = OnnxEngine(SPEC, build_resnet50_onnx(weights, SPEC, tmp_path / "l.onnx"))
    torch_export = OnnxEngine(SPEC, export_onnx(SPEC, weights, tmp_path / "t.onnx"))
    photos = sorted(PHOTOS.glob("jpg__*"))[:8]
    pixels = np.stack([SPEC.to_input(decode(p.read_bytes(), p.name, draft=256).image)
                       for p in photos])
    a, b = light.embed_batch(pixels), torch_export.embed_batch(pixels)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() >= 0.99999, cosines


def test_the_classifier_names_come_from_the_checkpoint_and_torchvisions_list(
        resnet50_weights):
    from torchvision.models import ResNet50_Weights

    from dupecheck.engines.resnet_onnx import imagenet_labels, resnet50_vocabulary

    assert imagenet_labels() == tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    vocab = resnet50_vocabulary(resnet50_weights, SPEC)
    assert vocab.matrix.shape == (1000, 2048)
    assert np.array_equal(vocab.matrix, read_state_dict(resnet50_weights)["fc.weight"])


class _Response(io.BytesIO):
    headers = {"Content-Length": "0"}


def test_a_download_is_kept_only_when_its_hash_starts_as_its_name_says(tmp_path):
    import hashlib

    data = b"weights" * 1000
    prefix = hashlib.sha256(data).hexdigest()[:8]
    good = download_checked("https://example/w", tmp_path / f"resnet50-{prefix}.pth",
                            opener=lambda url: _Response(data))
    assert good.read_bytes() == data
    with pytest.raises(WeightsUnavailable, match="does not start with 00000000"):
        download_checked("https://example/w", tmp_path / "resnet50-00000000.pth",
                         opener=lambda url: _Response(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # nothing half-kept


def test_an_index_made_with_the_torch_export_keeps_working_after_it(tmp_path, monkeypatch,
                                                                    resnet50_weights):
    """Built while the ONNX graph came from torch; the cache then lost it and the light
    builder made it again: no re-index, and each stored row is what the new graph gives."""
    from dupecheck.engines import load_engine, onnx_engine
    from dupecheck.engines.torch_models import export_onnx
    from dupecheck.indexer import build_index
    from dupecheck.store import open_index

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(PHOTOS.glob("jpg__*"))[:5]:
        (folder / path.name).write_bytes(path.read_bytes())
    with monkeypatch.context() as m:
        m.setattr(onnx_engine, "make_onnx",
                  lambda spec, weights, dest: export_onnx(spec, weights, dest))
        build_index([folder], tmp_path / "idx", SPEC, resnet50_weights, engine="onnx")
    shutil.rmtree(onnx_engine.onnx_cache_dir())
    index = open_index(tmp_path / "idx")
    engine = load_engine(SPEC, resnet50_weights, "onnx")  # made again, without torch
    stored = np.asarray(index.embeddings("resnet50"))
    for row, photo in enumerate(index.photos):
        data = (folder / photo.path.rsplit("/", 1)[-1]).read_bytes()
        again = engine.embed_batch(SPEC.to_input(
            decode(data, photo.path, draft=SPEC.archive_draft_size).image)[None])[0]
        assert float(again @ stored[row]) >= 0.99999, photo.path
