"""The engine interface: a batch of model inputs in, L2-normalised embeddings out."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from .registry import ModelSpec


class Engine(Protocol):
    spec: ModelSpec

    def embed_batch(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, dim) float32, each row of unit length."""
        ...


def load_engine(spec: ModelSpec, weights: Path) -> Engine:
    """Build the spec's model and load its weights from a local file."""
    module_name, _, func_name = spec.builder.partition(":")
    builder: Callable[[ModelSpec, Path], Engine] = getattr(
        importlib.import_module(module_name), func_name)
    return builder(spec, weights)


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def embed_images(engine: Engine, pixels: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Embed any number of inputs in batches."""
    if len(pixels) == 0:
        return np.zeros((0, engine.spec.dim), dtype=np.float32)
    parts = [engine.embed_batch(pixels[i : i + batch_size])
             for i in range(0, len(pixels), batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False)
