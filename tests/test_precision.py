"""--precision int8: quantized on the person's photos, gated by fidelity, never mixed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from dupecheck.engines import get_model_spec
from dupecheck.engines import quantize as q
from dupecheck.imaging import decode
from dupecheck.precision import engine_for
from dupecheck.store import open_index

SPEC = get_model_spec("resnet50")


def test_sample_is_the_same_for_the_same_photos_and_disjoint_when_there_are_enough():
    shas = [f"{i:064x}" for i in range(500)]
    calibration, gate = q.split_sample(shas)
    assert (calibration, gate) == q.split_sample(list(reversed(shas)))
    assert len(calibration) == q.CALIBRATION_PHOTOS and len(gate) == q.GATE_PHOTOS
    assert not set(calibration) & set(gate)
    small_cal, small_gate = q.split_sample(shas[:20])
    assert len(small_cal) == 20 and sorted(small_gate) == sorted(shas[:20])


def test_gate_passes_only_a_faithful_model():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 64)).astype(np.float32)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    same = q.measure_fidelity(unit, unit, base)
    assert same.passed and same.min_cosine == pytest.approx(1.0) and same.top1_agreement == 1
    noisy = q.measure_fidelity(unit, lambda x: unit(x + 0.6 * rng.normal(size=x.shape)), base)
    assert not noisy.passed and noisy.min_cosine < q.GATE_MIN_COSINE
    assert "needs 0.99" in noisy.reason()


@pytest.fixture
def photo_folder(tmp_path, real_photos):
    """20 real photos, as a plain folder (an archive of the simplest layout)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(real_photos.glob("jpg__*"))[:20]:
        img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        img.thumbnail((640, 640))
        img.save(folder / path.name, quality=90)
    return folder


def _index(cli, folder, idx, weights, *extra, code=0):
    return cli("index", folder, "--index", idx, "--weights", weights, "--engine", "onnx",
               "--json", *extra, code=code)


def _stored_row_again(index, engine, row):
    """Embed an indexed photo again, prepared exactly as `index` prepares it."""
    photo = index.photos[row]
    data = (index.root.parent / "photos" / photo.path).read_bytes()
    pixels = SPEC.to_input(decode(data, photo.path, draft=SPEC.archive_draft_size).image)
    return engine.embed_batch(pixels[None])[0]


def test_int8_index_records_its_precision_and_check_runs_the_same_model(
        cli, photo_folder, tmp_path, resnet50_weights, monkeypatch):
    # Random weights quantize worse than trained ones: the gate is loosened here so that
    # the int8 path itself is exercised; the next test keeps the real gate.
    monkeypatch.setattr(q, "GATE_MIN_COSINE", -1.0)
    monkeypatch.setattr(q, "GATE_MIN_TOP1", 0.0)
    idx = tmp_path / "idx"
    doc = json.loads(_index(cli, photo_folder, idx, resnet50_weights, "--precision",
                            "int8").stdout)
    assert doc["precision"] == "int8" and doc["precision_note"] is None
    fid = doc["int8_fidelity"]
    assert fid["photos"] == 20 and fid["passed"] and -1 <= fid["min_cosine"] <= 1
    index = open_index(idx)
    entry = index.models["resnet50"]
    assert entry.precision == "int8" and len(entry.calibration) == 20
    assert "int8" in cli("info", "--index", idx).stdout
    cached = q.int8_cache_path(SPEC, entry.weights_sha256, entry.calibration)
    assert cached.is_file()
    # Whatever loads an engine for this index gets the int8 model: it reproduces the stored
    # rows, which fp32 does not.
    int8 = engine_for(index, SPEC, resnet50_weights, "onnx")
    stored = np.asarray(index.embeddings("resnet50"))
    again = _stored_row_again(index, int8, 3)
    np.testing.assert_allclose(again, stored[3], atol=1e-5)
    from dupecheck.engines import load_engine

    fp32 = _stored_row_again(index, load_engine(SPEC, resnet50_weights, "onnx"), 3)
    assert float(fp32 @ stored[3]) < 0.99999
    # The cache lost it: rebuilt from the same photos, the same model.
    cached.unlink()
    result = cli("check", photo_folder / index.photos[3].path, "--index", idx, "--weights",
                 resnet50_weights, "--engine", "onnx", "--json", code=1)
    assert json.loads(result.stdout)["results"][0]["verdict"] == "exact"
    assert cached.is_file()
    rebuilt = engine_for(open_index(idx), SPEC, resnet50_weights, "onnx")
    np.testing.assert_allclose(_stored_row_again(index, rebuilt, 3), stored[3], atol=1e-5)
    # int8 runs on ONNX only; and an index never mixes precisions.
    result = cli("check", photo_folder / index.photos[3].path, "--index", idx, "--weights",
                 resnet50_weights, "--engine", "torch", code=2)
    assert "int8" in result.output
    result = _index(cli, photo_folder, idx, resnet50_weights, code=None)
    assert result.exit_code != 0 and "never mixes" in result.output


def test_when_int8_does_not_follow_fp32_the_index_is_fp32_and_says_why(
        cli, photo_folder, tmp_path, resnet50_weights, monkeypatch):
    monkeypatch.setattr(q, "GATE_MIN_COSINE", 1.01)  # no real model reaches this
    idx = tmp_path / "idx"
    doc = json.loads(_index(cli, photo_folder, idx, resnet50_weights, "--precision",
                            "int8").stdout)
    assert doc["precision"] == "fp32" and not doc["int8_fidelity"]["passed"]
    assert "fp32 used" in doc["precision_note"] and "1.01" in doc["precision_note"]
    entry = open_index(idx).models["resnet50"]
    assert entry.precision == "fp32" and entry.calibration is None


def test_int8_is_refused_where_it_is_not_offered(cli, photo_folder, tmp_path, tiny_weights):
    result = cli("index", photo_folder, "--index", tmp_path / "i", "--model", "mobileclip-s2",
                 "--precision", "int8", "--engine", "onnx", code=2)
    assert "resnet50 only" in result.output
    result = cli("index", photo_folder, "--index", tmp_path / "i", "--precision", "int8",
                 "--engine", "torch", code=2)
    assert "ONNX" in result.output
