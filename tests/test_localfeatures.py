"""localfeatures.py: RootSIFT extraction, geometric verification, the FAISS shortlist;
and `re-framed` end to end on re-edits of real photos."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import tiny_engine
from dupecheck import localfeatures as lf
from dupecheck.engines import load_engine
from dupecheck.imaging import decode
from dupecheck.indexer import build_index
from dupecheck.search import REFRAMED, check_photos
from dupecheck.store import open_index
from helpers import (
    REPO,
    instagramify,
    jpeg_bytes,
    reedit_cases,
    reedit_split,
    synthetic_photo,
)


def load(data: bytes) -> Image.Image:
    return decode(data, "photo.jpg").image


@pytest.fixture(scope="module")
def real_photo() -> Image.Image:
    from helpers import PHOTOS

    return load((PHOTOS / "jpg__Canon_EOS_30D_(4).jpg").read_bytes())


def test_extraction_keeps_the_strongest_features_as_bytes(real_photo):
    f = lf.extract(real_photo)
    assert 0 < len(f) <= lf.LOCAL_FEATURES
    assert f.descriptors.dtype == np.uint8 and f.descriptors.shape == (len(f), 128)
    assert max(f.size) == lf.LOCAL_MAX_SIDE
    assert (f.points >= 0).all() and (f.points[:, 0] < f.size[0]).all()
    unit = lf.as_unit_vectors(f.descriptors)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)


def test_a_known_crop_and_turn_is_found_with_its_box_and_rotation(real_photo):
    w, h = real_photo.size
    crop = (int(w * 0.30), int(h * 0.10), int(w * 0.90), int(h * 0.80))
    cropped = real_photo.crop(crop)
    v = lf.verify(lf.extract(cropped), lf.extract(real_photo))
    assert v.reframed, v.reason
    assert v.inliers >= 3 * lf.MIN_INLIERS
    expected = (0.30, 0.10, 0.90, 0.80)
    assert np.allclose(v.transform.box, expected, atol=0.02)
    assert abs(v.transform.rotation_deg) < 0.5
    # Straightened by 4 degrees: the rotation is measured.
    turned = real_photo.rotate(4.0, Image.Resampling.BICUBIC).crop(crop)
    v = lf.verify(lf.extract(turned), lf.extract(real_photo))
    assert v.reframed, v.reason
    assert abs(v.transform.rotation_deg - 4.0) < 0.5


def test_a_checked_photo_is_described_smaller_but_in_the_archive_frame(real_photo):
    """Checked photos' features are taken at CANDIDATE_MAX_SIDE, their points put in the
    LOCAL_MAX_SIDE frame: the same photo maps onto itself at scale 1, and a crop's box and
    scale mean what they mean for archive features."""
    cand, archive = lf.extract_candidate(real_photo), lf.extract(real_photo)
    assert abs(cand.size[0] - archive.size[0]) <= 1 and abs(cand.size[1] - archive.size[1]) <= 1
    assert cand.points[:, 0].max() > lf.CANDIDATE_MAX_SIDE * 0.9 * archive.size[0] / max(
        archive.size)  # spread over the 512 px frame, not the 384 px one it was taken at
    same = lf.verify(cand, archive)
    assert same.reframed and abs(same.transform.scale - 1) < 0.02
    w, h = real_photo.size
    cropped = real_photo.crop((int(w * 0.30), int(h * 0.10), int(w * 0.90), int(h * 0.80)))
    v = lf.verify(lf.extract_candidate(cropped), archive)
    assert v.reframed, v.reason
    assert np.allclose(v.transform.box, (0.30, 0.10, 0.90, 0.80), atol=0.02)
    with_archive_features = lf.verify(lf.extract(cropped), archive)
    assert abs(v.transform.scale - with_archive_features.transform.scale) < 0.03


def test_photos_with_almost_no_features_get_no_evidence_and_no_error():
    flat = Image.new("RGB", (800, 600), (120, 160, 220))
    black = Image.new("RGB", (800, 600), (0, 0, 0))
    tiny = Image.new("RGB", (10, 8), (255, 255, 255))
    for a in (flat, black, tiny):
        assert len(lf.extract(a)) == 0
        for b in (flat, black, tiny):
            v = lf.verify(lf.extract(a), lf.extract(b))
            assert not v.reframed and v.inliers == 0


def _text(seed: int) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=28)
    words = "the quick brown fox jumps over a lazy dog posted photo again summer".split()
    for y in range(20, 580, 40):
        draw.text((20, y), " ".join(rng.choice(words) for _ in range(6)), fill="black",
                  font=font)
    return img


def _bricks(seed: int) -> Image.Image:
    rng = random.Random(seed)
    img = Image.new("RGB", (800, 600), (150, 60, 40))
    draw = ImageDraw.Draw(img)
    for r in range(0, 600, 30):
        off = 0 if (r // 30) % 2 else 30
        for c in range(-60, 800, 60):
            draw.rectangle((c + off, r, c + off + 56, r + 26), outline=(220, 220, 210), width=3,
                           fill=(150 + rng.randint(-20, 20), 60, 40))
    return img


def _tiles(seed: int) -> Image.Image:
    tile = np.random.default_rng(seed).integers(0, 256, (40, 40, 3)).astype(np.uint8)
    return Image.fromarray(np.tile(tile, (15, 20, 1)))


def _blocky(seed: int) -> Image.Image:
    return load(jpeg_bytes(synthetic_photo(seed, (320, 240)), quality=8))


@pytest.mark.parametrize("make", [_text, _bricks, _tiles, _blocky],
                         ids=["text", "repeated-bricks", "tiles", "jpeg-block-grid"])
def test_what_fools_local_features_is_never_re_framed(make):
    """Different pictures that share structure: text in one font, a wall of bricks,
    a repeated tile, small JPEGs whose 8x8 block grid dominates."""
    feats = [lf.extract(make(seed)) for seed in range(5)]
    for i, a in enumerate(feats):
        for j, b in enumerate(feats):
            if i != j:
                assert not lf.verify(a, b).reframed, (make.__name__, i, j)


def test_different_real_photos_are_never_re_framed(real_photos):
    """Every pair of 24 real photos (some are other shots of one scene): no false match."""
    paths = sorted(real_photos.iterdir())[:48:2]
    feats = [lf.extract(decode(p.read_bytes(), p.name, draft=1024).image) for p in paths]
    worst = 0
    for i, a in enumerate(feats):
        for j, b in enumerate(feats):
            if i != j:
                v = lf.verify(a, b)
                assert not v.reframed, (paths[i].name, paths[j].name)
                worst = max(worst, v.inliers)
    assert worst < lf.MIN_INLIERS // 2


def _reference_ratio_matches(query, train, mutual=True):
    """Lowe's ratio test and mutual nearest neighbours, written plainly: full distances,
    each row sorted."""
    q, t = lf.as_unit_vectors(query), lf.as_unit_vectors(train)
    d = ((q[:, None, :] - t[None, :, :]) ** 2).sum(axis=2)
    pairs = []
    for i, row in enumerate(d):
        order = np.argsort(row, kind="stable")
        if row[order[0]] < lf.RATIO ** 2 * row[order[1]] and (
                not mutual or d[:, order[0]].argmin() == i):
            pairs.append((i, order[0]))
    return np.array(pairs, np.int64).reshape(-1, 2)


def test_ratio_matches_agree_with_a_plain_reference():
    """The fast two-nearest search finds exactly the pairs of the plain one, near-duplicate
    descriptors and shuffled rows included."""
    rng = np.random.default_rng(3)
    matched = one_sided = 0
    for _ in range(60):
        n, m = int(rng.integers(2, 120)), int(rng.integers(2, 90))
        shared = rng.integers(0, 60, (max(n, m), 128)).astype(np.uint8)
        # Some query rows twice, slightly apart: both find the same nearest, only one of
        # them is its mutual best (what SIFT's repeated structures do).
        twice = shared[:n // 3] + rng.integers(0, 2, (n // 3, 128)).astype(np.uint8)
        query = np.concatenate([shared[:n], twice])
        train = (shared[:m] + rng.integers(0, 3, (m, 128)).astype(np.uint8))[rng.permutation(m)]
        found = lf._ratio_matches(query, train)
        reference = _reference_ratio_matches(query, train)
        assert np.array_equal(found, reference)
        matched += len(found)
        one_sided += len(set(_reference_ratio_matches(query, train, mutual=False)[:, 0])
                         - set(found[:, 0]))
    assert matched > 0 and one_sided > 0  # the cases have matches, and some not mutual


def test_spread_is_numpys_percentile_span():
    rng = np.random.default_rng(4)
    for n in (2, 3, 14, 57, 300):
        values = (rng.random(n) * 512).astype(np.float32)
        expected = float(np.percentile(values, 95) - np.percentile(values, 5))
        assert lf._spread(values) == pytest.approx(expected, abs=1e-4)
    assert lf._spread(np.zeros(1, np.float32)) == 0.0


def test_verifying_a_reframed_photo_never_imports_numpy_ma():
    """np.percentile's (and np.unique's) first call imports numpy.ma, ~10 ms holding the
    GIL in the middle of a check: a fresh interpreter verifies a re-framed pair without."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from PIL import Image
        from dupecheck import localfeatures as lf
        rng = np.random.default_rng(5)
        img = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                              "RGB").resize((640, 480), Image.Resampling.BICUBIC)
        turned = img.rotate(3.0, Image.Resampling.BICUBIC).crop((192, 96, 588, 422))
        v = lf.verify(lf.extract_candidate(turned), lf.extract(img))
        assert v.reframed and v.inliers >= lf.MIN_INLIERS, v
        print(sorted(m for m in sys.modules if m == "numpy.ma" or m.startswith("numpy.ma.")))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_pack_and_unpack_round_trip(real_photo):
    feats = [lf.extract(real_photo), lf.empty_features(), lf.extract(real_photo.crop((0, 0, 300,
                                                                                      200)))]
    desc, points, meta = lf.pack(feats)
    assert desc.shape == (3, lf.LOCAL_FEATURES, 128) and meta[1, 0] == 0
    for row, f in enumerate(feats):
        back = lf.unpack(desc, points, meta, row)
        assert np.array_equal(back.descriptors, f.descriptors)
        assert np.allclose(back.points, f.points, atol=0.25)  # float16 at <= 512 px
        assert back.size == f.size or len(f) == 0


def test_shortlist_votes_for_the_photo_that_shares_descriptors():
    rng = np.random.default_rng(0)
    feats = []
    for _ in range(30):
        d = rng.integers(0, 60, (lf.LOCAL_FEATURES, 128)).astype(np.uint8)
        feats.append(lf.LocalFeatures(np.zeros((len(d), 2), np.float32), d, (512, 512)))
    desc, _points, meta = lf.pack(feats)
    shortlist = lf.Shortlist.open(lambda: desc, meta, None)
    query = lf.LocalFeatures(np.zeros((100, 2), np.float32), feats[17].descriptors[:100],
                             (512, 512))
    assert shortlist.votes(query)[0] == 17
    assert 17 not in shortlist.votes(query, exclude=17)


def _votes_one_by_one(shortlist, features, limit, exclude):
    """The tally written plainly: a vote per (candidate descriptor, row), rows by votes."""
    k = min(lf.SEARCH_NEIGHBOURS, shortlist.index.ntotal)
    dist, ids = shortlist.index.search(
        lf.as_unit_vectors(features.descriptors[:lf.SHORTLIST_FEATURES]), k)
    tally: dict[int, int] = {}
    for q in range(len(ids)):
        close = (dist[q] < lf.RATIO ** 2 * dist[q, -1]) & (ids[q] >= 0) & (ids[q] != exclude)
        for row in set(ids[q][close].tolist()):
            tally[row] = tally.get(row, 0) + 1
    ranked = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    return [row for row, count in ranked[:limit] if count >= 2]


def test_votes_for_many_photos_at_once_are_each_the_same_as_alone(real_photos):
    """`dupes` votes for many rows in one FAISS search: each answer must be the plain
    tally's, and the same as its own search."""
    photos = sorted(real_photos.glob("jpg__*"))[:24]
    feats = [lf.extract(load(p.read_bytes())) for p in photos]
    desc, _points, meta = lf.pack(feats)
    shortlist = lf.Shortlist.open(lambda: desc, meta, None)
    w, h = load(photos[5].read_bytes()).size
    queries = feats + [lf.extract_candidate(load(photos[5].read_bytes()).crop(
        (w // 4, h // 8, w, h)))]
    excludes = list(range(len(feats))) + [None]
    together = shortlist.votes_many(queries, limit=4, excludes=excludes)
    assert together[-1][0] == 5  # the crop votes for its photo
    assert sum(len(v) for v in together) > len(feats)  # real photos share some votes
    for f, exclude, answer in zip(queries, excludes, together, strict=True):
        assert answer == _votes_one_by_one(shortlist, f, 4, exclude)
        assert answer == shortlist.votes(f, limit=4, exclude=exclude)


def test_a_large_index_stores_an_ivf_pq_shortlist_that_finds_the_same(monkeypatch):
    rng = np.random.default_rng(1)
    feats = [lf.LocalFeatures(np.zeros((lf.LOCAL_FEATURES, 2), np.float32),
                              rng.integers(0, 60, (lf.LOCAL_FEATURES, 128)).astype(np.uint8),
                              (512, 512)) for _ in range(80)]
    desc, _points, meta = lf.pack(feats)
    assert lf.build_shortlist(desc, meta) is None  # small: exact, built on open
    monkeypatch.setattr(lf, "FLAT_MAX_DESCRIPTORS", 1000)
    stored = lf.build_shortlist(desc, meta)
    assert stored is not None and stored.dtype == np.uint8
    assert stored.nbytes < desc.nbytes / 2  # PQ codes and ids: smaller than the descriptors
    shortlist = lf.Shortlist.open(lambda: pytest.fail("descriptors read"), meta, stored)
    for row in (3, 41, 77):
        query = lf.LocalFeatures(np.zeros((64, 2), np.float32), feats[row].descriptors[:64],
                                 (512, 512))
        assert shortlist.votes(query)[0] == row


def test_a_stored_shortlist_opens_without_faiss_precomputed_table(monkeypatch, tmp_path):
    """FAISS rebuilds IVF-PQ's precomputed table (16 MB at 1024 lists) on every read unless
    told not to; the shortlist skips it, from bytes and from a memory-mapped file, and finds
    what a table-built index finds."""
    import faiss

    rng = np.random.default_rng(2)
    feats = [lf.LocalFeatures(np.zeros((lf.LOCAL_FEATURES, 2), np.float32),
                              rng.integers(0, 60, (lf.LOCAL_FEATURES, 128)).astype(np.uint8),
                              (512, 512)) for _ in range(60)]
    desc, _points, meta = lf.pack(feats)
    monkeypatch.setattr(lf, "FLAT_MAX_DESCRIPTORS", 1000)
    stored = lf.build_shortlist(desc, meta)
    path = tmp_path / "shortlist.faiss"
    stored.tofile(path)
    with_table = faiss.deserialize_index(stored)
    assert with_table.use_precomputed_table == 1 and with_table.precomputed_table.size() > 0
    with_table.nprobe = lf.SHORTLIST_PROBES
    queries = lf.as_unit_vectors(desc[7, :64])
    _, expected = with_table.search(queries, lf.SEARCH_NEIGHBOURS)
    for source in (stored, path):
        opened = lf.Shortlist.open(lambda: pytest.fail("descriptors read"), meta, source).index
        assert opened.use_precomputed_table == 0 and opened.precomputed_table.size() == 0
        _, found = opened.search(queries, lf.SEARCH_NEIGHBOURS)
        assert (found == expected).mean() > 0.99


# -- end to end on re-edits of real photos ------------------------------------------------


def _posted_index(tmp_path, posted, name="{:03d}.jpg"):
    """The photos as Instagram posts them, in a plain folder, indexed with the test model."""
    folder = tmp_path / "export"
    folder.mkdir()
    for i, path in enumerate(posted):
        (folder / name.format(i)).write_bytes(instagramify(path.read_bytes()))
    weights = tiny_engine.write_weights(tmp_path / "tiny.npy")
    build_index([folder], tmp_path / "idx", tiny_engine.TINY, weights)
    return open_index(tmp_path / "idx"), weights


def _reframed_run(photos, tmp_path, part: str):
    posted, never, seed = reedit_split(list(photos.iterdir()), part)
    index, weights = _posted_index(tmp_path, posted)
    assert index.local is not None
    cases = reedit_cases(posted, never, seed)
    paths = []
    for n, (_, _name, data) in enumerate(cases):
        paths.append(tmp_path / f"case-{n:03d}.jpg")
        paths[-1].write_bytes(data)
    engine = load_engine(tiny_engine.TINY, weights)
    results = check_photos(paths, index, tiny_engine.TINY, engine, threshold=1.0, top_k=3)
    found = missed = false = 0
    for (own, _name, _), result in zip(cases, results, strict=True):
        if own is None:
            false += result.verdict != "new"
        elif (result.verdict == REFRAMED or result.verdict == "near-identical") and \
                result.matches[0].photo.path.endswith(f"{own:03d}.jpg"):
            found += 1
        else:
            missed += 1
    return found, missed, false, len(never)


@pytest.mark.slow
def test_re_edits_of_the_held_back_photos_are_found_and_never_posted_ones_are_not(
        shared_photos, tmp_path):
    """The issue's target on the part never tuned on: >= 97% of 200 re-edits (off-centre
    crops, straightening, grades, black and white, combinations) found at rank 1 with the
    embedding off, and not one never-posted photo flagged."""
    found, missed, false, never = _reframed_run(shared_photos, tmp_path, "held-back")
    assert found + missed == 200 and never > 40
    assert found / 200 >= 0.97, f"{found} of 200"
    assert false == 0


def test_edges_of_the_shortlist_and_the_rule_on_an_old_archive(real_photos, tmp_path):
    """Re-framed is stronger than similar, weaker than near-identical: ranking puts it
    between them; an index without local features still checks, without it."""
    from dupecheck.store import write_index

    posted = sorted(real_photos.iterdir())[:3]
    index, weights = _posted_index(tmp_path, posted, "{}.jpg")
    original = load(posted[1].read_bytes())
    w, h = original.size
    candidate = tmp_path / "recrop.jpg"
    buf = io.BytesIO()
    original.crop((int(w * .35), int(h * .3), int(w * .95), int(h * .9))).save(buf, "JPEG")
    candidate.write_bytes(buf.getvalue())
    engine = load_engine(tiny_engine.TINY, weights)
    [result] = check_photos([candidate], index, tiny_engine.TINY, engine, 1.0, top_k=3)
    assert result.verdict == REFRAMED
    top = result.matches[0]
    assert top.photo.path == "1.jpg" and top.evidence == REFRAMED and top.inliers >= 16
    assert all(m.evidence is None for m in result.matches[1:])
    # The same index written without local features: no re-framed, no error.
    write_index(tmp_path / "old", index.photos, index.pdq,
                {n: (e, np.asarray(index.embeddings(n))) for n, e in index.models.items()}, [])
    old = open_index(tmp_path / "old")
    assert old.local is None
    [result] = check_photos([candidate], old, tiny_engine.TINY, engine, 1.0, top_k=3)
    assert result.verdict == "new" and all(m.inliers is None for m in result.matches)


def test_features_taken_beside_are_the_features_taken_here():
    """A check takes its photo's features in another thread (extract_beside) while it
    hashes and embeds; several at once (the service's concurrent checks) each get their
    own photo's features, exactly as extract() gives them."""
    photos = [synthetic_photo(s, (900, 700)) for s in range(4)]
    futures = [lf.extract_beside(img) for img in photos]
    for img, future in zip(photos, futures, strict=True):
        here = lf.extract_candidate(img)
        there = future.result(timeout=60)
        assert len(here) > 0 and there.size == here.size
        assert np.array_equal(there.points, here.points)
        assert np.array_equal(there.descriptors, here.descriptors)


# -- each part of the re-framed rule, on its own ------------------------------------------


def _seen_through(scale: float = 1.0, turn: float = 0.0, n: int = 30,
                  shift: tuple[float, float] = (0.0, 0.0), region=None, seed: int = 0):
    """(candidate, archive) features of the same points, the candidate's frame mapped onto
    the archive's 512 x 384 by x_archive = scale * R(turn) x_candidate + t (its centre on
    the archive's centre + shift): every rule but the one a test bends is met."""
    import math

    rng = np.random.default_rng(seed)
    aw, ah = 512, 384
    x0, y0, x1, y1 = region or (0, 0, aw, ah)
    archive_points = rng.uniform([x0, y0], [x1, y1], (n, 2)).astype(np.float32)
    descriptors = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    c, s = math.cos(math.radians(turn)), math.sin(math.radians(turn))
    linear = scale * np.array([[c, -s], [s, c]])
    quarter = round(turn / 90) % 2 == 1
    cw, ch = (ah / scale, aw / scale) if quarter else (aw / scale, ah / scale)
    t = np.array([aw / 2 + shift[0], ah / 2 + shift[1]]) - linear @ np.array([cw / 2, ch / 2])
    candidate_points = (np.linalg.inv(linear) @ (archive_points - t).T).T.astype(np.float32)
    return (lf.LocalFeatures(candidate_points, descriptors, (round(cw), round(ch))),
            lf.LocalFeatures(archive_points, descriptors.copy(), (aw, ah)))


def test_the_baseline_of_the_rule_tests_is_re_framed():
    result = lf.verify(*_seen_through())
    assert result.reframed and result.inliers == 30, result
    assert abs(result.transform.rotation_deg) < 0.1 and abs(result.transform.scale - 1) < 0.01


@pytest.mark.parametrize("n,ok", [(13, False), (14, True)])
def test_at_least_14_distinct_agreeing_keypoints(n, ok):
    result = lf.verify(*_seen_through(n=n))
    assert result.reframed is ok and result.inliers == n, result
    if not ok:
        assert result.reason == "13 inliers, fewer than 14"
    candidate, archive = _seen_through(n=30)
    twice = lf.LocalFeatures(np.concatenate([candidate.points[:10]] * 3),
                             np.concatenate([candidate.descriptors[:10]] * 3), candidate.size)
    assert lf._distinct(twice.points) == 10  # one place counted once, however often seen


@pytest.mark.parametrize("turn,ok", [(10, True), (14, True), (20, False), (45, False),
                                     (70, False), (76, True), (90, True), (100, True),
                                     (180, True), (-90, True), (-110, False)])
def test_a_turn_within_15_degrees_of_a_quarter_turn_and_no_other(turn, ok):
    result = lf.verify(*_seen_through(turn=turn))
    assert result.reframed is ok, (turn, result)
    if not ok:
        assert "implausible rotation" in result.reason


@pytest.mark.parametrize("scale,ok", [(0.15, False), (0.25, True), (4.5, True), (6.0, False)])
def test_a_scale_between_0_2_and_5(scale, ok):
    result = lf.verify(*_seen_through(scale=scale))
    assert abs(result.transform.scale - scale) < 0.01 * scale
    assert result.reframed is ok, (scale, result)
    if not ok:
        assert "implausible scale" in result.reason


@pytest.mark.parametrize("shifted,ok", [(0.9, False), (0.6, True)])
def test_the_frames_overlap_by_at_least_15_percent(shifted, ok):
    """The candidate's frame slid sideways off the archive's: only a strip is shared, and
    the agreeing points all lie in it."""
    left = 512 * (shifted - 0.5)
    result = lf.verify(*_seen_through(shift=(512 * shifted, 0), region=(left + 1, 0, 512, 384)))
    assert result.reframed is ok, result
    if not ok:
        assert result.reason == "overlap too small"


@pytest.mark.parametrize("n,ok", [(20, False), (38, False), (48, True)])
def test_agreeing_points_in_one_spot_need_40_to_count(n, ok):
    candidate, archive = _seen_through(n=n, region=(200, 150, 240, 180))
    result = lf.verify(candidate, archive)
    assert result.inliers == lf._distinct(archive.points) and result.reframed is ok, result
    assert (result.inliers >= lf.STRONG_INLIERS) is ok
    if not ok:
        assert result.reason == lf.CLUSTERED
