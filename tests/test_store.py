"""store.py: atomic generations, verification on open, staging of finished batches."""

from __future__ import annotations

import errno
import json
import pickle

import numpy as np
import pytest

from dupecheck.errors import EXIT_UNUSABLE, IndexUnusable
from dupecheck.store import (
    SCHEMA_VERSION,
    IndexedPhoto,
    ModelEntry,
    Staging,
    embeddings_file,
    open_index,
    write_index,
)
from helpers import generation_dir, republish


def rows(n: int) -> list[IndexedPhoto]:
    return [IndexedPhoto(f"media/posts/{i}.jpg", "post", "2024-01-01T00:00:00+00:00",
                         f"caption {i} 🥰", None, f"{i:064x}") for i in range(n)]


def entry(dim: int = 8, name: str = "tiny-test") -> ModelEntry:
    return ModelEntry(name, dim, "ab" * 32, "/w.npy", "v1:test")


def write(root, n=5, seed=0, dim=8):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    pdq = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    return write_index(root, rows(n), pdq, {"tiny-test": (entry(dim), emb)}, ["/a.zip"]), emb


def test_roundtrip(tmp_path):
    index, emb = write(tmp_path / "idx")
    again = open_index(tmp_path / "idx")
    assert again.photos == rows(5)
    assert np.array_equal(again.embeddings("tiny-test"), emb)
    assert again.models["tiny-test"] == entry()
    assert again.archives == ["/a.zip"]


def test_a_new_generation_replaces_the_old_and_old_ones_are_collected(tmp_path):
    root = tmp_path / "idx"
    for n in (3, 4, 5):
        write(root, n=n, seed=n)
    assert len(open_index(root)) == 5
    gens = sorted(p.name for p in root.iterdir() if p.name.startswith("gen-"))
    assert len(gens) == 2  # the current one and the previous (a reader may hold it)


def test_missing_index_is_exit_3(tmp_path):
    with pytest.raises(IndexUnusable, match="no index here yet") as info:
        open_index(tmp_path / "nothing")
    assert info.value.exit_code == EXIT_UNUSABLE


def tamper_truncate(gen):
    f = gen / embeddings_file("tiny-test")
    f.write_bytes(f.read_bytes()[:-7])


def tamper_dtype(gen):
    np.save(gen / embeddings_file("tiny-test"), np.zeros((5, 8), np.float64))


def tamper_shape(gen):
    np.save(gen / embeddings_file("tiny-test"), np.zeros((4, 8), np.float32))


def tamper_pickle(gen):
    np.save(gen / embeddings_file("tiny-test"), np.array([{"a": 1}] * 5, dtype=object),
            allow_pickle=True)


def tamper_same_shape(gen):
    f = gen / embeddings_file("tiny-test")
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("tamper,message", [
    (tamper_truncate, "truncated"),
    (tamper_dtype, "float64"),
    (tamper_shape, r"shape \(4, 8\)"),
    (tamper_pickle, "object|not a valid"),
    (tamper_same_shape, "checksum"),
])
def test_tampered_embeddings_are_refused(tmp_path, tamper, message):
    root = tmp_path / "idx"
    write(root)
    tamper(generation_dir(root))
    index = open_index(root)  # the matrix is checked when it is used
    with pytest.raises(IndexUnusable, match=message):
        index.embeddings("tiny-test")


@pytest.mark.parametrize("tamper,message", [
    (tamper_same_shape, "checksum"),
    (tamper_truncate, "truncated"),
])
def test_verification_in_the_background_still_refuses_a_damaged_matrix(tmp_path, tamper,
                                                                       message):
    """`check` starts hashing the matrix while the photo decodes; the first use of the
    matrix waits for that hash, so a damaged byte is refused, never searched."""
    root = tmp_path / "idx"
    write(root)
    tamper(generation_dir(root))
    index = open_index(root)
    with pytest.raises(IndexUnusable, match=message):
        index.verify_in_background("tiny-test")  # a header or size fault: at once
        index.embeddings("tiny-test")  # a checksum fault: when the matrix is first used
    from dupecheck.search import Searcher

    searcher = Searcher(open_index(root), "tiny-test") if message == "checksum" else None
    if searcher is not None:
        with pytest.raises(IndexUnusable, match=message):
            searcher.embeddings  # noqa: B018


def test_background_verification_passes_an_intact_matrix(tmp_path):
    root = tmp_path / "idx"
    write(root)
    index = open_index(root)
    index.verify_in_background("tiny-test")
    assert np.asarray(index.embeddings("tiny-test")).shape == (5, 8)


def test_an_fp32_manifest_is_what_dupecheck_1_0_reads_and_int8_says_so(tmp_path):
    from dataclasses import replace

    write(tmp_path / "fp32")
    doc = json.loads((generation_dir(tmp_path / "fp32") / "manifest.json").read_text())
    assert set(doc["models"]["tiny-test"]) == {"name", "dim", "weights_sha256", "weights_path",
                                               "preprocessing", "threshold"}  # 1.0's fields
    rng = np.random.default_rng(0)
    int8 = replace(entry(8), precision="int8", calibration=["a" * 64, "b" * 64])
    write_index(tmp_path / "int8", rows(5), rng.integers(0, 256, (5, 32), dtype=np.uint8),
                {"tiny-test": (int8, rng.normal(size=(5, 8)).astype(np.float32))}, [])
    again = open_index(tmp_path / "int8").models["tiny-test"]
    assert again.precision == "int8" and again.calibration == ["a" * 64, "b" * 64]


def test_edited_manifest_is_refused(tmp_path):
    root = tmp_path / "idx"
    write(root)
    manifest = generation_dir(root) / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["count"] = 4
    manifest.write_text(json.dumps(doc))
    with pytest.raises(IndexUnusable, match="manifest.json does not match"):
        open_index(root)


def as_written_by_1_0(gen, manifest) -> None:
    """What dupecheck 1.0 wrote: photos.json on one line, SHA-256 only, no row columns."""
    photos = gen / "photos.json"
    photos.write_text(json.dumps(json.loads(photos.read_text())))
    manifest.pop("blake3")
    for name in ("photos-spans.npy", "photos-sha256.npy"):
        manifest["files"].pop(name)
        (gen / name).unlink()


def test_row_count_disagreeing_with_metadata_is_refused(tmp_path):
    """Consistent checksums everywhere (photos.json, manifest, CURRENT), yet 4 rows where
    the manifest says 5: the row-count check itself must refuse it."""
    root = tmp_path / "idx"
    write(root)

    def drop_a_row(gen, manifest):
        as_written_by_1_0(gen, manifest)
        photos = gen / "photos.json"
        photos.write_bytes(json.dumps(json.loads(photos.read_text())[:4]).encode())

    republish(root, drop_a_row)
    with pytest.raises(IndexUnusable, match="photos.json has 4 rows, the manifest says 5"):
        open_index(root)


def test_row_columns_disagreeing_with_the_count_are_refused(tmp_path):
    root = tmp_path / "idx"
    write(root)

    def drop_a_span(gen, manifest):
        np.save(gen / "photos-spans.npy", np.load(gen / "photos-spans.npy")[:4])

    republish(root, drop_a_span)
    with pytest.raises(IndexUnusable, match=r"shape \(4, 2\)"):
        open_index(root)


def test_rows_are_read_lazily_and_each_agrees_with_its_hash_column(tmp_path):
    root = tmp_path / "idx"
    photos = rows(5)
    photos[3] = IndexedPhoto("media/posts/caf\udce9 \u00e9.jpg", "post", None, "line\nbreak",
                             2, "f" * 64)
    write_index(root, photos, np.zeros((5, 32), np.uint8),
                {"tiny-test": (entry(), np.ones((5, 8), np.float32))}, [])
    index = open_index(root)
    assert index.photos._all is None  # opening parsed no row
    assert index.photos[3] == photos[3] and index.photos[-1] == photos[-1]
    assert index.photos[1:3] == photos[1:3]
    assert index.photos._all is None  # nor did reading three
    assert index.rows_with_sha256("f" * 64) == [3]
    assert index.rows_with_sha256(photos[0].sha256) == [0]
    assert index.rows_with_sha256("e" * 64) == [] and index.rows_with_sha256("zz") == []
    assert list(index.photos) == photos
    with pytest.raises(IndexError):
        index.photos[5]
    # photos.json is still one JSON array: what dupecheck 1.0 reads
    gen = generation_dir(root)
    assert json.loads((gen / "photos.json").read_bytes())[3]["caption"] == "line\nbreak"

    def swap_two_digests(gen, manifest):
        digests = np.load(gen / "photos-sha256.npy")
        np.save(gen / "photos-sha256.npy", digests[[1, 0, 2, 3, 4]])

    republish(root, swap_two_digests)
    index = open_index(root)
    assert index.photos[2] == photos[2]
    with pytest.raises(IndexUnusable, match="row 0 disagrees"):
        index.photos[0]
    with pytest.raises(IndexUnusable, match="disagrees"):
        list(index.photos)


def test_an_index_written_by_1_0_opens_and_is_checked_by_sha256(tmp_path):
    root = tmp_path / "idx"
    _index, emb = write(root)
    republish(root, as_written_by_1_0)
    index = open_index(root)
    assert list(index.photos) == rows(5) and index.rows_with_sha256(f"{2:064x}") == [2]
    assert np.array_equal(index.embeddings("tiny-test"), emb)
    tamper_same_shape(generation_dir(root))
    with pytest.raises(IndexUnusable, match="checksum"):
        open_index(root).embeddings("tiny-test")


def test_both_digests_are_written_and_blake3_is_the_one_checked(tmp_path, monkeypatch):
    import hashlib

    root = tmp_path / "idx"
    write(root)
    gen = generation_dir(root)
    manifest = json.loads((gen / "manifest.json").read_text())
    assert set(manifest["blake3"]) == set(manifest["files"])
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((gen / name).read_bytes()).hexdigest() == digest
    from dupecheck import store

    monkeypatch.setattr(store, "_file_sha256", lambda path: pytest.fail(f"SHA-256 of {path}"))
    index = open_index(root)
    index.embeddings("tiny-test")


def test_pickled_pdq_file_is_refused_without_executing(tmp_path):
    root = tmp_path / "idx"
    write(root)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (generation_dir(root) / "pdq.npy").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(IndexUnusable):
        open_index(root)
    assert not marker.exists()


def test_other_schema_version_is_refused(tmp_path, monkeypatch):
    import dupecheck.store as store

    root = tmp_path / "idx"
    monkeypatch.setattr(store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    write(root)
    monkeypatch.undo()
    with pytest.raises(IndexUnusable, match=f"schema version {SCHEMA_VERSION + 1}"):
        open_index(root)


def test_a_write_error_leaves_the_previous_index_intact(tmp_path, monkeypatch):
    import dupecheck.store as store

    root = tmp_path / "idx"
    _, emb = write(root, n=5)
    real_save = np.save

    def disk_full(fh, arr, *a, **kw):
        if arr.dtype == np.float32:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(fh, arr, *a, **kw)

    monkeypatch.setattr(store.np, "save", disk_full)
    with pytest.raises(IndexUnusable, match="disk full.*previous index is intact"):
        write(root, n=7, seed=1)
    monkeypatch.undo()
    index = open_index(root)
    assert len(index) == 5 and np.array_equal(index.embeddings("tiny-test"), emb)
    assert not [p for p in root.iterdir() if p.name.endswith(".tmp")]


def test_staging_keeps_finished_batches_and_drops_broken_ones(tmp_path):
    staging = Staging(tmp_path, "tiny-test-abc-p1")
    staging.add(["a" * 64, "b" * 64], np.ones((2, 32), np.uint8), np.eye(2, 8, dtype=np.float32),
                ["2020-01-01T00:00:00", None])
    (staging.dir / "batch-9-broken.npz").write_bytes(b"PK\x03\x04 cut short")
    found = Staging(tmp_path, "tiny-test-abc-p1").load()
    assert set(found) == {"a" * 64, "b" * 64}
    assert found["a" * 64].taken_at == "2020-01-01T00:00:00" and found["b" * 64].taken_at is None
    assert np.array_equal(found["b" * 64].embedding, np.eye(2, 8, dtype=np.float32)[1])
    assert not (staging.dir / "batch-9-broken.npz").exists()
    assert Staging(tmp_path, "other-key").load() == {}
    staging.clear_all()
    assert Staging(tmp_path, "tiny-test-abc-p1").load() == {}
