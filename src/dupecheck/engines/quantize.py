"""int8 on ONNX Runtime: static quantization calibrated on the person's own photos, and the
fidelity gate that decides, per archive, whether it may be used.

Quantization is onnxruntime's own `quantize_static` (QDQ, per-channel int8 weights, uint8
activations, MinMax ranges) on the fp32 model that `onnx_engine` exports. Its error
depends on the photos, so it is never assumed: the int8 model is compared with the fp32
one on a sample of the archive, and used only when every photo's embedding stays within
cosine 0.99 and (nearly) every photo keeps its nearest neighbour.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .registry import ModelSpec

CALIBRATION_PHOTOS = 32  # photos whose activations set the int8 ranges
GATE_PHOTOS = 64  # other photos the int8 model is checked on (fewer in a small archive)
MIN_PHOTOS = 16  # below this an archive cannot show that int8 is faithful: fp32
GATE_MIN_COSINE = 0.99  # cosine(int8, fp32) of every gate photo at least this
GATE_MIN_TOP1 = 0.99  # share of gate photos whose nearest neighbour stays the same
QUANTIZE_VERSION = 1  # bump when the quantization itself changes


@dataclass(frozen=True)
class Fidelity:
    """How closely the int8 model follows the fp32 one on the archive's own photos."""

    photos: int
    min_cosine: float
    top1_agreement: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= GATE_MIN_COSINE and self.top1_agreement >= GATE_MIN_TOP1

    def reason(self) -> str:
        return (f"int8 kept cosine >= {self.min_cosine:.4f} to fp32 and the same nearest "
                f"neighbour for {self.top1_agreement:.1%} of {self.photos} of your photos "
                f"(needs {GATE_MIN_COSINE} and {GATE_MIN_TOP1:.0%})")

    def document(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def split_sample(shas: Sequence[str]) -> tuple[list[str], list[str]]:
    """(calibration, gate) photos by content hash: spread over the archive, the same for
    the same photos, and disjoint where the archive is large enough."""
    ordered = sorted(set(shas), key=lambda s: hashlib.sha256(f"int8:{s}".encode()).digest())
    calibration = ordered[:CALIBRATION_PHOTOS]
    gate = ordered[CALIBRATION_PHOTOS:CALIBRATION_PHOTOS + GATE_PHOTOS]
    if len(gate) < MIN_PHOTOS:  # a small archive: check on every photo it has
        gate = ordered[:GATE_PHOTOS]
    return calibration, gate


def calibration_id(calibration: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(calibration)).encode()).hexdigest()


def int8_cache_path(spec: ModelSpec, weights_sha256: str, calibration: Sequence[str]) -> Path:
    from .onnx_engine import EXPORT_VERSION, onnx_cache_dir

    return onnx_cache_dir() / (f"{spec.name}-{weights_sha256[:20]}-p{spec.preprocessing_version}"
                               f"-x{EXPORT_VERSION}-int8q{QUANTIZE_VERSION}-"
                               f"{calibration_id(calibration)[:16]}.onnx")


def quantize(fp32_model: Path, pixels: np.ndarray, dest: Path) -> Path:
    """The int8 model of `fp32_model`, its activation ranges taken from `pixels`; written
    atomically."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"pixels": np.ascontiguousarray(pixels[i:i + 8], np.float32)}
                                  for i in range(0, len(pixels), 8)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    dest.parent.mkdir(parents=True, exist_ok=True)
    pre = dest.with_name(f".{dest.name}.{os.getpid()}.pre.onnx")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        quant_pre_process(str(fp32_model), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), Batches(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        os.replace(tmp, dest)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return dest


def measure_fidelity(fp32: Callable[[np.ndarray], np.ndarray],
                     int8: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> Fidelity:
    """Both models on the same photos: the lowest cosine between their embeddings, and the
    share of photos whose nearest other photo is the same under both."""
    a, b = fp32(pixels), int8(pixels)
    cos = (a * b).sum(axis=1)
    agree = 1.0
    if len(a) > 2:
        na, nb = a @ a.T, b @ b.T
        np.fill_diagonal(na, -np.inf)
        np.fill_diagonal(nb, -np.inf)
        agree = float((na.argmax(axis=1) == nb.argmax(axis=1)).mean())
    return Fidelity(len(a), float(cos.min()) if len(cos) else 0.0, agree)
