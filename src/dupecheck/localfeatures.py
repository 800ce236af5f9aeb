"""The fourth evidence, `re-framed`: the same exposure, cropped, zoomed or straightened.

Global evidence (PDQ, embeddings) sees a whole frame, so an off-centre crop or a few
degrees of straightening moves it far. Local features do not move: RootSIFT keypoints
of the candidate are matched with an archive photo's, and a similarity transform
(rotation, uniform scale, translation: what crop, zoom and straightening are) is fitted
with RANSAC. Many inliers that agree on one plausible transform, spread over the
overlap, prove the same pixels. The rule is strict on purpose: a false `re-framed` is
worse than a miss, and PDQ and the embedding still catch the easier re-posts.

A checked photo comes back in other forms too (dupecheck.reposts): turned a quarter (a
turn near 90, 180 or 270 degrees is as plausible as near 0), mirrored (its descriptors
permuted, `mirror`), a detail or a collage's cell (`closer_looks`; and a second look at the
archive photo's matched region, `region_features`, where the stored features are too few).

OpenCV and FAISS are imported on first use: `check` pays for them only when it runs.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# -- constants: one place ---------------------------------------------------------------------

LOCAL_MAX_SIDE = 512  # the frame every photo's keypoints are placed in (RANSAC_PIXELS, boxes)
# Features are taken smaller than that frame, their points then scaled into it, so that
# every transform means the same. OpenCV's SIFT doubles its input first, so its cost goes
# with the side squared: an archive photo's features at 320 px took 21.0 ms of CPU against
# 37.9 at 512 (LOCAL_VERSION 1); on the two tuning parts of the re-edit set archive
# features at 512 / 320 / 256 px found 396 / 394 / 387 of 400, none flagged at any side
# (benchmarks/2026-11-28-reframed-2.txt).
# An archive photo keeps its strongest 192 features, taken at 288 px (LOCAL_VERSION 4):
# OpenCV's SIFT computes descriptors only for the keypoints it keeps, so the count sets a
# large part of its cost. SIFT CPU per export photo against 256 at 320 px (ad-hoc, 5
# interleaved): 192 at 320 px 0.85x, 256 at 288 px 0.88x, 192 at 288 px 0.74x, 160 at
# 320 px 0.84x. On the two tuning parts (embedding off): 395 / 393 / 393 / 391 of 400 for
# 256@320, 192@320, 192@288, 160@320, none flagged; 192@288 keeps the target (97%) at the
# lowest cost (see README "How the thresholds were chosen" for the held-back run).
ARCHIVE_FEATURE_SIDE = 288
LOCAL_FEATURES = 192  # the strongest keypoints kept per archive photo (the stored width)
# A photo being checked is searched with features taken at 384 px (34 ms of CPU against 52
# ms at 512). On the two tuning parts: 396/400 found at 384 px against 395/400 at 512, none
# flagged; held-back 197/200 both ways (benchmarks/2026-11-28-reframed-candidate-384.txt).
CANDIDATE_MAX_SIDE = 384
CANDIDATE_FEATURES = 256  # the strongest kept per photo being checked
DESCRIPTOR_DIM = 128  # SIFT
# RootSIFT components are at most sqrt(0.2) (SIFT clamps at 0.2 of its L2 norm, L1 >= L2),
# so x512 fits a byte with room to spare.
ROOTSIFT_SCALE = 512.0
# SIFT's scale space: 2 layers per octave instead of OpenCV's 3, with its contrast
# threshold scaled to match (OpenCV divides it by the layers, so 0.04 over 3 layers is
# 0.0267 over 2): less CPU per photo (x0.87 ad-hoc, x0.96 in the saved run's section 4;
# the descriptors, a large part of it, do not change), and on the two tuning parts 395 of
# 400 found against 394 with OpenCV's defaults, none flagged; held-back 198 against 196
# (benchmarks/2026-11-29-reframed-3.txt runs both side by side).
SIFT_OCTAVE_LAYERS = 2
SIFT_CONTRAST = 0.04 * SIFT_OCTAVE_LAYERS / 3
LOCAL_VERSION = 4  # bump when extraction changes: stored features are then recomputed

RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 4.0  # reprojection error, in pixels of the 512-px frames
# Straightening is a few degrees, and a photo turned a quarter (90, 180 or 270 degrees in
# its pixels, no EXIF to undo it) is the same photo turned: a turn within this of a
# multiple of 90 degrees is plausible, anything between is another photo.
MAX_ROTATION_DEG = 15.0
MIN_SCALE, MAX_SCALE = 0.2, 5.0  # the candidate's 512 px against the archive photo's
# The rule for `re-framed`; see README "How the thresholds were chosen" for the figures.
MIN_INLIERS = 14  # distinct keypoint positions that agree on the transform
MIN_INLIER_FRACTION = 0.25  # of the ratio-test matches that fall in the overlap
MIN_SPREAD = 0.15  # inliers span at least this fraction of the overlap's width and height
STRONG_INLIERS = 40  # this many need no spread: a subject in one spot is still the same pixels
MIN_OVERLAP = 0.15  # the overlap covers at least this fraction of the smaller frame

# A second look at the archive photo itself, where the stored features are too few: a
# detail keeps 12-25% of an archive photo's area, so about as few of its 192 stored
# keypoints, and agrees on fewer than MIN_INLIERS though the transform is right. The
# export still holds the photo: its matched region (the box, with a margin) gets features
# of its own, as dense as a checked photo's, and is verified again. It must agree with
# the first look's transform, so that a chance partial match cannot pick its own region.
SECOND_LOOK_INLIERS = 3  # a few agreeing keypoints: worth a second look
SECOND_LOOKS = 1  # archive photos looked at again per checked photo, most inliers first
REGION_MARGIN = 0.15  # of the box's width and height, on each side
REGION_SIDE = 384
REGION_FEATURES = 384
SECOND_LOOK_TURN_DEG = 5.0  # the second transform's turn, against the first's
SECOND_LOOK_SCALE = 1.25  # and its scale, at most this factor either way

SHORTLIST_VOTES = 8  # photos verified from the descriptor votes
CLOSER_LOOK_VOTES = 3  # of a closer look's votes
SHORTLIST_GLOBAL = 2  # plus the best rows by cosine and by PDQ
SEARCH_NEIGHBOURS = 8  # descriptors looked up per candidate descriptor
# Inverted lists searched per descriptor (of up to 1024). On the two tuning parts among
# 10,000 archive photos 8, 6, 4 and 2 lists found the same (194 and 199 of 200, none
# flagged; benchmarks/2026-11-29-reframed-scale-tuning*.txt); a cold check's search of
# a 10k index takes half the time at 4 (ad-hoc, first search in a fresh process: ~12
# against ~28 ms wall, ~22 against ~56 ms of CPU on two threads). 4 keeps a margin.
SHORTLIST_PROBES = 4
# The stored (IVF-PQ) shortlist of a large index holds each photo's strongest 128
# descriptors: less of the file to verify and to search; verification uses all it keeps.
SHORTLIST_FEATURES = 128
FLAT_MAX_DESCRIPTORS = 1 << 17  # below this the shortlist is exact (built on open)


@dataclass
class LocalFeatures:
    """One photo's keypoints and RootSIFT descriptors, in the LOCAL_MAX_SIDE frame."""

    points: np.ndarray  # (n, 2) float32, x and y in pixels of the LOCAL_MAX_SIDE frame
    descriptors: np.ndarray  # (n, 128) uint8, RootSIFT x ROOTSIFT_SCALE
    size: tuple[int, int]  # (width, height) of the photo in that frame

    def __len__(self) -> int:
        return len(self.points)


PART_OF_PHOTO = 0.9  # box_in_photo's area below which the report says where it sits


@dataclass
class Look:
    """One way a checked photo is searched for: its features as taken, as its mirror
    image's (`mirrored`), or a closer look at part of it (points still in the whole
    photo's frame, so that every transform means the same)."""

    features: LocalFeatures
    mirrored: bool = False
    closer: bool = False  # a closer look (closer_looks): only its best few rows verified
    queries: int = SHORTLIST_FEATURES  # its strongest descriptors that vote (at most that)


def first_looks(features: LocalFeatures) -> list[Look]:
    """The checked photo's features as taken, and as its mirror image's."""
    return [Look(features, queries=SHORTLIST_FEATURES),
            Look(mirror(features), mirrored=True, queries=MIRROR_QUERIES)]


@dataclass
class Transform:
    """Where the candidate sits in the archive photo."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the archive photo
    rotation_deg: float
    scale: float  # archive pixels per candidate pixel, both at LOCAL_MAX_SIDE
    # where the archive photo's matched part sits in the candidate, as fractions of it
    box_in_photo: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    mirrored: bool = False  # the candidate is the archive photo's mirror image

    def fills_part(self) -> bool:
        """Whether the archive photo fills only a part of the candidate (a story, a
        collage's cell), worth saying where."""
        x0, y0, x1, y1 = self.box_in_photo
        return (x1 - x0) * (y1 - y0) < PART_OF_PHOTO

    def document(self) -> dict[str, object]:
        return {"box": [round(v, 4) for v in self.box],
                "box_in_photo": [round(v, 4) for v in self.box_in_photo],
                "rotation_deg": round(self.rotation_deg, 2), "scale": round(self.scale, 4),
                "mirrored": self.mirrored}


@dataclass
class Verification:
    """The outcome of matching a candidate with one archive photo."""

    inliers: int
    matches: int  # ratio-test matches
    transform: Transform | None
    reframed: bool
    reason: str  # why not, when not


_detectors: dict[tuple[int, int, float], object] = {}


def preload() -> None:
    """Import what the re-framed search needs (~0.1 s): LocalStore.prefetch does it in a
    thread. (The search avoids np.unique: its first call imports numpy.ma, ~15 ms of
    import holding the GIL that a check's other threads would wait for.)"""
    import cv2  # noqa: F401
    import faiss  # noqa: F401


def _distinct_sorted(values: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d integer array, without importing numpy.ma."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def _detector(count: int):  # type: ignore[no-untyped-def]
    """OpenCV's SIFT keeping the `count` strongest keypoints: it computes descriptors only
    for those, so the count sets a large part of the cost. Keyed by the settings, read at
    call time, so that scripts/bench_reframed.py can compare them in one run."""
    key = (count, SIFT_OCTAVE_LAYERS, SIFT_CONTRAST)
    sift = _detectors.get(key)
    if sift is None:
        import cv2

        # One OpenCV thread: dupecheck already takes features of several photos at once
        # (index) or beside other work (check); OpenCV's own pool only added ~10% of CPU
        # to every photo's SIFT here (26.4-27.7 against 24.0-24.9 ms, ad-hoc).
        cv2.setNumThreads(1)
        sift = _detectors.setdefault(key, cv2.SIFT_create(
            nfeatures=count, nOctaveLayers=SIFT_OCTAVE_LAYERS, contrastThreshold=SIFT_CONTRAST))
    return sift


def reduce_for_features(img: Image.Image, max_side: int) -> Image.Image:
    """Grey, long side at most `max_side` (Image.reduce first: cheap on big photos)."""
    grey = img.convert("L")
    factor = max(grey.size) // (2 * max_side)
    if factor >= 2:
        grey = grey.reduce(factor)
    if max(grey.size) > max_side:
        grey = grey.copy()
        grey.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return grey


def extract(img: Image.Image, side: int | None = None, count: int | None = None
            ) -> LocalFeatures:
    """RootSIFT features of an upright photo, the `count` strongest taken with its long side
    reduced to `side` (an archive photo's ARCHIVE_FEATURE_SIDE and LOCAL_FEATURES when None,
    read at call time so that scripts/bench_reframed.py can compare them) and placed in the
    LOCAL_MAX_SIDE frame; a flat photo simply has few or none."""
    count = count or LOCAL_FEATURES
    grey = reduce_for_features(img, side or ARCHIVE_FEATURE_SIDE)
    pixels = np.asarray(grey, dtype=np.uint8)
    w, h = img.size
    frame = min(1.0, LOCAL_MAX_SIDE / max(w, h, 1))
    size = (max(1, round(w * frame)), max(1, round(h * frame)))
    empty = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_DIM), np.uint8),
                          size)
    if min(pixels.shape) < 16:
        return empty
    keypoints, desc = _detector(count).detectAndCompute(pixels, None)
    if desc is None or not keypoints:
        return empty
    order = np.argsort([-k.response for k in keypoints], kind="stable")[:count]
    points = np.array([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    if size != grey.size:
        points *= np.float32(size[0] / grey.size[0])
    desc = np.asarray(desc, np.float32)[order]
    root = np.sqrt(desc / np.maximum(desc.sum(axis=1, keepdims=True), 1e-7))
    quantised = np.clip(np.rint(root * ROOTSIFT_SCALE), 0, 255).astype(np.uint8)
    return LocalFeatures(points, quantised, size)


def extract_candidate(img: Image.Image) -> LocalFeatures:
    """Features of a photo being checked (CANDIDATE_MAX_SIDE and CANDIDATE_FEATURES, in
    the same frame)."""
    return extract(img, CANDIDATE_MAX_SIDE, CANDIDATE_FEATURES)


# Closer looks at a checked photo, for what its full frame's 256 features miss: the photo
# at a small scale (a detail seen at about the scale the archive's features were taken,
# 288 px for the whole photo), and each cell of a 2 x 2 grid (a collage: a cell holds a
# quarter of the full frame's features, too few for the shortlist to propose the photo).
# Each verifies only its best CLOSER_LOOK_VOTES rows. On the forms' tuning parts: details
# 28 -> 38 and 36 of 40 with the second look, collages 25 -> 40 and 40 (cells at 288 px x
# 192 found the same as 192 px x 128, which costs less than half; scripts/bench_reframed.py).
DETAIL_SIDE = 160
DETAIL_FEATURES = 256
CELLS = 2  # per side
CELL_SIDE = 192
CELL_FEATURES = 128
SECOND_LOOK_SIDE = 1024  # a checked photo keeps a grey copy this large for the second look
# Every descriptor that votes is one more search of the shortlist, so the closer looks
# vote with few of their strongest descriptors. The mirror image votes with as many as the
# photo itself: with 32 or 64 a mirrored re-crop of a real photo went unproposed (3
# inliers; 57 with 128), though the forms' sets (mostly exact mirrors, PDQ's) did not show it.
MIRROR_QUERIES = 128
CLOSER_LOOK_QUERIES = 16


@dataclass
class CloserLooks:
    """A checked photo's closer looks, and its grey copy for a second look at a region."""

    looks: list[Look]
    grey: Image.Image


def _frame_size(whole: tuple[int, int]) -> tuple[int, int]:
    """The size of a photo of `whole` pixels in its LOCAL_MAX_SIDE frame."""
    frame = min(1.0, LOCAL_MAX_SIDE / max(*whole, 1))
    return max(1, round(whole[0] * frame)), max(1, round(whole[1] * frame))


def _in_frame(features: LocalFeatures, box: tuple[int, int, int, int],
              whole: tuple[int, int], size: tuple[int, int] | None = None) -> LocalFeatures:
    """Features of a crop `box` of a photo of `whole` pixels, placed in the whole photo's
    frame (`size`: its LOCAL_MAX_SIDE frame when None)."""
    size = size or _frame_size(whole)
    crop_frame = features.size[0] / max(box[2] - box[0], 1)
    points = ((features.points / crop_frame + np.float32([box[0], box[1]]))
              * np.float32(size[0] / whole[0]))
    return LocalFeatures(points.astype(np.float32), features.descriptors, size)


def closer_looks(img: Image.Image) -> CloserLooks:
    """The detail look and the grid's cells (each placed in the whole photo's frame)."""
    grey = reduce_for_features(img, SECOND_LOOK_SIDE)
    looks = [Look(extract(grey, DETAIL_SIDE, DETAIL_FEATURES), closer=True,
                  queries=CLOSER_LOOK_QUERIES)]
    w, h = grey.size
    for r in range(CELLS):
        for c in range(CELLS):
            box = (c * w // CELLS, r * h // CELLS, (c + 1) * w // CELLS, (r + 1) * h // CELLS)
            cell = extract(grey.crop(box), CELL_SIDE, CELL_FEATURES)
            looks.append(Look(_in_frame(cell, box, (w, h)), closer=True,
                              queries=CLOSER_LOOK_QUERIES))
    return CloserLooks(looks, grey)


def closer_looks_beside(img: Image.Image) -> Future[CloserLooks]:
    """closer_looks() in the extractor's pool, as extract_beside does."""
    return _pool().submit(closer_looks, img)


_extractor: ThreadPoolExecutor | None = None
_extractor_lock = threading.Lock()


def extract_beside(img: Image.Image, candidate: bool = True) -> Future[LocalFeatures]:
    """extract() in another thread: Pillow's reduce and OpenCV's SIFT let go of the GIL,
    so a checked photo's features are taken on another core while its PDQ hashes and model
    inputs are made (a cold check spends that time on one core otherwise). One worker per
    core, so that the service's concurrent checks still take features side by side."""
    img.load()  # read by two threads at once: nothing may be left to load lazily
    return _pool().submit(extract_candidate if candidate else extract, img)


def _pool() -> ThreadPoolExecutor:
    global _extractor
    with _extractor_lock:
        if _extractor is None:
            _extractor = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                                            thread_name_prefix="dupecheck-features")
        return _extractor


# A SIFT descriptor is 4 x 4 cells (rows along the keypoint's own y axis) of 8 orientation
# bins. Flipping a photo left-right mirrors each patch along that axis and reflects every
# gradient's angle: the rows of cells reversed, bin k becoming bin -k (mod 8). The mirror
# image's descriptors are this permutation of the original's, exactly (tests compare it
# with extraction from the flipped photo), so a mirror is matched without extracting again.
MIRROR_PERMUTATION = (np.arange(DESCRIPTOR_DIM).reshape(4, 4, 8)[::-1][..., (-np.arange(8)) % 8]
                      .reshape(-1))


def mirror(features: LocalFeatures) -> LocalFeatures:
    """The features of the photo flipped left-right (points and descriptors)."""
    points = features.points.copy()
    points[:, 0] = features.size[0] - points[:, 0]
    return LocalFeatures(points, np.ascontiguousarray(features.descriptors[:, MIRROR_PERMUTATION]),
                         features.size)


def as_unit_vectors(descriptors: np.ndarray) -> np.ndarray:
    """Stored uint8 RootSIFT -> float32 rows of unit length (L2 then acts as Hellinger)."""
    vectors = np.asarray(descriptors, np.float32).reshape(-1, DESCRIPTOR_DIM)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-6)


# -- packing into row-aligned arrays ------------------------------------------------------------


def empty_features() -> LocalFeatures:
    return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_DIM), np.uint8),
                         (0, 0))


def pack(features: list[LocalFeatures]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, K, 128) uint8 descriptors, (N, K, 2) float16 points, (N, 3) uint16 count/w/h."""
    n = len(features)
    desc = np.zeros((n, LOCAL_FEATURES, DESCRIPTOR_DIM), np.uint8)
    points = np.zeros((n, LOCAL_FEATURES, 2), np.float16)
    meta = np.zeros((n, 3), np.uint16)
    for i, f in enumerate(features):
        k = min(len(f), LOCAL_FEATURES)
        desc[i, :k] = f.descriptors[:k]
        points[i, :k] = f.points[:k]
        meta[i] = (k, f.size[0], f.size[1])
    return desc, points, meta


def unpack(desc: np.ndarray, points: np.ndarray, meta: np.ndarray, row: int) -> LocalFeatures:
    k, w, h = (int(v) for v in meta[row])
    return LocalFeatures(np.asarray(points[row, :k], np.float32),
                         np.asarray(desc[row, :k], np.uint8), (w, h))


# -- verification ---------------------------------------------------------------------------


def _ratio_matches(query: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(m, 2) index pairs passing Lowe's ratio test, one per query descriptor, mutual best.

    The two nearest by two row-wise argmax/max passes over the similarities (unit vectors:
    nearest is most similar), ~2.4x faster than a partition per row; verifying a shortlist
    is mostly this (tests/test_localfeatures.py compares it with a plain reference)."""
    if len(query) < 2 or len(train) < 2:
        return np.zeros((0, 2), np.int64)
    q, t = as_unit_vectors(query), as_unit_vectors(train)
    similarity = q @ t.T
    rows = np.arange(len(q))
    best = similarity.argmax(axis=1)
    mutual = similarity.argmax(axis=0)[best] == rows
    s1 = similarity[rows, best]
    similarity[rows, best] = -np.inf  # the second nearest: the best of the rest
    s2 = similarity.max(axis=1)
    d1 = np.maximum(2.0 - 2.0 * s1, 0.0)  # squared L2 of unit vectors
    d2 = np.maximum(2.0 - 2.0 * s2, 0.0)
    passed = d1 < (RATIO * RATIO) * d2
    keep = np.flatnonzero(passed & mutual)
    return np.stack([keep, best[keep]], axis=1)


def _spread(values: np.ndarray) -> float:
    """The 5th-to-95th percentile span (np.percentile's linear rule), without importing
    numpy.ma: np.percentile's first call does, ~10 ms holding the GIL in the middle of a
    check that verifies a re-framed photo."""
    ordered = np.sort(np.asarray(values, np.float64))
    if len(ordered) < 2:
        return 0.0
    low, high = np.interp([0.05 * (len(ordered) - 1), 0.95 * (len(ordered) - 1)],
                          np.arange(len(ordered)), ordered)
    return float(high - low)


def _distinct(points: np.ndarray) -> int:
    """Keypoints at the same place (SIFT's extra orientations) count once."""
    xy = np.round(points).astype(np.int64) + (1 << 20)  # a frame is <= 512 px: no overlap
    return len(_distinct_sorted((xy[:, 0] << 32) | xy[:, 1]))


def region_features(img: Image.Image, box: tuple[float, float, float, float],
                    size: tuple[int, int]) -> LocalFeatures:
    """Dense features of an archive photo's region `box` (fractions of it, a margin added),
    placed in the frame its stored features have (`size`: the index decodes archive photos
    at a draft, so a frame may be smaller than LOCAL_MAX_SIDE): the second look."""
    w, h = img.size
    x0, y0, x1, y1 = box
    mx, my = (x1 - x0) * REGION_MARGIN, (y1 - y0) * REGION_MARGIN
    pixels = (max(0, int((x0 - mx) * w)), max(0, int((y0 - my) * h)),
              min(w, math.ceil((x1 + mx) * w)), min(h, math.ceil((y1 + my) * h)))
    if pixels[2] - pixels[0] < 16 or pixels[3] - pixels[1] < 16:
        return LocalFeatures(np.zeros((0, 2), np.float32),
                             np.zeros((0, DESCRIPTOR_DIM), np.uint8), size)
    crop = extract(img.crop(pixels), REGION_SIDE, REGION_FEATURES)
    return _in_frame(crop, pixels, (w, h), size)


def agrees(first: Transform, second: Transform) -> bool:
    """The second look found the transform the first one suggested."""
    turn = abs((second.rotation_deg - first.rotation_deg + 180.0) % 360.0 - 180.0)
    ratio = second.scale / max(first.scale, 1e-6)
    return (turn <= SECOND_LOOK_TURN_DEG and 1 / SECOND_LOOK_SCALE <= ratio <= SECOND_LOOK_SCALE
            and second.mirrored == first.mirrored)


CLUSTERED = "the agreeing features cluster in one spot"


def quarter_turn_offset(rotation: float) -> float:
    """How far a turn is from the nearest multiple of 90 degrees."""
    return rotation - 90.0 * round(rotation / 90.0)


def verify(candidate: LocalFeatures, archive: LocalFeatures, mirrored: bool = False
           ) -> Verification:
    """Does the candidate show the archive photo's pixels, re-framed? Strict by design.
    With `mirrored`, the candidate's features are those of its mirror image (mirror()):
    the transform then says where the mirrored candidate sits."""
    import cv2

    pairs = _ratio_matches(candidate.descriptors, archive.descriptors)
    if len(pairs) < 4:
        return Verification(0, len(pairs), None, False, "too few matching features")
    src = candidate.points[pairs[:, 0]].astype(np.float32)
    dst = archive.points[pairs[:, 1]].astype(np.float32)
    model, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS, maxIters=2000,
        confidence=0.995, refineIters=10)
    if model is None or mask is None:
        return Verification(0, len(pairs), None, False, "no consistent transform")
    inlier_mask = mask.ravel().astype(bool)
    inliers = _distinct(dst[inlier_mask])
    a, b = float(model[0, 0]), float(model[1, 0])
    scale = math.hypot(a, b)
    rotation = math.degrees(math.atan2(b, a))
    cw, ch = candidate.size
    aw, ah = archive.size
    corners = np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], np.float32)
    mapped = corners @ model[:, :2].T.astype(np.float32) + model[:, 2].astype(np.float32)
    x0, y0 = np.clip(mapped.min(axis=0), 0, [aw, ah])
    x1, y1 = np.clip(mapped.max(axis=0), 0, [aw, ah])
    # And the other way: where the archive photo's matched part sits in the candidate.
    inverse = cv2.invertAffineTransform(model)
    back = (np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
            @ inverse[:, :2].T.astype(np.float32) + inverse[:, 2].astype(np.float32))
    bx0, by0 = np.clip(back.min(axis=0), 0, [cw, ch]) / [cw, ch]
    bx1, by1 = np.clip(back.max(axis=0), 0, [cw, ch]) / [cw, ch]
    if mirrored:  # the mirror image's left is the checked photo's right
        bx0, bx1 = 1.0 - bx1, 1.0 - bx0
    transform = Transform((float(x0 / aw), float(y0 / ah), float(x1 / aw), float(y1 / ah)),
                          rotation, scale, (float(bx0), float(by0), float(bx1), float(by1)),
                          mirrored)

    def verdict(ok: bool, reason: str = "") -> Verification:
        return Verification(inliers, len(pairs), transform, ok, reason)

    if not MIN_SCALE <= scale <= MAX_SCALE:
        return verdict(False, f"implausible scale {scale:.2f}")
    if abs(quarter_turn_offset(rotation)) > MAX_ROTATION_DEG:
        return verdict(False, f"implausible rotation {rotation:.1f} deg")
    overlap_w, overlap_h = x1 - x0, y1 - y0
    if overlap_w <= 0 or overlap_h <= 0:
        return verdict(False, "no overlap")
    smaller = min(aw * ah, cw * ch * scale * scale)
    if overlap_w * overlap_h < MIN_OVERLAP * smaller:
        return verdict(False, "overlap too small")
    if inliers < MIN_INLIERS:
        return verdict(False, f"{inliers} inliers, fewer than {MIN_INLIERS}")
    inside = ((dst[:, 0] >= x0) & (dst[:, 0] <= x1) & (dst[:, 1] >= y0) & (dst[:, 1] <= y1))
    fraction = inlier_mask.sum() / max(int(inside.sum()), 1)
    if fraction < MIN_INLIER_FRACTION:
        return verdict(False, f"only {fraction:.0%} of the matches agree")
    good = dst[inlier_mask]
    spread_x = _spread(good[:, 0]) / overlap_w
    spread_y = _spread(good[:, 1]) / overlap_h
    if inliers < STRONG_INLIERS and min(spread_x, spread_y) < MIN_SPREAD:
        return verdict(False, CLUSTERED)
    return verdict(True)


def verify_either(candidate: LocalFeatures, archive: LocalFeatures) -> Verification:
    """verify() as the candidate is, then as its mirror image if that is not re-framed:
    the better of the two (re-framed first, then the most inliers)."""
    direct = verify(candidate, archive)
    if direct.reframed:
        return direct
    flipped = verify(mirror(candidate), archive, mirrored=True)
    return max(direct, flipped, key=lambda v: (v.reframed, v.inliers))


# -- the shortlist: which archive photos are worth verifying -----------------------------------


def _valid_vectors(descriptors: np.ndarray, meta: np.ndarray, per_photo: int = LOCAL_FEATURES
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_photo` stored descriptors of each row (the strongest: rows are kept
    in order of response) as unit vectors, with the row each belongs to."""
    counts = np.minimum(np.asarray(meta[:, 0], np.int64), per_photo)
    valid = np.arange(descriptors.shape[1])[None, :] < counts[:, None]  # (N, K)
    rows = np.nonzero(valid)[0].astype(np.int64)
    return as_unit_vectors(np.asarray(descriptors)[valid]), rows


def ivf_lists(total: int) -> int:
    """Inverted lists for `total` descriptors: ~2 sqrt(n), at most 1024 (training stays
    seconds; SHORTLIST_PROBES lists of a 1.28M-descriptor index hold ~5k codes)."""
    return int(min(1024, max(64, 2 * math.sqrt(total))))


def build_shortlist(descriptors: np.ndarray, meta: np.ndarray, seed: int = 0
                    ) -> np.ndarray | None:
    """A serialised FAISS IVF-PQ index of every descriptor (ids = rows), for large indexes.

    Small indexes get None: their exact (flat) shortlist is built when they are opened,
    in milliseconds, and costs no disk.
    """
    total = int(np.minimum(np.asarray(meta[:, 0], np.int64), SHORTLIST_FEATURES).sum())
    if total <= FLAT_MAX_DESCRIPTORS:
        return None
    import faiss

    nlist = ivf_lists(total)
    quantizer = faiss.IndexFlatL2(DESCRIPTOR_DIM)
    index = faiss.IndexIVFPQ(quantizer, DESCRIPTOR_DIM, nlist, 16, 8)
    rng = np.random.default_rng(seed)
    # Train on a sample (64 points per list is plenty), add every row block by block.
    sample_rows = np.sort(rng.choice(len(meta), size=min(len(meta),
                                                         max(1, 64 * nlist // 128)),
                                     replace=False))
    train, _ = _valid_vectors(np.asarray(descriptors[sample_rows]), meta[sample_rows],
                              SHORTLIST_FEATURES)
    index.train(train)
    block = 4096
    for start in range(0, len(meta), block):
        vectors, rows = _valid_vectors(np.asarray(descriptors[start:start + block]),
                                       meta[start:start + block], SHORTLIST_FEATURES)
        if len(vectors):
            index.add_with_ids(vectors, rows + start)
    return faiss.serialize_index(index)


def extend_shortlist(stored: np.ndarray, descriptors: np.ndarray, meta: np.ndarray,
                     first_row: int) -> np.ndarray:
    """A stored shortlist with rows appended (ids from `first_row`), not trained again."""
    import faiss

    index = faiss.deserialize_index(np.ascontiguousarray(stored, np.uint8),
                                    faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE)
    vectors, rows = _valid_vectors(descriptors, meta, SHORTLIST_FEATURES)
    if len(vectors):
        index.add_with_ids(vectors, rows + first_row)
    return faiss.serialize_index(index)


class Shortlist:
    """Candidate descriptors -> the archive rows they vote for, via FAISS."""

    def __init__(self, index: object) -> None:
        self.index = index

    @classmethod
    def open(cls, descriptors_loader: Callable[[], np.ndarray], meta: np.ndarray,
             stored: np.ndarray | Path | None) -> Shortlist:
        """From a stored FAISS index (a verified file, memory-mapped: only the probed lists
        are read; or its bytes), else an exact one built from the descriptors."""
        import faiss

        if stored is not None:
            # FAISS rebuilds IVF-PQ's table of centroid-to-code distances on every read
            # (nlist x 16 x 256 floats: 16 MB and ~15-25 ms of CPU here): more work than a
            # check's 128 descriptors x SHORTLIST_PROBES lists compute without it, at the
            # same search time (ad-hoc, 10k index, 8 lists probed: open 14.5 -> 0.4 ms,
            # search 18.4 -> 19.0 ms).
            skip_table = faiss.IO_FLAG_SKIP_PRECOMPUTE_TABLE
            if isinstance(stored, np.ndarray):
                index = faiss.deserialize_index(stored, skip_table)
            else:
                index = faiss.read_index(str(stored), faiss.IO_FLAG_MMAP
                                         | faiss.IO_FLAG_READ_ONLY | skip_table)
            index.nprobe = SHORTLIST_PROBES
            return cls(index)
        # Each photo's strongest SHORTLIST_FEATURES, as the stored one holds: every
        # descriptor that votes searches them all (the looks vote with 336 a check), and
        # on the tuning parts 128 of 192 found the same re-edits and forms, none flagged
        # (benchmarks/2026-12-04-reframed-flat128.txt); verification still uses all 192.
        vectors, rows = _valid_vectors(descriptors_loader(), meta, SHORTLIST_FEATURES)
        index = faiss.IndexIDMap(faiss.IndexFlatL2(DESCRIPTOR_DIM))
        if len(vectors):
            index.add_with_ids(vectors, rows)
        return cls(index)

    def votes(self, features: LocalFeatures, limit: int = SHORTLIST_VOTES,
              exclude: int | None = None) -> list[int]:
        """Rows ranked by how many candidate descriptors find them among their neighbours,
        each neighbour counted when clearly nearer than the k-th (the background)."""
        return self.votes_many([features], limit, [exclude])[0]

    def votes_many(self, many: Sequence[LocalFeatures], limit: int = SHORTLIST_VOTES,
                   excludes: Sequence[int | None] | None = None,
                   queries_each: Sequence[int] | None = None) -> list[list[int]]:
        """`votes` for several photos in one FAISS search (its threads share the work);
        each photo's answer is the same as alone. `queries_each`: how many of each one's
        strongest descriptors vote (SHORTLIST_FEATURES at most, the default)."""
        excludes = list(excludes) if excludes is not None else [None] * len(many)
        counts = [min(n, SHORTLIST_FEATURES) for n in queries_each] if queries_each \
            else [SHORTLIST_FEATURES] * len(many)
        ntotal = int(self.index.ntotal)  # type: ignore[attr-defined]
        queries = [as_unit_vectors(f.descriptors[:n]) if ntotal and len(f)
                   else np.zeros((0, DESCRIPTOR_DIM), np.float32)
                   for f, n in zip(many, counts, strict=True)]
        if not sum(len(q) for q in queries):
            return [[] for _ in many]
        k = min(SEARCH_NEIGHBOURS, ntotal)
        dist, ids = self.index.search(np.concatenate(queries), k)  # type: ignore[attr-defined]
        background = dist[:, -1:] if k > 1 else np.full((len(dist), 1), np.inf)
        close = (dist < (RATIO * RATIO) * background) & (ids >= 0)
        answers, start = [], 0
        for q, exclude in zip(queries, excludes, strict=True):
            rows = slice(start, start + len(q))
            start += len(q)
            hit = close[rows] & (ids[rows] != exclude) if exclude is not None else close[rows]
            query_of, column = np.nonzero(hit)
            found = ids[rows][query_of, column]
            # One vote per (query descriptor, row); then rows by votes, ties by row.
            pairs = _distinct_sorted(query_of.astype(np.int64) * (ntotal + 1) + found)
            counts = np.bincount(pairs % (ntotal + 1))
            voted = np.flatnonzero(counts)
            counts = counts[voted]
            order = np.lexsort((voted, -counts))[:limit]
            answers.append([int(voted[i]) for i in order if counts[i] >= 2])
        return answers
