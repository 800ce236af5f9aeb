"""A tiny deterministic engine for fast CLI tests (llm's EmbedDemo idea).

Never used by anything a user runs: the real models are tested through their
real loading path in test_engines.py and test_end_to_end.py. Its "weights" are
a (48, 16) projection in a .npy file, so weights files still differ and are
still verified by SHA-256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dupecheck.engines import ModelSpec, register_model
from dupecheck.engines.base import l2_normalise
from dupecheck.errors import WeightsUnavailable
from dupecheck.store import load_npy

TINY = ModelSpec(
    name="tiny-test",
    dim=16,
    resize=32,
    crop=32,
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    default_threshold=0.97,
    builder="tiny_engine:build",
    batch_size=4,
)


class TinyEngine:
    def __init__(self, spec: ModelSpec, projection: np.ndarray) -> None:
        self.spec = spec
        self.projection = projection

    def embed_batch(self, pixels: np.ndarray) -> np.ndarray:
        n = len(pixels)
        pooled = pixels.reshape(n, 3, 4, 8, 4, 8).mean(axis=(3, 5)).reshape(n, 48)
        return l2_normalise(pooled @ self.projection)


def build(spec: ModelSpec, weights: Path) -> TinyEngine:
    try:
        # In a check the engine loads in a thread while the index's .npy headers are
        # parsed: one parse at a time, as the library reads them (store.load_npy).
        projection = load_npy(weights)
    except Exception as exc:
        raise WeightsUnavailable(f"not a tiny-test checkpoint ({exc})", weights) from exc
    if projection.shape != (48, spec.dim):
        raise WeightsUnavailable("not a tiny-test checkpoint (wrong shape)", weights)
    return TinyEngine(spec, projection.astype(np.float32))


def write_weights(path: Path, seed: int = 0) -> Path:
    np.save(path, np.random.default_rng(seed).normal(size=(48, TINY.dim)).astype(np.float32))
    return path


register_model(TINY)
