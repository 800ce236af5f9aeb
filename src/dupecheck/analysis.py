"""Looking inside the archive: duplicates already posted, and the similarity distribution.

Both walk the index in blocks of rows: at most BLOCK_BYTES of scores exist at a time
(plus the memory-mapped matrix and what is found), never an N x N matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .evidence import PDQ_MATCH_DISTANCE
from .localfeatures import mirror, verify_either
from .search import EXACT, NEAR_IDENTICAL, REFRAMED, SIMILAR, STRENGTH
from .store import Index, IndexedPhoto

BLOCK_BYTES = 64 * 1024 * 1024  # scores held at once: the memory bound of `dupes` and `stats`
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)

ProgressHook = Callable[[int, int], None]


def block_rows(n: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows per block so that a (rows, n) float32 block fits in block_bytes."""
    return max(1, min(max(n, 1), block_bytes // (4 * max(n, 1))))


def _blocks(matrix: np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    full = np.asarray(matrix)
    for start in range(0, len(full), rows):
        yield start, full[start:start + rows] @ full.T


def _pdq_columns(index: Index) -> np.ndarray:
    return np.ascontiguousarray(np.ascontiguousarray(index.pdq).view(np.uint64).T)


def _pdq_row(columns: np.ndarray, row: int) -> np.ndarray:
    total = np.bitwise_count(columns[0] ^ columns[0, row]).astype(np.int32)
    for w in range(1, 4):
        total += np.bitwise_count(columns[w] ^ columns[w, row])
    return total


# -- duplicates ---------------------------------------------------------------------------


@dataclass
class DuplicateGroup:
    """Archive photos that are the same photo, joined by the strongest evidence seen."""

    evidence: str
    score: float  # the highest cosine between two of its photos
    rows: list[int]
    photos: list[IndexedPhoto] = field(default_factory=list)


def find_duplicates(index: Index, model: str, threshold: float,
                    progress: ProgressHook | None = None,
                    block_bytes: int = BLOCK_BYTES, reframed: bool = True
                    ) -> list[DuplicateGroup]:
    """Groups of the same photo inside the archive, strongest first. `reframed=False`
    skips the re-framed pass (local features, 16 ms a photo here: minutes at 10,000)."""
    n = len(index)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges: list[tuple[int, int, int, float]] = []  # (i, j, strength, cosine)
    shas = [p.sha256 for p in index.photos]
    columns = _pdq_columns(index)
    similar_on = threshold < 1.0
    rows = block_rows(n, block_bytes)
    for start, scores in _blocks(index.embeddings(model), rows):
        for r in range(len(scores)):
            i = start + r
            cos = scores[r]
            later = slice(i + 1, n)
            pdq = _pdq_row(columns, i)[later]
            hit = pdq <= PDQ_MATCH_DISTANCE
            if similar_on:
                hit |= cos[later] >= threshold
            for j in (np.flatnonzero(hit) + i + 1).tolist():
                strength = (STRENGTH[EXACT] if shas[i] == shas[j] else
                            STRENGTH[NEAR_IDENTICAL] if pdq[j - i - 1] <= PDQ_MATCH_DISTANCE
                            else STRENGTH[SIMILAR])
                edges.append((i, j, strength, float(cos[j])))
        if progress:
            progress(min(start + rows, n), n)
    if reframed and index.local is not None:
        edges += _reframed_edges(index, model, edges, progress)
    for i, j, _, _ in edges:
        parent[find(i)] = find(j)
    groups: dict[int, DuplicateGroup] = {}
    names = {v: k for k, v in STRENGTH.items()}
    for i, _j, strength, cos in edges:
        root = find(i)
        group = groups.setdefault(root, DuplicateGroup(names[strength], cos, []))
        if STRENGTH[group.evidence] < strength:
            group.evidence = names[strength]
        group.score = max(group.score, cos)
    for row in range(n):
        root = find(row)
        if root in groups:
            groups[root].rows.append(row)
    result = sorted(groups.values(), key=lambda g: (-STRENGTH[g.evidence], -g.score, g.rows[0]))
    for group in result:
        group.photos = [index.photos[r] for r in group.rows]
    return result


def _reframed_edges(index: Index, model: str, known: list[tuple[int, int, int, float]],
                    progress: ProgressHook | None, upto: int | None = None,
                    chunk: int = 64) -> list[tuple[int, int, int, float]]:
    """Pairs of archive photos that are one exposure re-framed: each photo's descriptors
    vote for the others, and the best few are verified geometrically; the votes of `chunk`
    rows share one FAISS search. `upto` stops after that many rows (scripts/bench_map.py
    times a sample)."""
    local = index.local
    assert local is not None
    shortlist = local.shortlist()
    joined = {(i, j) for i, j, _, _ in known}
    matrix = index.embeddings(model)
    found: list[tuple[int, int, int, float]] = []
    n = len(index) if upto is None else min(upto, len(index))
    for first in range(0, n, chunk):
        rows = range(first, min(first + chunk, n))
        features = [local.features(i) for i in rows]
        # Each photo as it is and as its mirror image: a mirrored re-post is the same photo.
        looks = features + [mirror(f) for f in features]
        voted = shortlist.votes_many(looks, 4, list(rows) * 2)
        for i, own, as_is, mirrored in zip(rows, features, voted[:len(rows)],
                                           voted[len(rows):], strict=True):
            for j in dict.fromkeys(as_is + mirrored):
                pair = (min(i, j), max(i, j))
                if pair in joined:
                    continue
                joined.add(pair)
                if verify_either(own, local.features(j)).reframed:
                    cos = float(np.dot(matrix[pair[0]], matrix[pair[1]]))
                    found.append((pair[0], pair[1], STRENGTH[REFRAMED], cos))
        if progress:
            progress(rows[-1] + 1, n)
    return found


# -- similarity distribution -------------------------------------------------------------------


@dataclass
class SimilarityStats:
    model: str
    threshold: float
    nearest: np.ndarray  # each photo's cosine to its nearest other photo
    pairs: np.ndarray  # cosines of all pairs, or of a uniform sample of them
    sampled: bool

    def percentiles(self, values: np.ndarray) -> dict[str, float]:
        if len(values) == 0:
            return {}
        return {f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES}

    def histogram(self, values: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
        low = float(min(values.min(initial=1.0), self.threshold)) if len(values) else 0.0
        return np.histogram(values, bins=bins, range=(min(low, 0.999), 1.0))

    def document(self) -> dict[str, object]:
        return {"model": self.model, "threshold": self.threshold,
                "photos": int(len(self.nearest)), "pairs": int(len(self.pairs)),
                "pairs_sampled": self.sampled,
                "nearest_neighbour": self.percentiles(self.nearest),
                "all_pairs": self.percentiles(self.pairs),
                "above_threshold": {"nearest_neighbour": int((self.nearest >= self.threshold)
                                                             .sum()),
                                    "pairs": int((self.pairs >= self.threshold).sum())}}


def similarity_stats(index: Index, model: str, threshold: float, max_pairs: int = 200_000,
                     seed: int = 0, block_bytes: int = BLOCK_BYTES) -> SimilarityStats:
    """Nearest-neighbour cosines (exact, in blocks) and all-pair cosines (sampled when large)."""
    matrix = np.asarray(index.embeddings(model))
    n = len(matrix)
    nearest = np.full(n, np.nan, np.float32)
    total_pairs = n * (n - 1) // 2
    sampled = total_pairs > max_pairs
    pair_parts: list[np.ndarray] = []
    rows = block_rows(n, block_bytes)
    for start, scores in _blocks(matrix, rows):
        idx = np.arange(len(scores))
        scores[idx, start + idx] = -np.inf  # not itself
        if n > 1:
            nearest[start:start + len(scores)] = scores.max(axis=1)
        if not sampled:
            for r in range(len(scores)):
                pair_parts.append(scores[r, start + r + 1:].copy())
    if sampled:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, max_pairs)
        j = rng.integers(0, n - 1, max_pairs)
        j = np.where(j >= i, j + 1, j)  # uniform over j != i
        pairs = np.concatenate([np.einsum("ij,ij->i", matrix[i[k:k + 65536]],
                                          matrix[j[k:k + 65536]])
                                for k in range(0, max_pairs, 65536)])
    else:
        pairs = np.concatenate(pair_parts) if pair_parts else np.zeros(0, np.float32)
    return SimilarityStats(model, threshold, nearest[~np.isnan(nearest)], pairs, sampled)
