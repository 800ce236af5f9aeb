"""analysis.py and the dupes / stats commands: duplicates inside the archive, distributions."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import tiny_engine
from dupecheck.analysis import block_rows, find_duplicates, similarity_stats
from dupecheck.cli import app
from dupecheck.indexer import build_index
from dupecheck.store import IndexedPhoto, ModelEntry, open_index, write_index
from helpers import LAYOUT_DIRS, jpeg_bytes, post, synthetic_photo, write_tree

TINY = tiny_engine.TINY
runner = CliRunner()


def repost(data: bytes) -> bytes:
    """Posted again: resized and re-encoded (colour edits move PDQ bits a lot on these
    smooth synthetic images; the real-photo tests cover edits)."""
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((560, 420))
    return jpeg_bytes(img, quality=75)


@pytest.fixture
def archive_with_reposts(tmp_path, tiny_weights):
    """Photo 1 posted, re-edited and posted again, and archived (same bytes); photo 2 posted
    and re-posted as a story; photos 3-5 once each."""
    meta = LAYOUT_DIRS["D"]
    one = jpeg_bytes(synthetic_photo(1))
    two = jpeg_bytes(synthetic_photo(2))
    files = {
        f"{meta}/posts_1.json": [post("media/posts/1/one.jpg", 1500000000, "first"),
                                 post("media/posts/2/one-edit.jpg", 1600000000, "again!"),
                                 post("media/posts/1/two.jpg", 1500000100, "two")]
        + [post(f"media/posts/3/{s}.jpg", 1500000000 + s, f"p{s}") for s in (3, 4, 5)],
        f"{meta}/archived_posts.json": {"ig_archived_post_media": [
            post("media/archived_posts/1/one.jpg", 1500000000, "first")]},
        f"{meta}/stories.json": {"ig_stories": [{"uri": "media/stories/1/two.jpg",
                                                 "creation_timestamp": 1500000200}]},
        "media/posts/1/one.jpg": one,
        "media/posts/2/one-edit.jpg": repost(one),
        "media/archived_posts/1/one.jpg": one,
        "media/posts/1/two.jpg": two,
        "media/stories/1/two.jpg": jpeg_bytes(synthetic_photo(2).resize((400, 300)), quality=70),
    }
    files.update({f"media/posts/3/{s}.jpg": jpeg_bytes(synthetic_photo(s)) for s in (3, 4, 5)})
    src = write_tree(tmp_path / "export", files)
    idx = tmp_path / "idx"
    build_index([src], idx, TINY, tiny_weights)
    return idx


def test_dupes_finds_reposts_grouped_strongest_first(archive_with_reposts):
    index = open_index(archive_with_reposts)
    groups = find_duplicates(index, TINY.name, threshold=1.0)
    paths = [sorted(p.path for p in g.photos) for g in groups]
    assert paths == [
        ["media/archived_posts/1/one.jpg", "media/posts/1/one.jpg", "media/posts/2/one-edit.jpg"],
        ["media/posts/1/two.jpg", "media/stories/1/two.jpg"],
    ]
    assert [g.evidence for g in groups] == ["exact", "near-identical"]
    kinds = {p.kind for p in groups[0].photos}
    assert kinds == {"post", "archived"}


def test_dupes_in_small_blocks_equals_one_block(archive_with_reposts):
    index = open_index(archive_with_reposts)
    one = find_duplicates(index, TINY.name, 1.0)
    tiny = find_duplicates(index, TINY.name, 1.0, block_bytes=4 * len(index))  # 1 row a block
    assert [(g.evidence, g.rows) for g in one] == [(g.evidence, g.rows) for g in tiny]
    assert block_rows(100_000) * 100_000 * 4 <= 64 * 1024 * 1024


def made_index(tmp_path, emb: np.ndarray, pdq: np.ndarray | None = None):
    n = len(emb)
    photos = [IndexedPhoto(f"p/{i}.jpg", "post", None, f"c{i}", None, f"{i:064x}")
              for i in range(n)]
    if pdq is None:
        pdq = np.random.default_rng(5).integers(0, 256, (n, 32), dtype=np.uint8)
    entry = ModelEntry(TINY.name, emb.shape[1], "0" * 64, "/w", TINY.preprocessing)
    write_index(tmp_path / "m", photos, pdq, {TINY.name: (entry, emb.astype(np.float32))}, [])
    return open_index(tmp_path / "m")


def test_dupes_by_embedding_at_the_threshold(tmp_path):
    emb = np.eye(6, 16)
    emb[1] = emb[0] * 0.96 + emb[1] * 0.28  # cosine 0.96 with row 0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = made_index(tmp_path, emb)
    groups = find_duplicates(index, TINY.name, threshold=0.95)
    assert [(g.evidence, g.rows) for g in groups] == [("similar", [0, 1])]
    assert groups[0].score == pytest.approx(0.96, abs=1e-3)
    assert find_duplicates(index, TINY.name, threshold=0.97) == []


def test_stats_nearest_neighbour_and_pairs_equal_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = made_index(tmp_path, emb)
    stats = similarity_stats(index, TINY.name, 0.9, block_bytes=4 * 30 * 7)  # 7-row blocks
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    assert np.allclose(stats.nearest, sims.max(axis=1), atol=1e-5)
    upper = sims[np.triu_indices(30, 1)]
    assert not stats.sampled and np.allclose(np.sort(stats.pairs), np.sort(upper), atol=1e-5)
    doc = stats.document()
    assert doc["all_pairs"]["p50"] == pytest.approx(float(np.percentile(upper, 50)), abs=1e-5)
    sampled = similarity_stats(index, TINY.name, 0.9, max_pairs=100, seed=1)
    assert sampled.sampled and len(sampled.pairs) == 100
    assert np.all(sampled.pairs < 0.9999)  # never a photo with itself
    again = similarity_stats(index, TINY.name, 0.9, max_pairs=100, seed=1)
    assert np.array_equal(sampled.pairs, again.pairs)


def test_dupes_and_stats_commands(archive_with_reposts, tmp_path):
    result = runner.invoke(app, ["dupes", "--index", str(archive_with_reposts), "-t", "1.0",
                                 "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"] == "tiny-test" and doc["threshold"] == 1.0
    assert [g["evidence"] for g in doc["groups"]] == ["exact", "near-identical"]
    assert set(doc["groups"][0]["photos"][0]) == {"path", "kind", "taken_at", "caption"}
    table = runner.invoke(app, ["dupes", "--index", str(archive_with_reposts), "-t", "1.0"])
    assert "group 1" in table.stdout and "again!" in table.stdout

    plot = tmp_path / "stats.png"
    result = runner.invoke(app, ["stats", "--index", str(archive_with_reposts), "--plot",
                                 str(plot), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["models"][0]["photos"] == 8 and doc["models"][0]["pairs"] == 28
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.width > 300
    text = runner.invoke(app, ["stats", "--index", str(archive_with_reposts)])
    assert "nearest neighbour" in text.stdout and "█" in text.stdout
