"""The archive as a whole: a 2-D layout of the index's embeddings, and its motifs.

Layout: openTSNE (FFT-accelerated t-SNE) on the embeddings' first 50 principal
components, chosen by measuring the three well-kept engines on 10,000 x 2048 rows on this
project's 2-core machine (scripts/bench_map.py); openTSNE is also deterministic for a
given seed (tests/test_photomap.py).

Motifs: k-means on the same components (K chosen by silhouette when `auto`); photos far
from their motif's centre, and motifs too small to be one, go to "other". Each motif is
named by the model itself (engines/vocabulary.py): the names may be wrong.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .engines.vocabulary import Vocabulary
from .store import Index

PCA_COMPONENTS = 50
MAX_PERPLEXITY = 30.0
# t-SNE iterations after openTSNE's 250 of early exaggeration (its default is 500). On
# 10,000 photos here 250 took 17 s against 56 s, and kept nearly as many of each photo's 10
# nearest neighbours (23% against 24%; scripts/bench_map.py).
TSNE_ITERATIONS = 250
AUTO_K_RANGE = (2, 16)  # K tried by `--motifs auto`
SILHOUETTE_SAMPLE = 3000  # photos the silhouette is computed on, per K
OUTLIER_MADS = 4.0  # further from the centre than median + this many MADs: "other"
MIN_MOTIF_SHARE = 0.005  # a motif holds at least this share of photos (and 3), else "other"
OTHER = "other"
# Up to this many photos the map's duplicate lines include re-framed pairs by default
# (dupes' re-framed pass: 15.8 ms a photo here, so ~30 s; benchmarks/2026-11-28-map-reframed).
REFRAMED_AUTO_ROWS = 2000
NAME_NOTE = "motif names come from the model and may be wrong"


@dataclass
class Motif:
    id: int
    name: str
    rows: list[int]
    labels: list[str] = field(default_factory=list)  # the model's words for it, best first

    @property
    def count(self) -> int:
        return len(self.rows)


@dataclass
class ArchiveMap:
    """Where each row sits (x, y in [0, 1]) and which motif it belongs to."""

    model: str
    xy: np.ndarray  # (N, 2) float
    motif_of: np.ndarray  # (N,) motif id per row
    motifs: list[Motif]
    named_by: str | None  # what named the motifs; None: numbered only
    seed: int = 0
    years: dict[int, dict[str, int]] = field(default_factory=dict)  # motif -> year -> count
    duplicate_groups: list[list[int]] = field(default_factory=list)
    reframed_joined: bool = False  # whether the groups include re-framed pairs

    def duplicate_links(self) -> list[tuple[int, int]]:
        """Lines that join each duplicate group: every photo to its nearest earlier one on
        the map (a spanning tree: short lines, none across the map twice)."""
        links = []
        for group in self.duplicate_groups:
            for k in range(1, len(group)):
                earlier = np.array(group[:k])
                d = np.linalg.norm(self.xy[earlier] - self.xy[group[k]], axis=1)
                links.append((int(earlier[int(d.argmin())]), group[k]))
        return links


def reduce(vectors: np.ndarray, seed: int) -> np.ndarray:
    """The first principal components: t-SNE's and k-means' common input."""
    from sklearn.decomposition import PCA

    n, dim = vectors.shape
    components = min(PCA_COMPONENTS, dim, max(1, n - 1))
    if n < 3:
        return np.asarray(vectors, np.float64)[:, :components]
    return PCA(components, random_state=seed, svd_solver="randomized"
               ).fit_transform(np.asarray(vectors, np.float32))


def layout(reduced: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2) positions scaled into [0, 1] (aspect kept), the same for the same seed."""
    n = len(reduced)
    if n == 0:
        return np.zeros((0, 2))
    if n < 8:  # too few for t-SNE's neighbourhoods: the two main directions
        xy = np.zeros((n, 2))
        cols = min(2, reduced.shape[1])
        xy[:, :cols] = reduced[:, :cols]
    else:
        from openTSNE import TSNE

        perplexity = min(MAX_PERPLEXITY, (n - 1) / 3.0)
        xy = np.asarray(TSNE(perplexity=perplexity, n_iter=TSNE_ITERATIONS, random_state=seed,
                             n_jobs=os.cpu_count() or 1).fit(np.asarray(reduced, np.float64)))
    xy = xy - xy.min(axis=0)
    span = float(xy.max()) if n else 0.0
    if span > 0:
        xy /= span
    xy += (1.0 - xy.max(axis=0)) / 2  # centred in the unit square
    return xy


def cluster(reduced: np.ndarray, k: int | None, seed: int) -> tuple[np.ndarray, int | None]:
    """Motif per row, numbered 0..M-1 by size (largest first); rows set aside get M, the
    id of "other" (returned; None when no row was set aside)."""
    from sklearn.cluster import KMeans

    n = len(reduced)
    if n < 3:
        return np.zeros(n, np.int64), None
    if k is None:
        k = _auto_k(reduced, seed)
    k = max(1, min(k, n))
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(reduced)
    labels = km.labels_.copy()
    dist = np.linalg.norm(reduced - km.cluster_centers_[labels], axis=1)
    centres = km.cluster_centers_
    between = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    np.fill_diagonal(between, np.inf)
    outlier = np.zeros(n, bool)
    for c in range(k):
        members = labels == c
        d = dist[members]
        if len(d) >= 5:
            med = np.median(d)
            mad = np.median(np.abs(d - med))
            # far for its motif, and far on the scale of the space between motifs
            limit = max(med + OUTLIER_MADS * 1.4826 * mad,
                        0.5 * between[c].min() if k > 1 else 0.0)
            outlier[members] = d > limit
    labels[outlier] = -1
    smallest = max(3, int(np.ceil(MIN_MOTIF_SHARE * n)))
    sizes = Counter(labels[labels >= 0].tolist())
    kept = [c for c, size in sorted(sizes.items(), key=lambda cs: (-cs[1], cs[0]))
            if size >= smallest]
    renumber = {c: i for i, c in enumerate(kept)}
    motif_of = np.array([renumber.get(int(c), len(kept)) for c in labels], np.int64)
    return motif_of, (len(kept) if (motif_of == len(kept)).any() else None)


def _auto_k(reduced: np.ndarray, seed: int) -> int:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(reduced)
    low, high = AUTO_K_RANGE
    high = min(high, n // 3)
    if high < low:
        return 1
    rng = np.random.default_rng(seed)
    sample = rng.choice(n, min(n, SILHOUETTE_SAMPLE), replace=False)
    best_k, best_score = low, -2.0
    for k in range(low, high + 1):
        labels = KMeans(n_clusters=k, n_init=2, random_state=seed).fit_predict(reduced)
        if len(set(labels[sample].tolist())) < 2:
            continue
        score = float(silhouette_score(reduced[sample], labels[sample]))
        if score > best_score + 1e-9:
            best_k, best_score = k, score
    return best_k


def name_motifs(motif_of: np.ndarray, other_id: int | None, embeddings: np.ndarray,
                vocabulary: Vocabulary | None) -> list[Motif]:
    """Motifs with the model's words for them: the labels most of their photos get."""
    count = int(motif_of.max()) + 1 if len(motif_of) else 0
    top = vocabulary.top_label(embeddings) if vocabulary is not None else None
    motifs = []
    names: Counter[str] = Counter()
    taken: set[str] = set()  # labels already naming a motif: the next takes its next label
    for m in range(count):
        rows = np.flatnonzero(motif_of == m).tolist()
        labels: list[str] = []
        votes: list[tuple[int, int]] = []
        if top is not None:
            votes = Counter(top[rows].tolist()).most_common(3)
            labels = [vocabulary.labels[i] for i, _ in votes]
        if m == other_id:
            name = OTHER
        elif labels:
            fresh = [lab for lab in labels if lab not in taken] or labels
            name = fresh[0]
            if name == labels[0] and len(votes) > 1 and votes[1][1] * 2 >= votes[0][1] \
                    and labels[1] not in taken:
                name = f"{labels[0]} / {labels[1]}"
            taken.update(name.split(" / "))
        else:
            name = f"motif {m + 1}"
        names[name] += 1
        if m != other_id and names[name] > 1:
            name = f"{name} ({names[name]})"
        motifs.append(Motif(m, name, rows, labels))
    return motifs


def posts_per_year(index: Index, motif_of: np.ndarray) -> dict[int, dict[str, int]]:
    years: dict[int, Counter[str]] = {}
    for row, photo in enumerate(index.photos):
        year = (photo.taken_at or "")[:4]
        if year.isdigit():
            years.setdefault(int(motif_of[row]), Counter())[year] += 1
    return {m: dict(sorted(c.items())) for m, c in years.items()}


def build_map(index: Index, model: str, motifs: int | None = None, seed: int = 0,
              vocabulary: Vocabulary | None = None, named_by: str | None = None,
              duplicate_groups: list[list[int]] | None = None,
              progress: Callable[[str], None] | None = None) -> ArchiveMap:
    """Lay out and cluster the index's embeddings of `model`; name motifs by `vocabulary`."""
    embeddings = np.asarray(index.embeddings(model), np.float32)
    say = progress or (lambda _stage: None)
    say("reducing")
    reduced = reduce(embeddings, seed)
    say("laying out")
    xy = layout(reduced, seed)
    say("finding motifs")
    motif_of, other_id = cluster(reduced, motifs, seed)
    named = name_motifs(motif_of, other_id, embeddings, vocabulary)
    return ArchiveMap(model, xy, motif_of, named, named_by if vocabulary is not None else None,
                      seed, posts_per_year(index, motif_of), duplicate_groups or [])
