"""Which engine an index's embeddings need: fp32, or the int8 model calibrated on the
person's own photos.

The index records the precision each model's embeddings were made with, and for int8 the
content hashes of the photos it was calibrated on: every later `check`, `add` or `serve`
runs that same int8 model (rebuilt from those photos where the cache lost it), so an
index never mixes precisions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .engines import MODELS, Engine, ModelSpec, load_engine
from .engines.base import choose_engine
from .errors import DupecheckError, IndexUnusable, UsageError
from .store import Index, ModelEntry

FP32 = "fp32"
INT8 = "int8"
PRECISIONS = (FP32, INT8)


def check_precision(spec: ModelSpec, precision: str, engine: str) -> None:
    """UsageError unless this model can run at this precision on this engine."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
    if precision == INT8 and not spec.int8:
        offered = ", ".join(sorted(n for n, s in MODELS.items() if s.int8))
        raise UsageError(f"--precision int8 is offered for {offered}, not {spec.name}")
    if precision == INT8 and choose_engine(engine) != "onnx":
        raise UsageError("--precision int8 runs on the ONNX engine: use --engine onnx")


def load_int8_engine(spec: ModelSpec, weights: Path, weights_sha256: str,
                     calibration: Sequence[str],
                     pixels_of: Callable[[Sequence[str]], np.ndarray]) -> Engine:
    """The int8 model calibrated on these photos, from the cache or quantized now (from
    the fp32 export, itself cached)."""
    from .engines.onnx_engine import OnnxEngine, load_onnx_engine, onnx_cache_path
    from .engines.quantize import int8_cache_path, quantize

    path = int8_cache_path(spec, weights_sha256, calibration)
    if not path.is_file():
        load_onnx_engine(spec, weights, weights_sha256)  # exports the fp32 model if needed
        quantize(onnx_cache_path(spec, weights_sha256), pixels_of(calibration), path)
    return OnnxEngine(spec, path)


def index_pixels(index: Index, spec: ModelSpec, shas: Sequence[str]) -> np.ndarray:
    """Model inputs of indexed photos, by content hash, prepared exactly as `index` does."""
    from .added import photo_reader
    from .imaging import decode

    out = []
    with photo_reader(index) as read:
        for sha in shas:
            rows = index.rows_with_sha256(sha)
            photo = index.photos[rows[0]] if rows else None
            data = read(photo) if photo is not None else None
            if photo is None or data is None:
                raise IndexUnusable("the photos the int8 model was calibrated on are not at "
                                    "hand (archive moved?); re-index with --precision int8 "
                                    "--rebuild, or with --precision fp32", index.root)
            try:
                image = decode(data, photo.path, draft=spec.archive_draft_size).image
            except DupecheckError as exc:
                raise IndexUnusable(f"cannot rebuild the int8 model: {exc}",
                                    index.root) from exc
            out.append(spec.to_input(image))
    return np.stack(out)


def onnx_model_file(spec: ModelSpec, entry: ModelEntry) -> Path:
    """Where the ONNX model this index's embeddings come from is cached: the int8 model
    calibrated on the recorded photos, else the fp32 graph (made by `engine_for`)."""
    from .engines.onnx_engine import onnx_cache_path
    from .engines.quantize import int8_cache_path

    if entry.precision == INT8:
        return int8_cache_path(spec, entry.weights_sha256, entry.calibration or [])
    return onnx_cache_path(spec, entry.weights_sha256)


def engine_for(index: Index, spec: ModelSpec, weights: Path, engine: str = "auto") -> Engine:
    """The engine that makes embeddings comparable with this index's: same weights (the
    caller verified them), same precision."""
    entry = index.models[spec.name]
    if entry.precision == INT8:
        if choose_engine(engine) != "onnx":
            raise UsageError(f"this index's {spec.name} embeddings are int8, which runs on the "
                             f"ONNX engine: use --engine onnx (or re-index with --precision "
                             f"fp32)")
        return load_int8_engine(spec, weights, entry.weights_sha256, entry.calibration or [],
                                lambda shas: index_pixels(index, spec, shas))
    return load_engine(spec, weights, engine, entry.weights_sha256)
