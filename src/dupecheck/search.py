"""`dupecheck check`: candidate photos -> ranked archive matches and a verdict.

Three evidences, strongest first: identical bytes (`exact`), a PDQ hash within
31 bits (`near-identical`), an embedding cosine at or above the threshold
(`similar`). A candidate is compared as its full frame and as each crop that
Instagram could have posted; the best variant counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engines import Engine, ModelSpec, embed_images
from .errors import DupecheckError, ImageError, UsageError
from .evidence import PDQ_MATCH_DISTANCE, pdq_distances, pdq_hash, sha256_bytes
from .imaging import FULL_FRAME, crop_variants, decode
from .store import Index, IndexedPhoto

EXACT = "exact"
NEAR_IDENTICAL = "near-identical"
SIMILAR = "similar"
NEW = "new"
# Strength of each evidence; a verdict is the strongest that fired for any archive photo.
STRENGTH = {EXACT: 3, NEAR_IDENTICAL: 2, SIMILAR: 1}

DEFAULT_TOP_K = 5
MAX_CANDIDATE_BYTES = 256 * 1024 * 1024


@dataclass
class Candidate:
    """A photo to check, hashed and ready to embed as each of its variants."""

    path: str
    sha256: str
    variants: list[str]
    pdq: np.ndarray  # (V, 32)
    pixels: np.ndarray  # (V, 3, H, W)


@dataclass
class Match:
    rank: int
    row: int
    score: float  # cosine of the best variant
    pdq_distance: int  # of the closest variant
    evidence: str | None
    variant: str  # the variant that gave the evidence (or the best cosine)
    photo: IndexedPhoto


@dataclass
class CheckResult:
    photo: str
    verdict: str | None  # None when the photo could not be read
    matches: list[Match] = field(default_factory=list)
    error: str | None = None


def validate_threshold(threshold: float) -> float:
    if not 0.0 < threshold <= 1.0:
        raise UsageError(f"--threshold must be a cosine in (0, 1], got {threshold}")
    return threshold


def load_candidate(path: Path, spec: ModelSpec) -> Candidate:
    """Read, decode and hash one photo; ImageError (naming it) when it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_CANDIDATE_BYTES:
            raise ImageError(f"{size} bytes, too large for a photo", path)
        data = path.read_bytes()
    except IsADirectoryError as exc:
        raise ImageError("is a folder, not a photo", path) from exc
    except FileNotFoundError as exc:
        raise ImageError("no such file", path) from exc
    except OSError as exc:
        raise ImageError(exc.strerror or str(exc), path) from exc
    photo = decode(data, str(path), draft=spec.draft_size)
    variants = crop_variants(photo.image)
    return Candidate(
        path=str(path),
        sha256=sha256_bytes(data),
        variants=[name for name, _ in variants],
        pdq=np.stack([pdq_hash(img) for _, img in variants]),
        pixels=np.stack([spec.to_input(img) for _, img in variants]),
    )


class Searcher:
    """The index, held once for any number of candidates."""

    def __init__(self, index: Index, model: str) -> None:
        self.index = index
        self.embeddings = index.embeddings(model)
        self.shas = np.array([p.sha256 for p in index.photos])

    def search(self, cand: Candidate, vectors: np.ndarray, threshold: float, top_k: int,
               skip_rows: frozenset[int] = frozenset()) -> CheckResult:
        n = len(self.index)
        if n == 0:
            return CheckResult(cand.path, NEW)
        # (V, N) for both evidences, then the best variant per archive photo.
        distances = np.stack([pdq_distances(self.index.pdq, h) for h in cand.pdq])
        scores = np.asarray(vectors @ np.asarray(self.embeddings).T, dtype=np.float32)
        best_pdq_variant = distances.argmin(axis=0)
        best_pdq = distances.min(axis=0)
        best_cos_variant = scores.argmax(axis=0)
        best_cos = scores.max(axis=0)

        strength = np.zeros(n, dtype=np.int8)
        if threshold < 1.0:  # 1.0 turns the embedding evidence off
            strength[best_cos >= threshold] = STRENGTH[SIMILAR]
        strength[best_pdq <= PDQ_MATCH_DISTANCE] = STRENGTH[NEAR_IDENTICAL]
        strength[self.shas == cand.sha256] = STRENGTH[EXACT]
        if skip_rows:
            skipped = np.fromiter(skip_rows, dtype=np.int64)
            strength[skipped] = -1

        # Only exact, near-identical and the top-k by cosine can reach the top k.
        pool = set(np.flatnonzero(strength >= STRENGTH[NEAR_IDENTICAL]).tolist())
        eligible = np.flatnonzero(strength >= 0)
        if len(eligible):
            k = min(top_k + len(skip_rows), len(eligible))
            part = eligible[np.argpartition(-best_cos[eligible], k - 1)[:k]]
            pool.update(part.tolist())
        pool.difference_update(skip_rows)

        def order(row: int) -> tuple[int, int, float]:
            s = int(strength[row])
            group = 0 if s == STRENGTH[EXACT] else 1 if s == STRENGTH[NEAR_IDENTICAL] else 2
            dist = int(best_pdq[row]) if group == 1 else 0
            return group, dist, -float(best_cos[row])

        ranked = sorted(pool, key=order)[:top_k]
        names = {v: k for k, v in STRENGTH.items()}
        matches = []
        for rank, row in enumerate(ranked, 1):
            s = int(strength[row])
            evidence = names.get(s)
            if evidence == EXACT:
                variant = FULL_FRAME
            elif evidence == NEAR_IDENTICAL:
                variant = cand.variants[best_pdq_variant[row]]
            else:
                variant = cand.variants[best_cos_variant[row]]
            matches.append(Match(rank, row, float(best_cos[row]), int(best_pdq[row]), evidence,
                                 variant, self.index.photos[row]))
        top = int(strength.max()) if n else 0
        return CheckResult(cand.path, names.get(top, NEW), matches)


def check_photos(paths: list[Path], index: Index, spec: ModelSpec, engine: Engine,
                 threshold: float, top_k: int = DEFAULT_TOP_K) -> list[CheckResult]:
    """Check each photo against the index; a photo that cannot be read gets an error result."""
    validate_threshold(threshold)
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    searcher = Searcher(index, spec.name)
    loaded: list[Candidate | CheckResult] = []
    for path in paths:
        try:
            loaded.append(load_candidate(path, spec))
        except DupecheckError as exc:
            loaded.append(CheckResult(str(path), None, error=str(exc)))
    candidates = [c for c in loaded if isinstance(c, Candidate)]
    vectors = embed_images(engine, np.concatenate([c.pixels for c in candidates])
                           if candidates else np.zeros((0, 3, spec.crop, spec.crop), np.float32),
                           batch_size=spec.batch_size)
    results: list[CheckResult] = []
    offset = 0
    for item in loaded:
        if isinstance(item, CheckResult):
            results.append(item)
            continue
        v = len(item.variants)
        results.append(searcher.search(item, vectors[offset:offset + v], threshold, top_k))
        offset += v
    return results
