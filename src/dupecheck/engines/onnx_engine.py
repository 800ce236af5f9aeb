"""The spec's model on ONNX Runtime: the fast CPU engine, and no torch import once cached.

The ONNX file is exported once from the same torch module the torch engine runs,
into a cache keyed by model, weights SHA-256, preprocessing and export version.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import WeightsUnavailable
from .base import l2_normalise
from .registry import ModelSpec

EXPORT_VERSION = 1  # bump when the export itself changes


def onnx_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dupecheck")) / "onnx"


def onnx_cache_path(spec: ModelSpec, weights_sha256: str) -> Path:
    return onnx_cache_dir() / (f"{spec.name}-{weights_sha256[:20]}-p{spec.preprocessing_version}"
                               f"-x{EXPORT_VERSION}.onnx")


class OnnxEngine:
    def __init__(self, spec: ModelSpec, model_path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.spec = spec
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(model_path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise WeightsUnavailable(f"cannot open the cached ONNX model ({exc}); delete it to "
                                     f"export it again", model_path) from exc

    def embed_batch(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        (out,) = self.session.run(["embedding"], {"pixels": x})
        return l2_normalise(out)


def load_onnx_engine(spec: ModelSpec, weights: Path, weights_sha256: str) -> OnnxEngine:
    path = onnx_cache_path(spec, weights_sha256)
    if not path.is_file():
        from .torch_models import export_onnx  # torch only for the one-time export

        export_onnx(spec, weights, path)
    try:
        return OnnxEngine(spec, path)
    except WeightsUnavailable:
        path.unlink(missing_ok=True)  # a damaged cache entry: export again, once
        from .torch_models import export_onnx

        export_onnx(spec, weights, path)
        return OnnxEngine(spec, path)
