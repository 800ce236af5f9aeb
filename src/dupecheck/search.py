"""`dupecheck check`: candidate photos -> ranked archive matches and a verdict.

Four evidences, strongest first: identical bytes (`exact`), a PDQ hash within
31 bits (`near-identical`), local features verified geometrically (`re-framed`: the
same exposure cropped, zoomed or straightened), an embedding cosine at or above the
threshold (`similar`). For PDQ and the embedding a candidate is compared as its full
frame and as each crop that Instagram could have posted; the best variant counts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import cosines
from .defaults import DEFAULT_TOP_K
from .engines import Engine, ModelSpec, embed_images
from .errors import DupecheckError, ImageError, UsageError
from .evidence import (
    DIHEDRAL,
    PDQ_MATCH_DISTANCE,
    pdq_dihedral,
    pdq_distances,
    pdq_hash,
    sha256_bytes,
)
from .imaging import FULL_FRAME, MAX_PHOTO_BYTES, MAX_PIXELS, crop_variants, decode, model_views
from .localfeatures import (
    CLOSER_LOOK_VOTES,
    CLUSTERED,
    MIN_INLIERS,
    SECOND_LOOK_INLIERS,
    SECOND_LOOK_SIDE,
    SECOND_LOOKS,
    SHORTLIST_GLOBAL,
    SHORTLIST_VOTES,
    CloserLooks,
    LocalFeatures,
    Look,
    Transform,
    Verification,
    agrees,
    closer_looks_beside,
    extract_beside,
    first_looks,
    mirror,
    region_features,
    verify,
    verify_either,
)
from .store import Index, IndexedPhoto

EXACT = "exact"
NEAR_IDENTICAL = "near-identical"
REFRAMED = "re-framed"
SIMILAR = "similar"
NEW = "new"
# Strength of each evidence; a verdict is the strongest that fired for any archive photo.
STRENGTH = {EXACT: 4, NEAR_IDENTICAL: 3, REFRAMED: 2, SIMILAR: 1}

PDQ_BLOCK_ROWS = 8192  # rows per PDQ pass: its buffers stay in the core's cache


@dataclass
class Candidate:
    """A photo to check, hashed and ready to embed as each of its variants."""

    path: str
    sha256: str
    variants: list[str]
    pdq: np.ndarray  # (V, 32)
    pixels: np.ndarray  # (D, 3, H, W): each distinct model input once (imaging.model_views)
    features: LocalFeatures | None = None  # of the full frame; None: not taken
    views: list[int] | None = None  # per variant, its row of `pixels`; None: one row each
    closer: CloserLooks | None = None  # of the full frame; None: not taken
    # (7, 32): the full frame turned and mirrored (evidence.DIHEDRAL); None: not taken.
    # Only the full frame: each query costs a pass over the archive's hashes.
    pdq_turned: np.ndarray | None = None

    def per_variant(self, vectors: np.ndarray) -> np.ndarray:
        """The embeddings of `pixels`, one row per variant."""
        return vectors if self.views is None else vectors[self.views]

    def pdq_queries(self) -> tuple[np.ndarray, list[str]]:
        """Every hash compared with the archive's, and the variant each names."""
        names = list(self.variants)
        if self.pdq_turned is None:
            return self.pdq, names
        return (np.concatenate([self.pdq, self.pdq_turned]),
                names + [f"{self.variants[0]}, {t}" for t in DIHEDRAL])

    def looks(self) -> list[Look]:
        """Every way its local features are searched: as taken, as its mirror image, and
        its closer looks (a small scale, a grid's cells)."""
        if self.features is None:
            return []
        closer = self.closer.looks if self.closer is not None else []
        return [*first_looks(self.features), *closer]


@dataclass
class Match:
    rank: int
    row: int
    score: float  # cosine of the best variant
    pdq_distance: int  # of the closest variant
    evidence: str | None
    variant: str  # the variant that gave the evidence (or the best cosine)
    photo: IndexedPhoto
    inliers: int | None = None  # local features verified against this photo; None: not tried
    transform: Transform | None = None  # where the candidate sits in it, when re-framed


@dataclass
class CheckResult:
    photo: str
    verdict: str | None  # None when the photo could not be read
    matches: list[Match] = field(default_factory=list)
    error: str | None = None
    sha256: str | None = None
    skipped: list[str] = field(default_factory=list)  # archive paths marked "not a match"


def validate_threshold(threshold: float) -> float:
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--threshold must be a cosine in (0, 1], got {threshold}")
    return threshold


def effective_threshold(explicit: float | None, calibrated: float | None,
                        default: float) -> float:
    """An explicit --threshold wins, then the one calibrated into the index, then the model's."""
    if explicit is not None:
        return validate_threshold(explicit)
    return calibrated if calibrated is not None else default


@dataclass(frozen=True)
class Upload:
    """A photo that arrived as bytes (an HTTP upload), named as its sender named it, and
    the most pixels it may decode to (the service's limit is lower than the CLI's)."""

    name: str
    data: bytes
    max_pixels: int = MAX_PIXELS


Source = Path | Upload


def read_source(source: Source) -> tuple[str, bytes]:
    """(name, bytes) of a photo file or an upload; ImageError (naming it) when unreadable."""
    if isinstance(source, Upload):
        if len(source.data) > MAX_PHOTO_BYTES:
            raise ImageError(f"{len(source.data)} bytes, too large for a photo", source.name)
        return source.name, source.data
    path = source
    try:
        size = path.stat().st_size
        if size > MAX_PHOTO_BYTES:
            raise ImageError(f"{size} bytes, too large for a photo", path)
        return str(path), path.read_bytes()
    except IsADirectoryError as exc:
        raise ImageError("is a folder, not a photo", path) from exc
    except FileNotFoundError as exc:
        raise ImageError("no such file", path) from exc
    except OSError as exc:
        raise ImageError(exc.strerror or str(exc), path) from exc


def load_candidate(source: Source, spec: ModelSpec, local: bool = False,
                   as_archive: bool = False) -> Candidate:
    """Read, decode and hash one photo; ImageError (naming it) when it cannot be read.
    With `local`, also take its local features (for `re-framed`): as a checked photo's,
    or with `as_archive` as an archive photo's (`compare`'s B)."""
    name, data = read_source(source)
    photo = decode(data, name, draft=spec.draft_size,
                   max_pixels=source.max_pixels if isinstance(source, Upload) else MAX_PIXELS)
    features = closer = None
    if local:  # on the other core, while the hashes and the model's inputs are made
        features = extract_beside(photo.image, candidate=not as_archive)
        if not as_archive:
            closer = closer_looks_beside(photo.image)
    variants = crop_variants(photo.image)
    views = model_views(variants)
    distinct = sorted(set(views))
    full = pdq_dihedral(variants[0][1])  # (8, 32)
    return Candidate(
        path=name,
        sha256=sha256_bytes(data),
        variants=[name for name, _ in variants],
        pdq=np.stack([full[0]] + [pdq_hash(img) for _, img in variants[1:]]),
        pdq_turned=full[1:],
        pixels=np.stack([spec.to_input(variants[i][1]) for i in distinct]),
        features=None if features is None else features.result(),
        views=[distinct.index(v) for v in views],
        closer=None if closer is None else closer.result(),
    )


class Searcher:
    """The index, held once for any number of candidates.

    Work over all N rows is a handful of vectorised passes (one GEMM, a popcount per
    crop variant, a max and an argpartition); everything per match is done only for
    the top k.
    """

    def __init__(self, index: Index, model: str) -> None:
        self.index = index
        self.model = model
        index.verify_in_background(model)  # checked while the photos decode and embed
        entry = index.models.get(model)
        if entry is not None:
            cosines.prepare_in_background(len(index), entry.dim)
        self._embeddings: np.ndarray | None = None
        # _archive_photo's reader of the export, opened on the first second look
        self._reader: Callable[[IndexedPhoto], bytes | None] | None = None
        self._reader_context: AbstractContextManager[Callable[[IndexedPhoto], bytes | None]] \
            | None = None
        self._reader_lock = threading.Lock()
        # The 256 bits as four contiguous 64-bit columns, read a block at a time.
        self.pdq_columns = np.ascontiguousarray(
            np.ascontiguousarray(index.pdq).view(np.uint64).T)  # (4, N)

    def close(self) -> None:
        """Close the export, if a second look opened it."""
        with self._reader_lock:
            if self._reader_context is not None:
                self._reader_context.__exit__(None, None, None)
            self._reader = self._reader_context = None

    @property
    def embeddings(self) -> np.ndarray:
        """The verified matrix: the first search waits for its verification."""
        if self._embeddings is None:
            self._embeddings = self.index.embeddings(self.model)
        return self._embeddings

    @property
    def local(self) -> bool:
        """Whether this index can give `re-framed` evidence."""
        return self.index.local is not None

    def reframed(self, cand: Candidate, extra_rows: list[int],
                 exclude: set[int]) -> dict[int, Verification]:
        """Verify the rows each look shortlists by its descriptor votes (one FAISS search
        for all looks), plus `extra_rows` for the first (the best by cosine and PDQ, so
        that real weights help too); per row the best verification: re-framed first,
        then the most inliers."""
        local = self.index.local
        looks = [look for look in cand.looks() if len(look.features)]
        if local is None or not looks:
            return {}
        voted = local.shortlist().votes_many([look.features for look in looks],
                                             SHORTLIST_VOTES,
                                             queries_each=[look.queries for look in looks])
        voted = [rows if not look.closer else rows[:CLOSER_LOOK_VOTES]
                 for look, rows in zip(looks, voted, strict=True)]
        voted[0] = list(dict.fromkeys(voted[0] + extra_rows))
        found: dict[int, Verification] = {}
        by_look: dict[int, Look] = {}
        for look, rows in zip(looks, voted, strict=True):
            for row in rows:
                if row in exclude:
                    continue
                check = verify(look.features, local.features(row), mirrored=look.mirrored)
                best = found.get(row)
                if best is None or (check.reframed, check.inliers) > (best.reframed,
                                                                      best.inliers):
                    found[row], by_look[row] = check, look
        self._second_look(cand, found, by_look)
        return found

    def _second_look(self, cand: Candidate, found: dict[int, Verification],
                     by_look: dict[int, Look]) -> None:
        """Look again at the archive photos that agree in a few keypoints, not enough or
        not spread enough (a detail's region holds few of the stored ones; a story's
        photo few of its checked features): with dense features of the matched region of
        both, the archive photo read from the export (or the added photo's copy)."""
        if any(v.reframed for v in found.values()):
            return
        partial = sorted((r for r, v in found.items() if v.transform is not None
                          and v.inliers >= SECOND_LOOK_INLIERS
                          and v.reason in (f"{v.inliers} inliers, fewer than {MIN_INLIERS}",
                                           CLUSTERED)),
                         key=lambda r: -found[r].inliers)[:SECOND_LOOKS]
        for row in partial:
            img = self._archive_photo(row)
            first = found[row].transform
            if img is None or first is None:
                continue
            look = by_look[row]
            stored = self.index.local.features(row)  # type: ignore[union-attr]
            features = look.features
            if cand.closer is not None and cand.features is not None:
                features = region_features(cand.closer.grey, first.box_in_photo,
                                           cand.features.size)
                features = mirror(features) if look.mirrored else features
            check = verify(features, region_features(img, first.box, stored.size),
                           mirrored=look.mirrored)
            if check.reframed and check.transform and agrees(first, check.transform):
                found[row] = check

    def _archive_photo(self, row: int) -> Image.Image | None:
        """An archive photo, decoded upright, as the index recorded it; None where the
        export (or the added photo's copy) cannot give the same bytes now."""
        from .added import photo_reader

        photo = self.index.photos[row]
        with self._reader_lock:  # the service's checks share one searcher
            if self._reader is None:
                self._reader_context = photo_reader(self.index)
                self._reader = self._reader_context.__enter__()
        data = self._reader(photo)
        if data is None or sha256_bytes(data) != photo.sha256:
            return None
        try:
            # At a draft: an added photo's copy may be a camera original.
            return decode(data, photo.path, draft=SECOND_LOOK_SIDE).image
        except DupecheckError:
            return None

    def _best_pdq(self, hashes: np.ndarray) -> np.ndarray:
        """Per row, the PDQ distance to the nearest of the variants' hashes: XOR and
        popcount a cache-sized block at a time (1M rows: ~20 ms instead of ~50 for whole
        columns)."""
        n = self.pdq_columns.shape[1]
        best = np.empty(n, np.int32)
        queries = [np.ascontiguousarray(h).view(np.uint64) for h in hashes]
        for start in range(0, n, PDQ_BLOCK_ROWS):
            columns = self.pdq_columns[:, start:start + PDQ_BLOCK_ROWS]
            xor = np.empty(columns.shape[1], np.uint64)
            bits = np.empty(columns.shape[1], np.uint8)
            total = np.empty(columns.shape[1], np.uint16)
            nearest = np.full(columns.shape[1], 256, np.uint16)
            for words in queries:
                total.fill(0)
                for w in range(4):
                    np.bitwise_xor(columns[w], words[w], out=xor)
                    np.add(total, np.bitwise_count(xor, out=bits), out=total)
                np.minimum(nearest, total, out=nearest)
            best[start:start + PDQ_BLOCK_ROWS] = nearest
        return best

    def _best_cosines(self, vectors: np.ndarray) -> np.ndarray:
        """Per row, the cosine of the best variant."""
        return cosines.best_cosines(self.embeddings, vectors)

    def search(self, cand: Candidate, vectors: np.ndarray, threshold: float, top_k: int,
               skip_rows: frozenset[int] = frozenset()) -> CheckResult:
        n = len(self.index)
        if n == 0:
            return CheckResult(cand.path, NEW)
        pdq_queries, pdq_names = cand.pdq_queries()
        best_pdq = self._best_pdq(pdq_queries)
        best_cos = self._best_cosines(vectors)
        exact = [r for r in self.index.rows_with_sha256(cand.sha256) if r not in skip_rows]
        if skip_rows:
            skipped = np.fromiter(skip_rows, dtype=np.int64)
            best_pdq[skipped] = 1 << 16
            best_cos[skipped] = -np.inf

        near = np.flatnonzero(best_pdq <= PDQ_MATCH_DISTANCE)
        k = min(top_k, n)
        by_cosine = np.argpartition(-best_cos, k - 1)[:k] if k < n else np.arange(n)
        exact_set = set(exact)
        verified: dict[int, Verification] = {}
        if cand.features is not None and self.local:
            g = min(SHORTLIST_GLOBAL, n)
            top_cos = np.argpartition(-best_cos, g - 1)[:g] if g < n else np.arange(n)
            top_pdq = np.argpartition(best_pdq, g - 1)[:g] if g < n else np.arange(n)
            extra = [int(r) for r in np.concatenate([top_cos, top_pdq])
                     if best_pdq[r] > PDQ_MATCH_DISTANCE]
            verified = self.reframed(cand, extra,
                                     exclude=exact_set | set(near.tolist()) | set(skip_rows))
        reframed = {r for r, v in verified.items() if v.reframed}
        pool = (exact_set | set(near.tolist()) | reframed | set(by_cosine.tolist())) - skip_rows
        similar_on = threshold < 1.0

        def evidence_of(row: int) -> str | None:
            if row in exact_set:
                return EXACT
            if best_pdq[row] <= PDQ_MATCH_DISTANCE:
                return NEAR_IDENTICAL
            if row in reframed:
                return REFRAMED
            if similar_on and best_cos[row] >= threshold:
                return SIMILAR
            return None

        def order(row: int) -> tuple[int, float, float]:
            ev = evidence_of(row)
            group = {EXACT: 0, NEAR_IDENTICAL: 1, REFRAMED: 2}.get(ev or "", 3)
            second = (float(best_pdq[row]) if group == 1 else
                      -float(verified[row].inliers) if group == 2 else 0.0)
            return group, second, -float(best_cos[row])

        matches = []
        for rank, row in enumerate(sorted(pool, key=order)[:top_k], 1):
            evidence = evidence_of(row)
            if evidence in (EXACT, REFRAMED):
                variant = FULL_FRAME
            elif evidence == NEAR_IDENTICAL:
                variant = pdq_names[int(np.argmin(pdq_distances(pdq_queries,
                                                                self.index.pdq[row])))]
            else:
                row_scores = np.asarray(self.embeddings[row]) @ np.asarray(vectors, np.float32).T
                variant = cand.variants[int(row_scores.argmax())]
            check = verified.get(row)
            matches.append(Match(rank, row, float(best_cos[row]), int(best_pdq[row]), evidence,
                                 variant, self.index.photos[row],
                                 inliers=check.inliers if check else None,
                                 transform=check.transform if check and check.reframed
                                 else None))
        if exact:
            verdict = EXACT
        elif len(near):
            verdict = NEAR_IDENTICAL
        elif reframed:
            verdict = REFRAMED
        elif similar_on and float(best_cos.max()) >= threshold:
            verdict = SIMILAR
        else:
            verdict = NEW
        return CheckResult(cand.path, verdict, matches)


CHECK_CHUNK = 32  # photos decoded and embedded at a time: memory stays bounded for folders


def check_photos(paths: list[Source], index: Index, spec: ModelSpec,
                 engine: Engine | Callable[[], Engine], threshold: float,
                 top_k: int = DEFAULT_TOP_K,
                 not_matches: dict[str, set[str]] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[CheckResult]:
    """Check each photo against the index; a photo that cannot be read gets an error result.

    `engine` may be a callable that returns the engine, so that the model can load in
    another thread while the photos decode and the index is verified.
    """
    validate_threshold(threshold)
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    if index.local is not None:
        index.local.prefetch()
    searcher = Searcher(index, spec.name)
    try:
        return _check_chunks(paths, index, spec, engine, threshold, top_k, not_matches,
                             progress, searcher)
    finally:
        searcher.close()


def _check_chunks(paths: list[Source], index: Index, spec: ModelSpec,
                  engine: Engine | Callable[[], Engine], threshold: float, top_k: int,
                  not_matches: dict[str, set[str]] | None,
                  progress: Callable[[int, int], None] | None,
                  searcher: Searcher) -> list[CheckResult]:
    results: list[CheckResult] = []
    for start in range(0, len(paths), CHECK_CHUNK):
        loaded: list[Candidate | CheckResult] = []
        for path in paths[start:start + CHECK_CHUNK]:
            try:
                loaded.append(load_candidate(path, spec, local=searcher.local))
            except DupecheckError as exc:
                name = path.name if isinstance(path, Upload) else str(path)
                loaded.append(CheckResult(name, None, error=str(exc)))
        candidates = [c for c in loaded if isinstance(c, Candidate)]
        if candidates and callable(engine) and not hasattr(engine, "embed_batch"):
            engine = engine()
        vectors = None
        if candidates:
            vectors = embed_images(engine, np.concatenate([c.pixels for c in candidates]),
                                   batch_size=spec.batch_size)  # type: ignore[arg-type]
        offset = 0
        for item in loaded:
            if isinstance(item, CheckResult):
                results.append(item)
                continue
            assert vectors is not None
            v = len(item.pixels)
            excluded = (not_matches or {}).get(item.sha256, set())
            skip = frozenset(r for sha in excluded for r in index.rows_with_sha256(sha))
            result = searcher.search(item, item.per_variant(vectors[offset:offset + v]),
                                     threshold, top_k, skip)
            result.sha256 = item.sha256
            result.skipped = sorted(index.photos[r].path for r in skip)
            results.append(result)
            offset += v
        if progress:
            progress(len(results), len(paths))
    return results


@dataclass
class Comparison:
    """Every evidence between two photos."""

    a: str
    b: str
    same_bytes: bool
    pdq_distance: int
    pdq_variant: str  # which crop of which photo came closest
    cosines: dict[str, float]  # model -> cosine of the best variant pair
    thresholds: dict[str, float]
    verdict: str
    inliers: int | None = None  # local features of A verified against B's
    transform: dict[str, object] | None = None  # where A sits in B, when re-framed


def compare_photos(a: Path, b: Path, models: list[tuple[ModelSpec, Engine, float]]
                   ) -> Comparison:
    """Compare two photos as `check` compares a candidate with an archive photo, both ways."""
    cosines: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    ca = cb = None
    for spec, engine, threshold in models:
        first = ca is None  # local features do not depend on the model: taken once
        ca = load_candidate(a, spec, local=first)
        cb = load_candidate(b, spec, local=first, as_archive=True)
        if first:
            features = (ca.features, cb.features)
        va = ca.per_variant(embed_images(engine, ca.pixels, spec.batch_size))
        vb = cb.per_variant(embed_images(engine, cb.pixels, spec.batch_size))
        cosines[spec.name] = float(max((va @ vb[0]).max(), (vb @ va[0]).max()))
        thresholds[spec.name] = threshold
    if ca is None or cb is None:
        from .engines import get_model_spec

        spec = get_model_spec("resnet50")
        ca = load_candidate(a, spec, local=True)
        cb = load_candidate(b, spec, local=True, as_archive=True)
        features = (ca.features, cb.features)
    a_vs_b = [int(pdq_distances(cb.pdq[:1], h)[0]) for h in ca.pdq]
    b_vs_a = [int(pdq_distances(ca.pdq[:1], h)[0]) for h in cb.pdq]
    best_a, best_b = int(np.argmin(a_vs_b)), int(np.argmin(b_vs_a))
    if a_vs_b[best_a] <= b_vs_a[best_b]:
        distance, variant = a_vs_b[best_a], f"{ca.variants[best_a]} of A"
    else:
        distance, variant = b_vs_a[best_b], f"{cb.variants[best_b]} of B"
    same = ca.sha256 == cb.sha256
    fa, fb = features
    assert fa is not None and fb is not None
    check = verify_either(fa, fb)
    if same:
        verdict = EXACT
    elif distance <= PDQ_MATCH_DISTANCE:
        verdict = NEAR_IDENTICAL
    elif check.reframed:
        verdict = REFRAMED
    elif any(t < 1.0 and cosines[m] >= t for m, t in thresholds.items()):
        verdict = SIMILAR
    else:
        verdict = NEW
    return Comparison(str(a), str(b), same, distance, variant, cosines, thresholds, verdict,
                      check.inliers, check.transform.document()
                      if check.reframed and check.transform else None)
