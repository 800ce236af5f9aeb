"""The one pass a search makes over every row: each row's best cosine over a photo's
crop variants.

Small indexes take a few milliseconds with numpy. A large one is bound by reading the
float32 matrix, and numpy's BLAS call with only 4 columns does not read it at memory
speed; an ONNX Runtime graph (MatMul then ReduceMax: MLAS's GEMM on every core) does,
~1.8x as fast at 1M x 512 here (scripts/bench_scale.py). Its set-up (importing onnx,
building a session: ~0.2 s) is paid once per process, in a thread that overlaps with
decoding the photo.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

LARGE_ELEMENTS = 1 << 25  # rows x dim from which the graph pays for its set-up (64k x 512)
BLOCK_ELEMENTS = 1 << 25  # matrix elements per run of the graph (128 MB of float32)
NUMPY_BLOCK_ROWS = 32768  # rows per numpy pass: the block's scores stay in cache

_session: Any = None
_session_lock = threading.Lock()


def uses_graph(rows: int, dim: int) -> bool:
    return rows * dim >= LARGE_ELEMENTS


def prepare_in_background(rows: int, dim: int) -> None:
    """If this matrix will use the graph, build its session in a thread now."""
    if uses_graph(rows, dim):
        threading.Thread(target=_graph_session, name="dupecheck-cosines", daemon=True).start()


def best_cosines(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per row of `matrix` (N, dim), the largest dot product with any of `vectors` (V, dim)."""
    q = np.ascontiguousarray(np.asarray(vectors, np.float32).T)  # (dim, V)
    n, dim = matrix.shape
    best = np.empty(n, np.float32)
    if n == 0:
        return best
    if uses_graph(n, dim):
        session = _graph_session()
        step = max(1, BLOCK_ELEMENTS // dim)
        for start in range(0, n, step):
            block = np.ascontiguousarray(matrix[start:start + step], np.float32)
            best[start:start + len(block)] = session.run(None, {"rows": block, "q": q})[0]
        return best
    for start in range(0, n, NUMPY_BLOCK_ROWS):
        np.max(matrix[start:start + NUMPY_BLOCK_ROWS] @ q, axis=1,
               out=best[start:start + NUMPY_BLOCK_ROWS])
    return best


def _graph_session() -> Any:
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3
            _session = ort.InferenceSession(_graph_bytes(), options,
                                            providers=["CPUExecutionProvider"])
        return _session


def _graph_bytes() -> bytes:
    from onnx import TensorProto, helper

    rows = helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["n", "dim"])
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, ["dim", "variants"])
    best = helper.make_tensor_value_info("best", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["rows", "q"], ["scores"]),
         helper.make_node("ReduceMax", ["scores"], ["best"], axes=[1], keepdims=0)],
        "best_cosines", [rows, q], [best])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project allows
    return model.SerializeToString()
