"""offline.py and /api/offline: the phone's copy of the index."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dupecheck.offline import build_copy, encode_embeddings, keeps_top1, quantize_rows, read_copy
from dupecheck.store import NotMatches, open_index


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_int8_with_a_scale_per_row_where_it_keeps_every_top1_neighbour():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(150, 128)))  # photos in pairs: each has a clear twin
    spread = _unit(np.repeat(centres, 2, axis=0) + 0.02 * rng.normal(size=(300, 128)))
    encoding, sections = encode_embeddings(spread)
    assert encoding == "int8" and len(dict(sections)["embeddings"]) == 300 * 128
    codes, scale = quantize_rows(spread)
    assert np.abs(codes.astype(np.float32) * scale[:, None] - spread).max() <= scale.max() / 2
    # Near-duplicates closer than int8's step: int8 would swap neighbours, float16 not.
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(1, 128)))
    close = _unit(base + 1e-3 * rng.normal(size=(40, 128)))
    int8 = quantize_rows(close)
    assert not keeps_top1(close, int8[0].astype(np.float32) * int8[1][:, None])
    encoding, _ = encode_embeddings(close)
    assert encoding in ("float16", "float32")


def test_the_copy_holds_every_row_and_reads_back(served, tmp_path):
    client, token, state, *_ = served
    index = open_index(state.index_dir)
    NotMatches(state.index_dir).add("a" * 64, {index.photos[0].sha256})
    copy = build_copy(index, state.spec, 0.97, NotMatches(state.index_dir).load(),
                      dest=tmp_path / "copy.bin")
    data = copy.path.read_bytes()
    header, sections = read_copy(data)
    assert header["generation"] == index.generation and header["photos"] == len(index) == 3
    assert [r["path"] for r in header["rows"]] == [p.path for p in index.photos]
    assert header["threshold"] == 0.97
    assert header["not_pairs"] == {"a" * 64: [index.photos[0].sha256]}
    assert sections["pdq"] == np.asarray(index.pdq).tobytes()
    assert sections["sha256"].hex() == "".join(p.sha256 for p in index.photos)
    stored = np.asarray(index.embeddings(state.spec.name), np.float32)
    if header["embeddings_encoding"] == "int8":
        codes = np.frombuffer(sections["embeddings"], np.int8).reshape(stored.shape)
        rows = codes * np.frombuffer(sections["scales"], "<f4")[:, None]
    else:
        rows = np.frombuffer(sections["embeddings"], "<f2").reshape(stored.shape)
    assert ((_unit(rows) * stored).sum(axis=1) > 0.999).all()
    ends = np.frombuffer(sections["thumb_ends"], "<u4")
    starts = np.concatenate([[0], ends[:-1]])
    for start, end in zip(starts, ends, strict=True):
        thumb = Image.open(io.BytesIO(sections["thumbs"][start:end]))
        assert thumb.format == "JPEG" and max(thumb.size) <= 64
    again = build_copy(index, state.spec, 0.97, {}, dest=tmp_path / "copy.bin")
    assert again.path.stat().st_mtime_ns == copy.path.stat().st_mtime_ns  # made once


def test_the_copy_is_served_only_with_a_token(served, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    client, token, *_ = served
    for path in ("/api/offline", "/api/offline/info", "/api/offline/model"):
        r = client.get(path)
        assert r.status_code == 401 and set(r.json()) == {"error"} and len(r.content) < 200
    info = client.get("/api/offline/info", headers=auth(token)).json()
    r = client.get("/api/offline", headers=auth(token))
    assert r.status_code == 200 and len(r.content) == info["bytes"]
    header, _ = read_copy(r.content)
    assert header["photos"] == info["photos"] == 3
    # The test model has no ONNX graph: nothing to keep, said plainly.
    r = client.get("/api/offline/model", headers=auth(token))
    assert r.status_code == 404 and "ONNX" in r.json()["error"]


@pytest.mark.slow
def test_the_resnet50_model_file_is_the_one_the_index_was_made_with(tmp_path, cli,
                                                                     resnet50_weights):
    from fastapi.testclient import TestClient

    from dupecheck.engines import get_model_spec, load_engine
    from dupecheck.engines.onnx_engine import onnx_cache_path
    from dupecheck.engines.weights import file_sha256
    from dupecheck.service import ServiceState, create_app
    from dupecheck.tokens import TokenStore
    from helpers import PHOTOS

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(PHOTOS.glob("jpg__*"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    cli("index", folder, "--index", tmp_path / "idx", "--weights", resnet50_weights,
        "--engine", "onnx", "--quiet")
    spec = get_model_spec("resnet50")
    tokens = TokenStore(tmp_path / "config")
    token = tokens.create("phone")
    state = ServiceState(tmp_path / "idx", spec, load_engine(spec, resnet50_weights, "onnx"),
                         file_sha256(resnet50_weights), tokens)
    client = TestClient(create_app(state, hosts=("testserver",)))
    r = client.get("/api/offline/model", headers=auth(token))
    cached = onnx_cache_path(spec, file_sha256(resnet50_weights))
    assert r.status_code == 200 and r.content == cached.read_bytes()
