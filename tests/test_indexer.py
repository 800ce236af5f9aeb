"""indexer.py: exact membership, reuse by content, resuming an interrupted run, refusing mixes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

import tiny_engine
from dupecheck.engines import load_engine, register_model
from dupecheck.errors import IndexUnusable
from dupecheck.indexer import build_index
from dupecheck.store import Staging, open_index
from helpers import LAYOUT_DIRS, jpeg_bytes, post, synthetic_photo, write_tree

TINY = tiny_engine.TINY


def export(root, seeds, extra=None):
    meta = LAYOUT_DIRS["D"]
    files = {f"{meta}/posts_1.json": [post(f"media/posts/2024/{s}.jpg", 1700000000 + s, f"p{s}")
                                      for s in seeds]}
    files.update({f"media/posts/2024/{s}.jpg": jpeg_bytes(synthetic_photo(s)) for s in seeds})
    files.update(extra or {})
    return write_tree(root, files)


def no_engine(spec, weights):
    raise AssertionError("the model should not be loaded: nothing new to embed")


def test_index_then_reindex_reuses_everything_without_loading_the_model(tmp_path, tiny_weights):
    src = export(tmp_path / "e1", [1, 2, 3])
    idx = tmp_path / "idx"
    first = build_index([src], idx, TINY, tiny_weights, workers=2)
    assert (first.photos, first.embedded, first.reused) == (3, 3, 0)
    again = build_index([src], idx, TINY, tiny_weights, engine_loader=no_engine)
    assert (again.photos, again.embedded, again.reused) == (3, 0, 3)
    index = open_index(idx)
    assert [p.caption for p in index.photos] == ["p1", "p2", "p3"]
    norms = np.linalg.norm(index.embeddings(TINY.name), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_a_newer_export_drops_what_is_gone_and_embeds_only_what_is_new(tmp_path, tiny_weights):
    idx = tmp_path / "idx"
    build_index([export(tmp_path / "old", [1, 2, 3])], idx, TINY, tiny_weights)
    before = open_index(idx)
    emb_2 = np.array(before.embeddings(TINY.name)[1])
    summary = build_index([export(tmp_path / "new", [2, 3, 4])], idx, TINY, tiny_weights)
    assert (summary.photos, summary.embedded, summary.reused) == (3, 1, 2)
    index = open_index(idx)
    assert [p.path for p in index.photos] == [f"media/posts/2024/{s}.jpg" for s in (2, 3, 4)]
    assert np.array_equal(index.embeddings(TINY.name)[0], emb_2)  # reused, not re-embedded


class Crash(Exception):
    pass


def crashing_after(batches: int):
    calls = {"n": 0}

    def loader(spec, weights):
        engine = load_engine(spec, weights)
        real = engine.embed_batch

        def embed_batch(pixels):
            calls["n"] += 1
            if calls["n"] > batches:
                raise Crash
            return real(pixels)

        engine.embed_batch = embed_batch
        return engine

    return loader


def test_an_interrupted_run_keeps_finished_batches_apart_and_the_next_run_reuses_them(
        tmp_path, tiny_weights):
    idx = tmp_path / "idx"
    build_index([export(tmp_path / "v1", [1])], idx, TINY, tiny_weights)
    src = export(tmp_path / "v2", list(range(1, 12)))
    with pytest.raises(Crash):
        build_index([src], idx, TINY, tiny_weights, engine_loader=crashing_after(2))
    assert len(open_index(idx)) == 1  # the visible index is still the previous one
    staged = Staging(idx, next((idx / "staging").iterdir()).name).load()
    assert len(staged) == 2 * TINY.batch_size
    summary = build_index([src], idx, TINY, tiny_weights)
    assert summary.reused == 1 + 2 * TINY.batch_size
    assert summary.embedded == 11 - summary.reused
    assert len(open_index(idx)) == 11
    assert not (idx / "staging").exists()


def test_other_weights_are_refused_unless_rebuilding(tmp_path, tiny_weights):
    idx = tmp_path / "idx"
    src = export(tmp_path / "e", [1, 2])
    build_index([src], idx, TINY, tiny_weights)
    other = tiny_engine.write_weights(tmp_path / "other.npy", seed=1)
    with pytest.raises(IndexUnusable, match="other weights.*--rebuild"):
        build_index([src], idx, TINY, other)
    summary = build_index([src], idx, TINY, other, rebuild=True)
    assert summary.embedded == 2
    assert open_index(idx).models[TINY.name].weights_path == str(other.resolve())


def test_other_preprocessing_is_refused(tmp_path, tiny_weights):
    idx = tmp_path / "idx"
    src = export(tmp_path / "e", [1])
    build_index([src], idx, TINY, tiny_weights)
    changed = dataclasses.replace(TINY, resize=40, builder=TINY.builder)
    with pytest.raises(IndexUnusable, match="other preprocessing"):
        build_index([src], idx, changed, tiny_weights)


def test_a_corrupt_index_is_refused_and_rebuild_starts_over(tmp_path, tiny_weights):
    idx = tmp_path / "idx"
    src = export(tmp_path / "e", [1])
    build_index([src], idx, TINY, tiny_weights)
    (idx / "CURRENT").write_text("garbage")
    with pytest.raises(IndexUnusable, match="--rebuild"):
        build_index([src], idx, TINY, tiny_weights)
    assert build_index([src], idx, TINY, tiny_weights, rebuild=True).photos == 1


def test_one_index_holds_two_models_and_drops_one_that_no_longer_covers(tmp_path, tiny_weights):
    other_spec = register_model(dataclasses.replace(TINY, name="tiny-test-b"))
    idx = tmp_path / "idx"
    src = export(tmp_path / "e", [1, 2, 3])
    build_index([src], idx, TINY, tiny_weights)
    build_index([src], idx, other_spec, tiny_weights)
    assert set(open_index(idx).models) == {"tiny-test", "tiny-test-b"}
    # A subset of the photos: the other model's rows are realigned, not dropped.
    build_index([export(tmp_path / "sub", [3, 1])], idx, TINY, tiny_weights)
    index = open_index(idx)
    assert set(index.models) == {"tiny-test", "tiny-test-b"}
    a, b = index.embeddings("tiny-test"), index.embeddings("tiny-test-b")
    assert np.allclose(a, b)  # same tiny weights: rows must line up photo for photo
    # New photos the other model never saw: it is dropped, and the summary says so.
    summary = build_index([export(tmp_path / "more", [1, 9])], idx, TINY, tiny_weights)
    assert summary.dropped_models == ["tiny-test-b"]
    assert set(open_index(idx).models) == {"tiny-test"}


def test_bad_files_are_reported_and_the_rest_indexed(tmp_path, tiny_weights):
    src = export(tmp_path / "e", [1, 2], extra={
        "media/other/broken.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 100,
        "media/other/cut.jpg": jpeg_bytes(synthetic_photo(5))[:300],
    })
    summary = build_index([src], tmp_path / "idx", TINY, tiny_weights)
    assert summary.photos == 2
    assert any(e.startswith("media/other/broken.jpg: cannot decode jpeg") for e in summary.errors)
    assert any(e.startswith("media/other/cut.jpg:") for e in summary.errors)


def test_unlisted_and_plain_photos_take_their_date_from_exif(tmp_path, tiny_weights):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2019:05:04 12:00:00"
    src = write_tree(tmp_path / "pics", {"a.jpg": jpeg_bytes(synthetic_photo(1), exif=exif),
                                         "b.jpg": jpeg_bytes(synthetic_photo(2))})
    idx = tmp_path / "idx"
    build_index([src], idx, TINY, tiny_weights)
    build_index([src], idx, TINY, tiny_weights, engine_loader=no_engine)  # reused keeps it
    index = open_index(idx)
    assert {p.path: (p.kind, p.taken_at) for p in index.photos} == {
        "a.jpg": ("photo", "2019-05-04T12:00:00"), "b.jpg": ("photo", None)}


def test_the_same_photo_twice_is_embedded_once(tmp_path, tiny_weights):
    same = jpeg_bytes(synthetic_photo(1))
    meta = LAYOUT_DIRS["B"]
    src = write_tree(tmp_path / "e", {
        f"{meta}/posts_1.json": [post("media/posts/1/a.jpg", 1)],
        f"{meta}/stories.json": {"ig_stories": [{"uri": "media/stories/1/a.jpg",
                                                 "creation_timestamp": 2}]},
        "media/posts/1/a.jpg": same, "media/stories/1/a.jpg": same})
    summary = build_index([src], tmp_path / "idx", TINY, tiny_weights)
    assert (summary.photos, summary.embedded) == (2, 1)
    assert {p.kind for p in open_index(tmp_path / "idx").photos} == {"post", "story"}
