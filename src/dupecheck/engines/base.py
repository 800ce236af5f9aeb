"""The engine interface: a batch of model inputs in, L2-normalised embeddings out."""

from __future__ import annotations

import importlib
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import UsageError, needs_extra
from .registry import ModelSpec


class Engine(Protocol):
    spec: ModelSpec

    def embed_batch(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, dim) float32, each row of unit length."""
        ...


ENGINES = ("auto", "onnx", "torch")


def accelerator_present() -> bool:
    """CUDA or Apple MPS, without importing torch (that alone costs ~3 s)."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")


# What each optional install brings, as importable top-level packages.
EXTRA_PACKAGES = {"torch": ("torch", "torchvision"),
                  "mobileclip": ("torch", "open_clip", "timm", "huggingface_hub")}


def extra_installed(extra: str) -> bool:
    """Whether an optional install's packages are there, without importing them."""
    import importlib.util

    try:
        return all(importlib.util.find_spec(name) is not None
                   for name in EXTRA_PACKAGES[extra])
    except (ImportError, ValueError):
        return False


def torch_installed() -> bool:
    return extra_installed("torch")


def resolve(ref: str, spec: ModelSpec, what: str) -> Callable[..., Any]:
    """The function a spec names ("module:function"), imported on use. A `torch_*` module
    (the only place torch is imported) needs the spec's optional install: without it, one
    line naming the extra to install (exit 3), not an ImportError."""
    module_name, _, func_name = ref.partition(":")
    extra = spec.extra or "torch"
    if module_name.rsplit(".", 1)[-1].startswith("torch_") and not extra_installed(extra):
        raise needs_extra(extra, what)
    return getattr(importlib.import_module(module_name), func_name)


def choose_engine(engine: str = "auto") -> str:
    """auto: ONNX Runtime on a CPU-only machine, torch where CUDA or MPS can run it (and
    the torch extra is installed)."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine '{engine}' (known: {', '.join(ENGINES)})")
    if engine == "auto":
        return "torch" if accelerator_present() and torch_installed() else "onnx"
    if engine == "torch" and not torch_installed():
        raise needs_extra("torch", "--engine torch")
    return engine


def load_engine(spec: ModelSpec, weights: Path, engine: str = "auto",
                weights_sha256: str | None = None) -> Engine:
    """Build the spec's model with its weights from a local file, on the chosen engine."""
    if spec.builder:  # a model that is not a torch module brings its own engine
        return resolve(spec.builder, spec, spec.name)(spec, weights)
    if choose_engine(engine) == "onnx":
        from .onnx_engine import load_onnx_engine
        from .weights import file_sha256

        return load_onnx_engine(spec, weights, weights_sha256 or file_sha256(weights))
    from .torch_models import build_torch_engine  # choose_engine saw torch installed

    return build_torch_engine(spec, weights)


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
