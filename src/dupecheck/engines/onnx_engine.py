"""The spec's model on ONNX Runtime: the fast CPU engine, and no torch import once cached.

The ONNX file is made once per weights, into a cache keyed by model, weights SHA-256,
preprocessing and export version: straight from the checkpoint where the spec can
(ResNet-50: no torch at all), else exported from the torch module the torch engine runs.
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


def _machine_fingerprint() -> str:
    """What an optimized graph may depend on: ONNX Runtime's version and this CPU (its
    fully optimized graphs use the CPU's own instructions and layouts)."""
    import hashlib
    import platform

    import onnxruntime as ort

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    text = f"{ort.__version__}|{platform.machine()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _session(path: Path, threads: int, optimize: bool, save_to: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle worker threads sleep instead of spinning: dupecheck always has other work on the
    # cores (decoding, local features, the search), which spinning would take CPU from
    # (a cold check: ~0.1 s of CPU less, ad-hoc, median of 5).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # saving a CPU-specific graph warns; the path says so
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if save_to is not None:
        options.optimized_model_filepath = str(save_to / OPTIMIZED_GRAPH)
        # The weights go to a file of their own, which later sessions memory-map instead of
        # parsing ~94 MB of protobuf into fresh memory: ResNet-50's session opens in ~8 ms
        # instead of ~150 ms here (ad-hoc, fresh processes), its first run as fast.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", OPTIMIZED_WEIGHTS)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


OPTIMIZED_GRAPH = "model.onnx"  # inside an optimized copy's folder
OPTIMIZED_WEIGHTS = "model.data"  # beside it; named inside the graph


def optimized_path(model_path: Path) -> Path:
    """The folder of the optimized copy (graph and weights): written whole under another
    name and renamed into place, so a session sees all of it or none."""
    return model_path.with_name(f"{model_path.stem}.opt-{_machine_fingerprint()}")


class OnnxEngine:
    """ONNX Runtime on the CPU. The first session optimizes the graph (0.3-0.4 s for
    ResNet-50 here) and saves the result beside the model, keyed by ONNX Runtime's version
    and this CPU; later sessions load that, skip the optimization and map its weights (a
    cold `check`)."""

    def __init__(self, spec: ModelSpec, model_path: Path, threads: int | None = None) -> None:
        self.spec = spec
        threads = threads or max(1, os.cpu_count() or 1)
        optimized = optimized_path(model_path)
        graph = optimized / OPTIMIZED_GRAPH
        if graph.is_file() and graph.stat().st_mtime >= model_path.stat().st_mtime:
            try:
                self.session = _session(graph, threads, optimize=False)
                return
            except Exception:  # noqa: BLE001 - a damaged optimized copy: optimize again
                _remove(optimized)
        legacy = optimized.with_name(f"{optimized.name}.onnx")  # one file, before 1.1
        legacy.unlink(missing_ok=True)
        tmp = optimized.with_name(f".{optimized.name}.{os.getpid()}.tmp")
        _remove(tmp)
        try:
            tmp.mkdir(parents=True)
            self.session = _session(model_path, threads, optimize=True, save_to=tmp)
        except Exception as exc:
            _remove(tmp)
            raise WeightsUnavailable(f"cannot open the cached ONNX model ({exc}); delete it to "
                                     f"export it again", model_path) from exc
        try:
            _remove(optimized)  # a damaged copy, or one older than the model
            os.rename(tmp, optimized)  # atomic: another process sees all of it or none
        except OSError:
            _remove(tmp)  # another process renamed its copy first: theirs is as good

    def embed_batch(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        (out,) = self.session.run(["embedding"], {"pixels": x})
        return l2_normalise(out)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def make_onnx(spec: ModelSpec, weights: Path, dest: Path) -> Path:
    """Write the spec's ONNX graph for these weights to `dest`: built from the checkpoint
    without torch where the spec says how, else exported from its torch module."""
    from .base import resolve

    if spec.onnx_graph:
        return resolve(spec.onnx_graph, spec, spec.name)(weights, spec, dest)
    export = resolve("dupecheck.engines.torch_models:export_onnx", spec,
                     f"{spec.name}'s first use")  # torch only for the one-time export
    return export(spec, weights, dest)


def load_onnx_engine(spec: ModelSpec, weights: Path, weights_sha256: str) -> OnnxEngine:
    path = onnx_cache_path(spec, weights_sha256)
    if not path.is_file():
        make_onnx(spec, weights, path)
    try:
        return OnnxEngine(spec, path)
    except WeightsUnavailable:
        path.unlink(missing_ok=True)  # a damaged cache entry: made again, once
        make_onnx(spec, weights, path)
        return OnnxEngine(spec, path)
