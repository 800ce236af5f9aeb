"""The phone's copy of the index: what an offline check needs, compactly, in one file.

One container per index generation, model, threshold and set of pairs marked not a
match, built once and kept in the user cache (`offline/<generation>-<model>-<key>.bin`):
a magic line, a JSON header (the generation, the model and its input, the threshold in
force, each row's date, kind, caption, carousel position and path, the pairs marked not
a match) and binary sections the header points at (little endian): the embeddings, PDQ
hashes, SHA-256 column and small WebP thumbnails.

The embeddings: each row is the index's mean row, plus its coordinates (float16) on the
index's first principal directions, plus what remains in int8 with a scale per row
("int8-pca"), where that keeps every row's nearest other row (its top-1 neighbour) as
float32 has it; else the difference from the mean in float16; else float32. int8 of the
rows themselves would spend its 255 steps on what every photo shares (a ResNet's pooled
features are all positive) and on the few directions along which photos differ most;
taking those out first leaves int8 a far smaller remainder to spend them on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engines.registry import ModelSpec
from .store import Index, sha256_column

MAGIC = b"DUPECHECK-OFFLINE\n"
FORMAT_VERSION = 2  # 2: "int8-pca" and "float16-centred" embeddings, WebP thumbnails
THUMB_SIDE = 64  # px, long side: a match's picture on the phone
THUMB_FORMAT = "webp"  # no JPEG tables in every thumbnail: about half the bytes at 64 px
THUMB_QUALITY = 70
NEIGHBOUR_BLOCK = 1024  # rows scored at a time when checking top-1 neighbours
COMPONENTS = 128  # principal directions kept in float16 before the int8 remainder
# Rows whose cosines to a row differ by less than this are tied for the CLI itself: its
# two engines (ONNX Runtime, PyTorch) agree on an embedding to a cosine of 0.99999.
TIE = 1e-5


def offline_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dupecheck")) / "offline"


def quantize_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and a float32 scale per row (row = codes * scale)."""
    matrix = np.asarray(matrix, np.float32)
    peak = np.abs(matrix).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint(matrix / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def keeps_top1(exact: np.ndarray, approx: np.ndarray, tie: float = TIE) -> bool:
    """Whether every row's nearest other row under `approx` is nearest under `exact` too
    (within `tie` of the nearest counts as kept)."""
    exact = np.asarray(exact, np.float32)
    approx = np.asarray(approx, np.float32)
    n = len(exact)
    if n < 2:
        return True
    for start in range(0, n, NEIGHBOUR_BLOCK):
        rows = np.arange(start, min(n, start + NEIGHBOUR_BLOCK))
        true = exact[rows] @ exact.T
        guess = approx[rows] @ approx.T
        true[np.arange(len(rows)), rows] = -np.inf
        guess[np.arange(len(rows)), rows] = -np.inf
        picked = guess.argmax(axis=1)
        best = true.max(axis=1)
        if np.any(true[np.arange(len(rows)), picked] < best - tie):
            return False
    return True


def principal_directions(residuals: np.ndarray, k: int) -> np.ndarray:
    """The k directions (rows, unit length) along which the residuals vary most."""
    dim = residuals.shape[1]
    cov = np.zeros((dim, dim), np.float64)
    for start in range(0, len(residuals), 8192):
        block = residuals[start:start + 8192].astype(np.float64)
        cov += block.T @ block
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:k]
    return vectors[:, order].T.astype(np.float32)


@dataclass(frozen=True)
class PcaRows:
    """The "int8-pca" encoding's parts, as stored (little endian)."""

    mean: np.ndarray  # (dim,) float32
    basis: np.ndarray  # (k, dim) float16
    coefficients: np.ndarray  # (n, k) float16
    codes: np.ndarray  # (n, dim) int8
    scales: np.ndarray  # (n,) float32

    def rows(self) -> np.ndarray:
        """The rows they stand for (the page computes the same)."""
        return (self.mean[None, :]
                + self.coefficients.astype(np.float32) @ self.basis.astype(np.float32)
                + self.codes.astype(np.float32) * self.scales[:, None])

    @classmethod
    def of(cls, matrix: np.ndarray, k: int | None = None) -> PcaRows:
        matrix = np.asarray(matrix, np.float32)
        k = COMPONENTS if k is None else k
        mean = matrix.mean(axis=0, dtype=np.float64).astype(np.float32)
        residuals = matrix - mean
        basis = principal_directions(residuals, min(k, len(matrix))).astype("<f2")
        stored = basis.astype(np.float32)  # the remainder is taken from what is stored
        coefficients = (residuals @ stored.T).astype("<f2")
        remainder = residuals - coefficients.astype(np.float32) @ stored
        codes, scales = quantize_rows(remainder)
        return cls(mean, basis, coefficients, codes, scales)

    def sections(self) -> list[tuple[str, bytes]]:
        return [("mean", self.mean.astype("<f4").tobytes()),
                ("basis", self.basis.tobytes()),
                ("coefficients", self.coefficients.tobytes()),
                ("embeddings", self.codes.tobytes()),
                ("scales", self.scales.astype("<f4").tobytes())]


def encode_embeddings(matrix: np.ndarray) -> tuple[str, list[tuple[str, bytes]], int]:
    """The most compact encoding that keeps every row's top-1 neighbour: (encoding name,
    [(section name, bytes)], principal directions kept)."""
    matrix = np.asarray(matrix, np.float32)
    if len(matrix):
        pca = PcaRows.of(matrix)
        if keeps_top1(matrix, pca.rows()):
            return "int8-pca", pca.sections(), len(pca.basis)
        mean = pca.mean
        half = (matrix - mean).astype("<f2")
        if keeps_top1(matrix, mean + half.astype(np.float32)):
            return "float16-centred", [("mean", mean.astype("<f4").tobytes()),
                                       ("embeddings", half.tobytes())], 0
    return "float32", [("embeddings", matrix.astype("<f4").tobytes())], 0


@dataclass(frozen=True)
class OfflineCopy:
    path: Path
    generation: str
    bytes: int
    encoding: str
    photos: int


def build_copy(index: Index, spec: ModelSpec, threshold: float,
               not_matches: dict[str, set[str]], dest: Path | None = None) -> OfflineCopy:
    """The container for this generation and model (made once; later calls reuse it)."""
    model = spec.name
    not_pairs = {k: sorted(v) for k, v in sorted(not_matches.items())}
    key = hashlib.sha256(f"v{FORMAT_VERSION}|{threshold:g}|{json.dumps(not_pairs)}".encode()
                         ).hexdigest()[:12]  # a new format is a new file
    dest = dest or offline_dir() / f"{index.generation}-{model}-{key}.bin"
    with _building(dest):  # two first requests for a new copy: one builds, one waits
        made = _made(dest)
        return made if made is not None else _build(index, spec, threshold, not_pairs, dest)


_BUILDS: dict[Path, threading.Lock] = {}
_BUILDS_LOCK = threading.Lock()


def _building(dest: Path) -> threading.Lock:
    with _BUILDS_LOCK:
        return _BUILDS.setdefault(dest, threading.Lock())


def _made(dest: Path) -> OfflineCopy | None:
    """The copy already at `dest`, or None."""
    if not dest.is_file():
        return None
    with open(dest, "rb") as fh:
        start = fh.read(len(MAGIC) + 4)
        if not start.startswith(MAGIC):
            return None
        (length,) = struct.unpack_from("<I", start, len(MAGIC))
        header = read_header(start + fh.read(length))
    return OfflineCopy(dest, header["generation"], dest.stat().st_size,
                       header["embeddings_encoding"], header["photos"])


def _build(index: Index, spec: ModelSpec, threshold: float,
           not_pairs: dict[str, list[str]], dest: Path) -> OfflineCopy:
    from .thumbs import row_thumbnails

    model = spec.name
    matrix = np.asarray(index.embeddings(model), np.float32)
    encoding, sections, components = encode_embeddings(matrix)
    sections.append(("pdq", np.ascontiguousarray(index.pdq, np.uint8).tobytes()))
    sections.append(("sha256", sha256_column(index.photos).tobytes()))
    thumbs = row_thumbnails(index, list(range(len(index))), THUMB_SIDE, workers=2)
    blobs = []
    for img in thumbs:
        if img is None:
            blobs.append(b"")
            continue
        buf = io.BytesIO()
        img.save(buf, THUMB_FORMAT.upper(), quality=THUMB_QUALITY)
        blobs.append(buf.getvalue())
    ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
    sections.append(("thumb_ends", ends.astype("<u4").tobytes()))
    sections.append(("thumbs", b"".join(blobs)))
    entry = index.models[model]
    offsets: dict[str, list[int]] = {}
    position = 0
    for name, data in sections:
        offsets[name] = [position, len(data)]
        position += len(data)
    header = {
        "format": FORMAT_VERSION, "generation": index.generation, "model": model,
        "dim": entry.dim, "precision": entry.precision, "photos": len(index),
        "input": {"resize": spec.resize, "crop": spec.crop, "mean": list(spec.mean),
                  "std": list(spec.std)},
        "threshold": threshold, "embeddings_encoding": encoding, "components": components,
        "sections": offsets,
        "thumb_format": THUMB_FORMAT,
        "rows": [{"path": p.path, "kind": p.kind, "taken_at": p.taken_at,
                  "caption": p.caption, "carousel_index": p.carousel_index}
                 for p in index.photos],
        "not_pairs": not_pairs,
    }
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + struct.pack("<I", len(head)) + head)
        for _, data in sections:
            fh.write(data)
    os.replace(tmp, dest)
    return OfflineCopy(dest, index.generation, dest.stat().st_size, encoding, len(index))


def read_header(data: bytes) -> dict:
    if not data.startswith(MAGIC):
        raise ValueError("not a dupecheck offline copy")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    header = json.loads(data[start:start + length])
    header["_body"] = start + length
    return header


def read_copy(data: bytes) -> tuple[dict, dict[str, bytes]]:
    """The header and each section's bytes (what the page's script does, in Python)."""
    header = read_header(data)
    body = header.pop("_body")
    return header, {name: data[body + off: body + off + length]
                    for name, (off, length) in header["sections"].items()}
