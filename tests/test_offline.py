"""offline.py and /api/offline: the phone's copy of the index."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dupecheck.offline import (
    COMPONENTS,
    FORMAT_VERSION,
    PcaRows,
    build_copy,
    encode_embeddings,
    keeps_top1,
    quantize_rows,
    read_copy,
)
from dupecheck.store import NotMatches, open_index


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _pca(sections: dict[str, bytes], n: int, dim: int, k: int) -> PcaRows:
    return PcaRows(np.frombuffer(sections["mean"], "<f4"),
                   np.frombuffer(sections["basis"], "<f2").reshape(k, dim),
                   np.frombuffer(sections["coefficients"], "<f2").reshape(n, k),
                   np.frombuffer(sections["embeddings"], np.int8).reshape(n, dim),
                   np.frombuffer(sections["scales"], "<f4"))


def test_int8_pca_where_it_keeps_every_top1_neighbour_else_float16():
    rng = np.random.default_rng(0)
    centres = _unit(rng.normal(size=(150, 128)))  # photos in pairs: each has a clear twin
    spread = _unit(np.repeat(centres, 2, axis=0) + 0.02 * rng.normal(size=(300, 128)))
    encoding, sections, k = encode_embeddings(spread)
    sections = dict(sections)
    assert encoding == "int8-pca" and k == min(COMPONENTS, 300)
    assert len(sections["embeddings"]) == 300 * 128
    pca = _pca(sections, 300, 128, k)
    assert np.allclose(pca.mean, spread.mean(axis=0), atol=1e-6)
    # the remainder is quantized to half a step at most: the rows come back that close
    assert np.abs(pca.rows() - spread).max() <= pca.scales.max() / 2 + 1e-6
    # Near-duplicates closer than int8's step: int8 would swap neighbours, float16 not.
    base = _unit(rng.normal(size=(1, 128)))
    close = _unit(base + 1e-3 * rng.normal(size=(40, 128)))
    int8 = quantize_rows(close - close.mean(axis=0))
    assert not keeps_top1(close, close.mean(axis=0) + int8[0] * int8[1][:, None], tie=0)


def test_the_principal_directions_leave_int8_a_smaller_remainder():
    """Rows sharing a large common part and varying along a few directions, as a ResNet's
    pooled features do (all positive; a few directions hold most of the variation): int8
    of the rows swaps neighbours, int8 of their differences from the mean still swaps
    some, with the principal directions taken out first it keeps every one, and scores a
    query 10 times closer to float32."""
    rng = np.random.default_rng(1)
    dim, n = 512, 600
    common = np.abs(rng.normal(size=(1, dim)))
    strong = rng.normal(size=(24, dim))  # the few directions photos differ along most
    photos = np.repeat(rng.normal(size=(n // 3, 24)) @ strong * 0.1, 3, axis=0)
    edit = np.tile([0.0, 1.0, 1.15], n // 3)[:, None]  # each photo posted three ways
    rows = _unit(common + photos + 0.005 * edit * rng.normal(size=(n, dim)))
    query = _unit(common + photos[:1] + 0.005 * rng.normal(size=(1, dim)))
    codes, scale = quantize_rows(rows)
    assert not keeps_top1(rows, codes * scale[:, None])
    mean = rows.mean(axis=0)
    codes, scale = quantize_rows(rows - mean)
    centred = mean + codes * scale[:, None]
    assert not keeps_top1(rows, centred)
    pca = PcaRows.of(rows, k=64)
    assert keeps_top1(rows, pca.rows())
    error = {name: float(np.abs(query @ approx.T - query @ rows.T).max())
             for name, approx in (("centred", centred), ("pca", pca.rows()))}
    assert error["pca"] * 10 <= error["centred"], error
    assert encode_embeddings(rows)[0] == "int8-pca"


def test_rows_tied_for_the_cli_itself_count_as_kept():
    """Two rows 5e-6 apart in cosine to a third are tied for the CLI (its two engines
    agree to 1e-5): taking either keeps the top-1 neighbour; 5e-5 apart, it does not."""

    def rows(cos1: float, cos2: float) -> np.ndarray:
        out = np.zeros((3, 3), np.float32)
        out[0, 0] = 1
        out[1, :2] = cos1, np.sqrt(1 - cos1**2)
        out[2, [0, 2]] = cos2, np.sqrt(1 - cos2**2)
        return out

    assert keeps_top1(rows(0.9, 0.9 - 5e-6), rows(0.9 - 5e-6, 0.9))
    assert not keeps_top1(rows(0.9, 0.9 - 5e-6), rows(0.9 - 5e-6, 0.9), tie=0)
    assert not keeps_top1(rows(0.9, 0.9 - 5e-5), rows(0.9 - 5e-5, 0.9))


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
    assert header["format"] == FORMAT_VERSION
    assert header["embeddings_encoding"] == "int8-pca" and header["components"] == 3
    rows = _pca(sections, *stored.shape, header["components"]).rows()
    assert ((_unit(rows) * stored).sum(axis=1) > 0.999).all()
    ends = np.frombuffer(sections["thumb_ends"], "<u4")
    starts = np.concatenate([[0], ends[:-1]])
    for start, end in zip(starts, ends, strict=True):
        thumb = Image.open(io.BytesIO(sections["thumbs"][start:end]))
        assert thumb.format == "WEBP" and max(thumb.size) <= 64
    assert header["thumb_format"] == "webp"
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


def test_the_page_reads_the_format_this_version_writes():
    import re
    from importlib.resources import files

    script = files("dupecheck").joinpath("offline.js").read_text()
    assert re.search(r"const COPY_FORMAT = (\d+);", script).group(1) == str(FORMAT_VERSION)
    for encoding in ("int8-pca", "float16-centred"):  # every encoding offline.py writes
        assert f'"{encoding}"' in script


def test_two_first_requests_for_a_copy_build_it_once_and_agree_on_its_size(served, tmp_path,
                                                                            monkeypatch):
    """The service's /api/offline/info and /api/offline race for a new generation's copy:
    one builds, the other waits and reads the same file."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import dupecheck.thumbs

    _, _, state, *_ = served
    index = open_index(state.index_dir)
    builds = []
    real = dupecheck.thumbs.row_thumbnails

    def slow_thumbnails(*args, **kwargs):
        builds.append(threading.get_ident())
        time.sleep(0.5)  # both callers are inside build_copy by now
        return real(*args, **kwargs)

    monkeypatch.setattr(dupecheck.thumbs, "row_thumbnails", slow_thumbnails)
    dest = tmp_path / "race.bin"
    with ThreadPoolExecutor(2) as pool:
        copies = list(pool.map(lambda _: build_copy(index, state.spec, 0.97, {}, dest=dest),
                               range(2)))
    assert len(builds) == 1
    assert copies[0].bytes == copies[1].bytes == dest.stat().st_size
    assert not list(tmp_path.glob(".race.bin.*"))  # no temporary left behind
