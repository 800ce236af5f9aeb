"""`re-framed` through every layer: the store (lazy verification, tampering), the indexer
(reuse, resume), check --json and exit codes, compare, dupes, calibrate, the report's box."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import tiny_engine
from dupecheck import localfeatures as lf
from dupecheck.analysis import find_duplicates
from dupecheck.calibrate import calibrate
from dupecheck.cli import app
from dupecheck.engines import load_engine
from dupecheck.errors import IndexUnusable
from dupecheck.imaging import decode
from dupecheck.indexer import build_index
from dupecheck.store import (
    CURRENT_FILE,
    LOCAL_BLOCK_ROWS,
    LOCAL_DESCRIPTORS_FILE,
    IndexedPhoto,
    LocalArrays,
    ModelEntry,
    Staging,
    open_index,
    write_index,
)
from helpers import instagramify, republish

TINY = tiny_engine.TINY
runner = CliRunner()
SOURCES = ["jpg__Canon_EOS_30D_(4).jpg", "jpg__Nikon_D100.jpg", "jpg__Apple_iPhone_4S.jpg",
           "jpg__Olympus_E-10.jpg"]


def recrop(data: bytes, box=(0.30, 0.20, 0.92, 0.88), turn: float = 3.0) -> bytes:
    img = decode(data, "x.jpg").image
    w, h = img.size
    img = img.rotate(turn, Image.Resampling.BICUBIC)
    img = img.crop((int(w * box[0]), int(h * box[1]), int(w * box[2]), int(h * box[3])))
    buf = io.BytesIO()
    img.convert("L").convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture
def export(real_photos, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for i, name in enumerate(SOURCES):
        (folder / f"{i}.jpg").write_bytes(instagramify((real_photos / name).read_bytes()))
    return folder


@pytest.fixture
def indexed(export, tmp_path, tiny_weights):
    build_index([export], tmp_path / "idx", TINY, tiny_weights)
    return tmp_path / "idx"


@pytest.fixture
def candidate(real_photos, tmp_path):
    path = tmp_path / "walk-recropped.jpg"
    path.write_bytes(recrop((real_photos / SOURCES[0]).read_bytes()))
    return path


def cli(*args, weights):
    return runner.invoke(app, [*args, "--weights", str(weights)], catch_exceptions=False)


def test_check_json_gains_inliers_and_transform_and_exits_1(indexed, candidate, tiny_weights):
    result = cli("check", str(candidate), "--index", str(indexed), "--threshold", "1.0",
                 "--json", weights=tiny_weights)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    [res] = doc["results"]
    assert res["verdict"] == "re-framed"
    top = res["matches"][0]
    assert top["path"] == "0.jpg" and top["evidence"] == "re-framed"
    assert top["inliers"] >= lf.MIN_INLIERS
    box = top["transform"]["box"]
    assert 0.2 < box[0] < 0.4 and 0.8 < box[2] <= 1.0  # the right part of the archive photo
    assert abs(top["transform"]["rotation_deg"] - 3.0) < 0.6
    for m in res["matches"]:  # every old field stays, the two new ones are always there
        assert {"rank", "score", "pdq_distance", "evidence", "variant", "kind", "taken_at",
                "caption", "carousel_index", "path", "inliers", "transform"} <= set(m)
    for m in res["matches"][1:]:
        assert m["transform"] is None
    text = cli("check", str(candidate), "--index", str(indexed), "-t", "1.0",
               weights=tiny_weights)
    assert "re-framed" in text.stdout and "inliers" in text.stdout


def test_compare_reports_inliers_and_transform(candidate, real_photos, tmp_path):
    posted = tmp_path / "posted.jpg"
    posted.write_bytes(instagramify((real_photos / SOURCES[0]).read_bytes()))
    other = real_photos / SOURCES[1]
    weights = tiny_engine.write_weights(tmp_path / "t.npy")
    same = runner.invoke(app, ["compare", str(candidate), str(posted), "--model", TINY.name,
                               "--weights", str(weights), "-t", "1.0", "--json"])
    assert same.exit_code == 1, same.output
    doc = json.loads(same.stdout)
    assert doc["verdict"] == "re-framed" and doc["inliers"] >= lf.MIN_INLIERS
    assert set(doc["transform"]) == {"box", "box_in_photo", "rotation_deg", "scale",
                                     "mirrored"}
    assert doc["transform"]["mirrored"] is False
    # A re-crop of the archive photo: all of it is archive pixels.
    assert np.allclose(doc["transform"]["box_in_photo"], [0, 0, 1, 1], atol=0.06)
    differ = runner.invoke(app, ["compare", str(candidate), str(other), "--model", TINY.name,
                                 "--weights", str(weights), "-t", "1.0", "--json"])
    assert differ.exit_code == 0
    assert json.loads(differ.stdout)["transform"] is None


def test_dupes_finds_a_re_framed_pair_inside_the_archive(export, real_photos, tmp_path,
                                                          tiny_weights):
    (export / "9-recropped.jpg").write_bytes(recrop((real_photos / SOURCES[2]).read_bytes(),
                                                    (0.05, 0.25, 0.75, 0.95), -2.0))
    build_index([export], tmp_path / "idx", TINY, tiny_weights)
    groups = find_duplicates(open_index(tmp_path / "idx"), TINY.name, 1.0)
    assert [(g.evidence, sorted(p.path for p in g.photos)) for g in groups] == [
        ("re-framed", ["2.jpg", "9-recropped.jpg"])]


def test_calibrate_reports_which_evidence_caught_each_edit(indexed, tiny_weights):
    engine = load_engine(TINY, tiny_weights)
    result = calibrate(open_index(indexed), TINY, engine, sample=4, seed=0, threshold=1.0)
    assert {"off-centre crop", "straightening 2-5 deg"} <= set(result.caught)
    for edit, tally in result.caught.items():
        assert sum(tally.values()) == 4, edit
    # Off-centre crops and straightening are what `re-framed` is for.
    reframed = sum(result.caught[e].get("re-framed", 0)
                   for e in ("off-centre crop", "straightening 2-5 deg"))
    assert reframed >= 6
    assert result.caught["brightness"].get("near-identical", 0) >= 3
    assert json.loads(json.dumps(result.document()))["caught"] == result.caught


def test_the_report_draws_the_box_on_the_archive_thumbnail(indexed, candidate, tmp_path,
                                                             tiny_weights):
    from dupecheck.search import check_photos
    from dupecheck.visual import BOX_COLOUR, _draw_box

    index = open_index(indexed)
    [res] = check_photos([candidate], index, TINY, load_engine(TINY, tiny_weights), 1.0)
    tile = Image.new("RGB", (200, 100), (0, 0, 0))
    drawn = np.asarray(_draw_box(tile, res.matches[0].transform.box))
    x0 = round(res.matches[0].transform.box[0] * 199)
    assert tuple(drawn[50, x0]) == BOX_COLOUR and tuple(drawn[50, 2]) == (0, 0, 0)
    page = tmp_path / "r.html"
    out = cli("check", str(candidate), "--index", str(indexed), "-t", "1.0", "--report",
              str(page), weights=tiny_weights)
    assert out.exit_code == 1
    assert "inliers; box: where the photo sits" in page.read_text()


# -- the store and the indexer ------------------------------------------------------------


def _rows(n):
    return [IndexedPhoto(f"{i}.jpg", "post", None, None, None, f"{i:064x}") for i in range(n)]


def _local(n, seed=0):
    rng = np.random.default_rng(seed)
    feats = [lf.LocalFeatures(rng.uniform(0, 500, (lf.LOCAL_FEATURES, 2)).astype(np.float32),
                              rng.integers(0, 200, (lf.LOCAL_FEATURES, 128)).astype(np.uint8),
                              (512, 384)) for _ in range(n)]
    return feats, LocalArrays(*lf.pack(feats))


def _write(root, n):
    feats, local = _local(n)
    entry = ModelEntry(TINY.name, TINY.dim, "0" * 64, "/w", TINY.preprocessing)
    emb = np.eye(n, TINY.dim, dtype=np.float32)
    write_index(root, _rows(n), np.zeros((n, 32), np.uint8), {TINY.name: (entry, emb)}, [],
                local)
    return feats


def test_local_features_round_trip_and_a_tampered_block_is_refused_when_read(tmp_path):
    n = 2 * LOCAL_BLOCK_ROWS + 5
    feats = _write(tmp_path / "idx", n)
    index = open_index(tmp_path / "idx")
    got = index.local.features(LOCAL_BLOCK_ROWS + 3)
    assert np.array_equal(got.descriptors, feats[LOCAL_BLOCK_ROWS + 3].descriptors)
    gen = tmp_path / "idx" / (tmp_path / "idx" / CURRENT_FILE).read_text().split()[0]
    path = gen / LOCAL_DESCRIPTORS_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # a byte of the last row: the last block
    path.write_bytes(bytes(data))
    index = open_index(tmp_path / "idx")  # opening reads no descriptor
    assert np.array_equal(index.local.features(0).descriptors, feats[0].descriptors)
    with pytest.raises(IndexUnusable, match="do not match their checksum"):
        index.local.features(n - 1)
    with pytest.raises(IndexUnusable):
        index.local.all_descriptors()


def test_a_truncated_local_file_is_refused_on_open(tmp_path):
    _write(tmp_path / "idx", 3)
    gen = tmp_path / "idx" / (tmp_path / "idx" / CURRENT_FILE).read_text().split()[0]
    path = gen / LOCAL_DESCRIPTORS_FILE
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IndexUnusable, match="truncated"):
        open_index(tmp_path / "idx")


def test_forged_keypoint_counts_are_refused_even_with_every_checksum_made_to_match(tmp_path):
    """A forger who rewrites local-meta.npy with counts past the stored width (they would
    index past each row's descriptors) and re-signs the manifest and CURRENT: refused."""
    from dupecheck.store import LOCAL_META_FILE

    _write(tmp_path / "idx", 3)

    def forge(gen, manifest):
        meta = np.load(gen / LOCAL_META_FILE)
        meta[1, 0] = lf.LOCAL_FEATURES + 1
        np.save(gen / LOCAL_META_FILE, meta)

    republish(tmp_path / "idx", forge)
    with pytest.raises(IndexUnusable, match="keypoint counts out of range"):
        open_index(tmp_path / "idx")


def test_a_tampered_faiss_shortlist_is_refused_before_faiss_reads_it(tmp_path, monkeypatch):
    """FAISS's reader is not made for hostile bytes: the shortlist file is verified by its
    SHA-256 first, and a changed byte never reaches FAISS."""
    import faiss

    monkeypatch.setattr(lf, "FLAT_MAX_DESCRIPTORS", 1000)  # a stored IVF-PQ for 40 photos
    feats, _ = _local(40)
    desc, points, meta = lf.pack(feats)
    shortlist = lf.build_shortlist(desc, meta)
    assert shortlist is not None
    entry = ModelEntry(TINY.name, TINY.dim, "0" * 64, "/w", TINY.preprocessing)
    write_index(tmp_path / "idx", _rows(40), np.zeros((40, 32), np.uint8),
                {TINY.name: (entry, np.eye(40, TINY.dim, dtype=np.float32))}, [],
                LocalArrays(desc, points, meta, shortlist))
    assert open_index(tmp_path / "idx").local.shortlist() is not None  # as written: fine
    gen = tmp_path / "idx" / (tmp_path / "idx" / CURRENT_FILE).read_text().split()[0]
    path = gen / "local-shortlist.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))
    read: list[str] = []
    for name in ("read_index", "deserialize_index"):
        real = getattr(faiss, name)
        monkeypatch.setattr(faiss, name,
                            lambda *a, _n=name, _r=real, **k: read.append(_n) or _r(*a, **k))
    index = open_index(tmp_path / "idx")
    with pytest.raises(IndexUnusable, match="local-shortlist.faiss"):
        index.local.shortlist()
    assert read == []


def test_features_of_an_older_extraction_are_never_used_and_re_indexing_renews_them(
        export, candidate, tmp_path, tiny_weights, monkeypatch):
    """Features taken another way (another side, another detector) would be matched against
    the new ones: an index holding them opens without them, `check` says to re-index, and
    re-indexing takes them again without running the model."""
    import dupecheck.indexer as indexer
    import dupecheck.store as store

    idx = tmp_path / "older"
    with monkeypatch.context() as m:
        m.setattr(store, "LOCAL_VERSION", lf.LOCAL_VERSION - 1)
        build_index([export], idx, TINY, tiny_weights)
        assert open_index(idx).local is not None  # as the older version saw it
    assert open_index(idx).local is None
    text = cli("check", str(candidate), "--index", str(idx), "-t", "1.0", weights=tiny_weights)
    assert text.exit_code == 0  # the re-edit is not found without its evidence...
    assert "re-framed: off" in " ".join(text.stdout.split())
    assert "re-run `dupecheck index`" in " ".join(text.stdout.split())  # ...and it says why
    calls = []
    real = indexer.extract
    monkeypatch.setattr(indexer, "extract", lambda img: calls.append(1) or real(img))
    summary = build_index([export], idx, TINY, tiny_weights)
    assert summary.embedded == 0 and len(calls) == len(SOURCES)
    assert open_index(idx).local is not None
    assert cli("check", str(candidate), "--index", str(idx), "-t", "1.0",
               weights=tiny_weights).exit_code == 1


def test_features_stored_at_another_width_are_set_aside_not_refused(export, tmp_path,
                                                                     tiny_weights, monkeypatch):
    """LOCAL_VERSION 3 kept 256 features per photo; an index from then (or any other width)
    opens without its local features, as an older extraction does, and is not taken for a
    damaged index: its arrays are never opened with the wrong shape."""
    import dupecheck.store as store

    idx = tmp_path / "wider"
    wider = lf.LOCAL_FEATURES + 64
    with monkeypatch.context() as m:
        m.setattr(lf, "LOCAL_FEATURES", wider)
        m.setattr(store, "LOCAL_FEATURES", wider)
        build_index([export], idx, TINY, tiny_weights)
        assert open_index(idx).local is not None  # as that width saw it
    index = open_index(idx)
    assert index.local is None and len(index.photos) == len(SOURCES)
    build_index([export], idx, TINY, tiny_weights)
    renewed = open_index(idx).local
    assert renewed is not None and renewed.meta[:, 0].max() <= lf.LOCAL_FEATURES


def test_local_features_are_reused_by_content_and_staged_for_resume(indexed, export, tmp_path,
                                                                     tiny_weights, monkeypatch):
    import dupecheck.indexer as indexer

    calls = []
    real = indexer.extract
    monkeypatch.setattr(indexer, "extract", lambda img: calls.append(1) or real(img))
    before = open_index(indexed)
    build_index([export], indexed, TINY, tiny_weights)
    assert calls == []  # nothing new: no photo decoded again
    after = open_index(indexed)
    for row in range(len(after)):
        assert np.array_equal(after.local.features(row).descriptors,
                              before.local.features(row).descriptors)
    # An index made before local features existed: re-indexing adds them, reusing embeddings.
    old = tmp_path / "old"
    write_index(old, before.photos, before.pdq,
                {n: (e, np.asarray(before.embeddings(n))) for n, e in before.models.items()},
                before.archives)
    summary = build_index([export], old, TINY, tiny_weights)
    assert summary.embedded == 0 and len(calls) == len(before)
    assert open_index(old).local is not None
    # Staged batches carry local features: an interrupted run's work is not redone.
    staging = Staging(tmp_path / "st", "k")
    feats, local = _local(2)
    staging.add(["a" * 64, "b" * 64], np.zeros((2, 32), np.uint8), np.ones((2, 4), np.float32),
                [None, None], (local.descriptors, local.points, local.meta))
    staged = staging.load()
    assert np.array_equal(staged["b" * 64].local.descriptors, feats[1].descriptors)
