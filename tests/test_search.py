"""search.py: the three evidences, ranking, verdicts, crop variants."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import tiny_engine
from dupecheck.engines import load_engine
from dupecheck.errors import UsageError
from dupecheck.search import Candidate, Searcher, check_photos, load_candidate
from dupecheck.store import IndexedPhoto, ModelEntry, open_index, write_index
from helpers import jpeg_bytes, synthetic_photo

TINY = tiny_engine.TINY
DIM = TINY.dim


def fake_sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def basis_mix(cos: float) -> np.ndarray:
    """A unit vector whose cosine with e0 is `cos`."""
    v = np.zeros(DIM, np.float32)
    v[0], v[1] = cos, np.sqrt(1 - cos**2)
    return v


def flip_bits(h: np.ndarray, n: int) -> np.ndarray:
    bits = np.unpackbits(h.copy())
    bits[:n] ^= 1
    return np.packbits(bits)


@pytest.fixture
def made_index(tmp_path):
    """Rows built by hand: each with a known cosine to e0 and PDQ distance to hash H."""
    rng = np.random.default_rng(0)
    query_hash = rng.integers(0, 256, 32, dtype=np.uint8)
    far = np.bitwise_not(query_hash)  # 256 bits away
    spec = [  # (sha, cosine, pdq distance)
        ("s-other", 0.50, 256),
        ("s-near-10", 0.60, 10),
        ("s-similar", 0.95, 200),
        ("s-exact", 0.99, 0),
        ("s-near-3a", 0.70, 3),
        ("s-near-3b", 0.80, 3),
        ("s-low", 0.10, 256),
        ("s-near-31", 0.20, 31),
        ("s-32", 0.30, 32),
    ]
    photos = [IndexedPhoto(f"media/{sha}.jpg", "post", None, sha, None, fake_sha(sha))
              for sha, _, _ in spec]
    emb = np.stack([basis_mix(c) for _, c, _ in spec])
    pdq = np.stack([far if d == 256 else flip_bits(query_hash, d) for _, _, d in spec])
    entry = ModelEntry(TINY.name, DIM, "0" * 64, "/w", TINY.preprocessing)
    write_index(tmp_path / "idx", photos, pdq, {TINY.name: (entry, emb)}, [])
    index = open_index(tmp_path / "idx")
    cand = Candidate("cand.jpg", fake_sha("s-exact"), ["full"], query_hash[None],
                     np.zeros((1, 3, 32, 32), np.float32))
    return index, cand


def test_ranking_exact_then_near_by_distance_ties_by_cosine_then_cosine(made_index):
    index, cand = made_index
    result = Searcher(index, TINY.name).search(cand, basis_mix(1.0)[None], 0.9, top_k=9)
    order = [m.photo.caption for m in result.matches]
    assert order == ["s-exact", "s-near-3b", "s-near-3a", "s-near-10", "s-near-31",
                     "s-similar", "s-other", "s-32", "s-low"]
    evidence = {m.photo.caption: m.evidence for m in result.matches}
    assert evidence["s-exact"] == "exact"
    assert evidence["s-near-31"] == "near-identical" and evidence["s-32"] is None
    assert evidence["s-similar"] == "similar" and evidence["s-other"] is None
    assert result.verdict == "exact"
    assert [m.rank for m in result.matches] == list(range(1, 10))
    similar = next(m for m in result.matches if m.photo.caption == "s-similar")
    assert similar.score == pytest.approx(0.95, abs=1e-5) and similar.pdq_distance == 200


def test_top_k_cuts_and_threshold_one_turns_embeddings_off(made_index):
    index, cand = made_index
    cand.sha256 = fake_sha("nothing")
    cand.pdq = np.random.default_rng(7).integers(0, 256, (1, 32), dtype=np.uint8)  # ~128 bits
    searcher = Searcher(index, TINY.name)
    result = searcher.search(cand, basis_mix(1.0)[None], 0.9, top_k=2)
    assert result.verdict == "similar"
    assert [m.photo.caption for m in result.matches] == ["s-exact", "s-similar"]
    off = searcher.search(cand, basis_mix(1.0)[None], 1.0, top_k=2)
    assert off.verdict == "new" and all(m.evidence is None for m in off.matches)
    assert [m.photo.caption for m in off.matches] == ["s-exact", "s-similar"]  # still listed


def test_skipped_rows_never_match(made_index):
    index, cand = made_index
    result = Searcher(index, TINY.name).search(cand, basis_mix(1.0)[None], 0.9, top_k=3,
                                               skip_rows=frozenset({3}))
    assert "s-exact" not in [m.photo.caption for m in result.matches]
    assert result.verdict == "near-identical"


def test_a_portrait_posted_as_its_4_5_crop_is_found_by_the_crop_variant(tmp_path, tiny_weights):
    original = synthetic_photo(21, (600, 900))  # 2:3 portrait
    posted = original.crop((0, 75, 600, 825)).resize((480, 600))  # Instagram's 4:5 crop
    (tmp_path / "orig.jpg").write_bytes(jpeg_bytes(original, quality=95))
    from dupecheck.indexer import build_index
    from helpers import write_tree

    src = write_tree(tmp_path / "pics", {"posted.jpg": jpeg_bytes(posted, quality=85),
                                         "other.jpg": jpeg_bytes(synthetic_photo(22))})
    build_index([src], tmp_path / "idx", TINY, tiny_weights)
    index = open_index(tmp_path / "idx")
    engine = load_engine(TINY, tiny_weights)
    [result] = check_photos([tmp_path / "orig.jpg"], index, TINY, engine, 1.0)
    assert result.verdict == "near-identical"
    best = result.matches[0]
    assert (best.photo.path, best.variant) == ("posted.jpg", "4:5")
    assert best.pdq_distance <= 31


def test_variants_the_model_sees_alike_are_embedded_once(tmp_path, tiny_weights):
    """A portrait's 4:5 and 1:1 crops show the model the full frame's centre square: two
    inputs embedded, not four, and each variant still gets a vector (its view's)."""
    from dupecheck.imaging import crop_variants, decode

    path = tmp_path / "portrait.jpg"
    path.write_bytes(jpeg_bytes(synthetic_photo(21, (600, 900)), quality=95))
    cand = load_candidate(path, TINY)
    assert cand.variants == ["full", "4:5", "1:1", "1.91:1"]
    assert len(cand.pixels) == 2 and cand.views == [0, 0, 0, 1]
    engine = load_engine(TINY, tiny_weights)
    vectors = cand.per_variant(engine.embed_batch(cand.pixels))
    assert vectors.shape == (4, DIM)
    assert np.array_equal(vectors[1], vectors[0]) and np.array_equal(vectors[2], vectors[0])
    wide = crop_variants(decode(path.read_bytes(), "p", draft=TINY.draft_size).image)[3][1]
    assert np.allclose(vectors[3], engine.embed_batch(TINY.to_input(wide)[None])[0], atol=1e-6)
    assert not np.allclose(vectors[3], vectors[0], atol=1e-3)


def test_unreadable_candidates_are_error_results(tmp_path, tiny_weights, made_index):
    index, _ = made_index
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    engine = load_engine(TINY, tiny_weights)
    results = check_photos([tmp_path / "bad.jpg", tmp_path / "none.jpg"], index, TINY,
                           engine, 0.9)
    assert [r.verdict for r in results] == [None, None]
    assert "bad.jpg: not a photo" in results[0].error
    assert "none.jpg: no such file" in results[1].error


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01])
def test_threshold_must_be_a_cosine(made_index, tiny_weights, threshold):
    index, _ = made_index
    with pytest.raises(UsageError, match="threshold"):
        check_photos([], index, TINY, load_engine(TINY, tiny_weights), threshold)


def test_pdq_distances_agree_with_counting_bits(monkeypatch):
    import dupecheck.evidence as ev

    rng = np.random.default_rng(3)
    hashes = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    query = rng.integers(0, 256, 32, dtype=np.uint8)
    fast = ev.pdq_distances(hashes, query)
    by_bits = np.unpackbits(np.bitwise_xor(hashes, query), axis=1).sum(axis=1)
    assert np.array_equal(fast, by_bits)
    index = type("I", (), {"pdq": hashes, "photos": [], "embeddings": lambda self, m: None,
                           "verify_in_background": lambda self, m: None, "models": {}})()
    searcher = Searcher(index, "x")
    assert np.array_equal(searcher._best_pdq(query[None]), by_bits)
    assert np.array_equal(ev.pdq_distances(hashes[[3, 7]], query), by_bits[[3, 7]])
    queries = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    nearest = np.min([np.unpackbits(np.bitwise_xor(hashes, q), axis=1).sum(axis=1)
                      for q in queries], axis=0)
    assert np.array_equal(searcher._best_pdq(queries), nearest)
    import dupecheck.search

    monkeypatch.setattr(dupecheck.search, "PDQ_BLOCK_ROWS", 64)  # 8 blocks, the last short
    assert np.array_equal(searcher._best_pdq(queries), nearest)
