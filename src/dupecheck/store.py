"""The index on disk: metadata, PDQ hashes and one embedding matrix per model.

Layout of an index directory:

    CURRENT                 "<generation> <sha256 of its manifest.json>"
    gen-<id>/manifest.json  schema, models (weights SHA-256, preprocessing, dim), file hashes
    gen-<id>/photos.json    one record per row, one row per line
    gen-<id>/photos-spans.npy   (N, 2) int64: where each row's record lies in photos.json
    gen-<id>/photos-sha256.npy  (N, 32) uint8: each row's photo SHA-256 (exact matches)
    gen-<id>/pdq.npy        (N, 32) uint8, row-aligned
    gen-<id>/embeddings-<model>.npy   (N, dim) float32, row-aligned, L2-normalised
    gen-<id>/local-*.npy    local features for `re-framed` (see LocalStore), row-aligned
    staging/<key>/batch-*.npz         finished batches of an unfinished `index` run

A new generation is written beside the old one and published by atomically
replacing CURRENT, so a reader sees the previous index or the new one, never a
mix. Every file is checked against the hashes in the manifest, and the manifest
against CURRENT: a truncated, edited or swapped file is refused, never used.

The manifest holds two digests of each file: SHA-256 (`files`, what dupecheck 1.0
reads) and BLAKE3 (`blake3`, what this version checks: as strong, and several times faster on
two cores, which is what lets a 1M-row index open and verify in a fraction of a second).
Rows are parsed from photos.json only when they are asked for (`PhotoRows`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3
import numpy as np

from .errors import IndexUnusable
from .evidence import PDQ_BYTES
from .localfeatures import (
    DESCRIPTOR_DIM,
    LOCAL_FEATURES,
    LOCAL_VERSION,
    LocalFeatures,
    Shortlist,
    preload,
    unpack,
)

FORMAT = "dupecheck-index"
SCHEMA_VERSION = 1
CURRENT_FILE = "CURRENT"
MANIFEST_FILE = "manifest.json"
PHOTOS_FILE = "photos.json"
PHOTO_SPANS_FILE = "photos-spans.npy"  # (N, 2) int64: [start, end) of each row in photos.json
PHOTO_DIGESTS_FILE = "photos-sha256.npy"  # (N, 32) uint8: each row's photo SHA-256
PDQ_FILE = "pdq.npy"
STAGING_DIR = "staging"
LOCK_FILE = ".lock"
WRITER_POLL_S = 0.05  # how often a waiting writer tries the lock again
NOT_MATCHES_FILE = "not-matches.json"  # the person's "not a re-post" verdicts; survives re-index
LOCAL_DESCRIPTORS_FILE = "local-descriptors.npy"  # (N, 256, 128) uint8 RootSIFT
LOCAL_POINTS_FILE = "local-points.npy"  # (N, 256, 2) float16 keypoint positions
LOCAL_META_FILE = "local-meta.npy"  # (N, 3) uint16: keypoints, width, height
LOCAL_BLOCKS_FILE = "local-blocks.npy"  # (B, 32) uint8: SHA-256 of each block of rows
LOCAL_SHORTLIST_FILE = "local-shortlist.faiss"  # FAISS's own format (no pickle); large only
LOCAL_BLOCK_ROWS = 16  # rows per lazily verified block (~0.5 MB: a check hashes ~12)
ADDED_DIR = "added"  # copies of photos recorded by `dupecheck add`, named by their SHA-256


def embeddings_file(model: str) -> str:
    return f"embeddings-{model}.npy"


@dataclass(frozen=True)
class IndexedPhoto:
    """A row of the index: the archive photo's context and its content hash."""

    path: str
    kind: str
    taken_at: str | None
    caption: str | None
    carousel_index: int | None
    sha256: str


@dataclass(frozen=True)
class ModelEntry:
    """What the embeddings of one model were made with."""

    name: str
    dim: int
    weights_sha256: str
    weights_path: str
    preprocessing: str
    threshold: float | None = None  # calibrated by the person; None means the model default
    precision: str = "fp32"  # "int8": made by the int8 model calibrated on `calibration`
    calibration: list[str] | None = None  # content hashes of the int8 calibration photos


@dataclass
class Index:
    """One complete, verified generation of the index."""

    root: Path
    generation: str
    photos: PhotoRows  # rows parsed when asked for
    pdq: np.ndarray
    models: dict[str, ModelEntry]
    archives: list[str]
    created_at: str
    checksums: Checksums
    local: LocalStore | None = None  # None: built before local features, or without them
    _verifying: dict[str, _Verification] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.photos)

    def embeddings(self, model: str) -> np.ndarray:
        """The model's (N, dim) matrix, memory-mapped read-only after verification (the
        one `verify_in_background` started, else now)."""
        path = self._embeddings_path(model)
        pending = self._verifying.get(model)
        if pending is not None:
            pending.wait()
        else:
            self.checksums.verify(path)
        return load_npy(path, mmap=True)

    def rows_with_sha256(self, sha256: str) -> list[int]:
        """Rows whose photo has this content hash (the exact evidence)."""
        return self.photos.rows_with_sha256(sha256)

    def verify_in_background(self, model: str) -> None:
        """Start hashing the model's matrix in a thread (the hash lets go of the GIL), so
        that it overlaps with decoding and embedding the photo; `embeddings` waits for it,
        and raises what it found. Errors about the file itself are raised now."""
        if model in self._verifying:
            return
        path = self._embeddings_path(model)
        self._verifying[model] = _Verification(path, self.checksums)

    def _embeddings_path(self, model: str) -> Path:
        entry = self.models.get(model)
        if entry is None:
            held = ", ".join(sorted(self.models)) or "none"
            raise IndexUnusable(f"the index holds no '{model}' embeddings (it holds: {held}); "
                                f"run `dupecheck index ARCHIVE --model {model}`", self.root)
        path = self.root / self.generation / embeddings_file(model)
        _check_npy(path, np.dtype("<f4"), (len(self.photos), entry.dim))
        return path


class _Verification:
    """One file checked against the manifest in a thread; `wait` re-raises."""

    def __init__(self, path: Path, checks: Checksums) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path, checks),
                                        name="dupecheck-verify", daemon=True)
        self._thread.start()

    def _run(self, path: Path, checks: Checksums) -> None:
        try:
            checks.verify(path)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting reader
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


@dataclass(frozen=True)
class Checksums:
    """A generation's file digests from its manifest: BLAKE3 where the manifest has one
    (written since 1.1), else SHA-256 (an index written by 1.0)."""

    sha256: Mapping[str, str]
    blake3: Mapping[str, str]

    def verify(self, path: Path, data: bytes | mmap.mmap | None = None) -> None:
        """The file at `path`, or `data` read from it already (hashed as read: no second
        read that could see another file)."""
        if path.name in self.blake3:
            found = _blake3(data) if data is not None else _file_blake3(path)
            ok = found == self.blake3[path.name]
        else:
            found = hashlib.sha256(data).hexdigest() if data is not None else _file_sha256(path)
            ok = found == self.sha256.get(path.name)
        if not ok:
            raise IndexUnusable("does not match its checksum in the manifest (edited or "
                                "damaged)", path)


class PhotoRows(Sequence[IndexedPhoto]):
    """The index's rows, parsed from photos.json when asked for: opening a 1M-row index
    parses none, a check parses its few matches. The file was verified whole on open;
    each record's span and photo hash come from verified columns, and a record that
    disagrees with its column is refused."""

    def __init__(self, data: bytes | mmap.mmap, spans: np.ndarray, digests: np.ndarray,
                 path: Path) -> None:
        self._data = data
        self._spans = spans
        self._digests = digests
        self._words = np.ascontiguousarray(digests).view("<u8")  # (N, 4): fast comparison
        self._path = path
        self._all: list[IndexedPhoto] | None = None
        self._lock = threading.Lock()

    @classmethod
    def parsed(cls, data: bytes | mmap.mmap, count: int, path: Path) -> PhotoRows:
        """The rows of an index written by 1.0 (no row columns): parsed now, the hash
        column derived from them."""
        photos = _parse_all(data, path)
        if len(photos) != count:
            raise IndexUnusable(f"photos.json has {len(photos)} rows, the manifest says "
                                f"{count}", path)
        try:
            digests = sha256_column(photos)
        except ValueError as exc:
            raise IndexUnusable(f"photos.json is malformed ({exc})", path) from exc
        rows = cls(data, np.zeros((count, 2), np.int64), digests, path)
        rows._all = photos
        return rows

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, item):  # type: ignore[override]
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        if self._all is not None:
            return self._all[item]
        row = range(len(self))[item]  # IndexError as a list would, negatives allowed
        start, end = (int(x) for x in self._spans[row])
        return self._checked(row, _parse_record(self._data[start:end], self._path))

    def __iter__(self) -> Iterator[IndexedPhoto]:
        return iter(self.all())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def all(self) -> list[IndexedPhoto]:
        """Every row, parsed once in one pass (dupes, map, re-index)."""
        with self._lock:
            if self._all is None:
                photos = _parse_all(self._data, self._path)
                if len(photos) != len(self):
                    raise IndexUnusable(f"photos.json has {len(photos)} rows, its columns "
                                        f"{len(self)}", self._path)
                self._all = [self._checked(r, p) for r, p in enumerate(photos)]
            return self._all

    def rows_with_sha256(self, sha256: str) -> list[int]:
        try:
            words = np.frombuffer(bytes.fromhex(sha256), "<u8")
        except ValueError:
            return []
        if len(words) != 4:
            return []
        hits = np.flatnonzero(self._words[:, 0] == words[0])
        return [int(r) for r in hits if (self._words[r] == words).all()]

    def _checked(self, row: int, photo: IndexedPhoto) -> IndexedPhoto:
        if photo.sha256 != self._digests[row].tobytes().hex():
            raise IndexUnusable(f"row {row} disagrees with photos-sha256.npy (damaged); "
                                f"re-run `dupecheck index ARCHIVE --rebuild`", self._path)
        return photo


def _parse_record(raw: bytes, path: Path) -> IndexedPhoto:
    try:
        return IndexedPhoto(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise IndexUnusable(f"photos.json is malformed ({exc})", path) from exc


def _parse_all(data: bytes | mmap.mmap, path: Path) -> list[IndexedPhoto]:
    try:
        return [IndexedPhoto(**row) for row in json.loads(data[:])]
    except (ValueError, TypeError) as exc:
        raise IndexUnusable(f"photos.json is malformed ({exc})", path) from exc


def sha256_column(photos: Sequence[IndexedPhoto]) -> np.ndarray:
    """Each photo's SHA-256 as (N, 32) uint8; ValueError for one that is not 64 hex digits."""
    raw = b"".join(bytes.fromhex(p.sha256) for p in photos)
    if len(raw) != 32 * len(photos):
        raise ValueError("a photo's sha256 is not 64 hex digits")
    return np.frombuffer(raw, np.uint8).reshape(len(photos), 32)


@dataclass
class LocalArrays:
    """Local features of every row, ready to write."""

    descriptors: np.ndarray  # (N, LOCAL_FEATURES, DESCRIPTOR_DIM) uint8
    points: np.ndarray  # (N, LOCAL_FEATURES, 2) float16
    meta: np.ndarray  # (N, 3) uint16
    shortlist: np.ndarray | None = None  # serialised FAISS index (uint8), for large indexes


def _block_digest(descriptors: np.ndarray, points: np.ndarray, block: int) -> bytes:
    rows = slice(block * LOCAL_BLOCK_ROWS, (block + 1) * LOCAL_BLOCK_ROWS)
    digest = hashlib.sha256(np.ascontiguousarray(descriptors[rows]))
    digest.update(np.ascontiguousarray(points[rows]))
    return digest.digest()


def _block_hashes(descriptors: np.ndarray, points: np.ndarray) -> np.ndarray:
    blocks = -(-len(descriptors) // LOCAL_BLOCK_ROWS)
    return np.array([np.frombuffer(_block_digest(descriptors, points, b), np.uint8)
                     for b in range(blocks)], np.uint8).reshape(blocks, 32)


class LocalStore:
    """The generation's local features. Descriptors are memory-mapped and each block of
    rows is verified against its hash the first time a row of it is read: a check that
    verifies 16 photos reads 16 blocks, not the whole file, and never an unverified byte."""

    def __init__(self, gen_dir: Path, count: int, checks: Checksums) -> None:
        self._dir = gen_dir
        self._checks = checks
        self.meta = _load_verified(gen_dir / LOCAL_META_FILE, np.dtype("<u2"), (count, 3),
                                   checks)
        blocks = -(-count // LOCAL_BLOCK_ROWS)
        self.block_hashes = _load_verified(gen_dir / LOCAL_BLOCKS_FILE, np.dtype("u1"),
                                           (blocks, 32), checks)
        desc_path, points_path = gen_dir / LOCAL_DESCRIPTORS_FILE, gen_dir / LOCAL_POINTS_FILE
        _check_npy(desc_path, np.dtype("u1"), (count, LOCAL_FEATURES, DESCRIPTOR_DIM))
        _check_npy(points_path, np.dtype("<f2"), (count, LOCAL_FEATURES, 2))
        self._descriptors = load_npy(desc_path, mmap=True)
        self._points = load_npy(points_path, mmap=True)
        self._verified: set[int] = set()
        self._has_shortlist = LOCAL_SHORTLIST_FILE in checks.sha256
        self._shortlist: Shortlist | None = None
        self._shortlist_lock = threading.Lock()
        self._prefetching = False
        if (self.meta[:, 0] > LOCAL_FEATURES).any():
            raise IndexUnusable("keypoint counts out of range", gen_dir / LOCAL_META_FILE)

    def _verify_block(self, block: int) -> None:
        if block in self._verified:
            return
        start = block * LOCAL_BLOCK_ROWS
        if _block_digest(self._descriptors, self._points, block) != \
                self.block_hashes[block].tobytes():
            raise IndexUnusable(f"rows {start}-{start + LOCAL_BLOCK_ROWS - 1} do not match "
                                f"their checksum (edited or damaged); re-run `dupecheck index "
                                f"ARCHIVE --rebuild`", self._dir / LOCAL_DESCRIPTORS_FILE)
        self._verified.add(block)

    def features(self, row: int) -> LocalFeatures:
        """One row's features, its block verified first."""
        self._verify_block(row // LOCAL_BLOCK_ROWS)
        return unpack(self._descriptors, self._points, self.meta, row)

    def all_descriptors(self) -> np.ndarray:
        """Every row's descriptors (N, K, 128), every block verified (small indexes)."""
        self._verify_all()
        return np.asarray(self._descriptors)

    def all_points(self) -> np.ndarray:
        self._verify_all()
        return np.asarray(self._points)

    def _verify_all(self) -> None:
        for block in range(len(self.block_hashes)):
            self._verify_block(block)

    def shortlist_path(self) -> Path | None:
        """The FAISS index written for a large index, verified by its SHA-256; None when the
        index is small enough for an exact shortlist built on open."""
        if not self._has_shortlist:
            return None
        path = self._dir / LOCAL_SHORTLIST_FILE
        self._checks.verify(path)
        return path

    def shortlist(self) -> Shortlist:
        """The descriptor shortlist, opened once (thread-safe: a second caller waits)."""
        with self._shortlist_lock:
            if self._shortlist is None:
                self._shortlist = Shortlist.open(self.all_descriptors, self.meta,
                                                 self.shortlist_path())
            return self._shortlist

    def prefetch(self) -> None:
        """Import OpenCV and FAISS and open the shortlist in a thread, once: it overlaps
        with verifying the index, loading the model and decoding the photos."""
        with self._shortlist_lock:
            if self._prefetching or self._shortlist is not None:
                return
            self._prefetching = True
        threading.Thread(target=self._prefetch, name="dupecheck-shortlist",
                         daemon=True).start()

    def _prefetch(self) -> None:
        try:
            preload()
            self.shortlist()
        except Exception:  # noqa: BLE001 - the check meets it again in shortlist(), says why
            pass

    def shortlist_bytes(self) -> np.ndarray | None:
        path = self.shortlist_path()
        return None if path is None else np.fromfile(path, dtype=np.uint8)


def _load_verified(path: Path, dtype: np.dtype, shape: tuple[int, ...],
                   checks: Checksums) -> np.ndarray:
    _check_npy(path, dtype, shape)
    checks.verify(path)
    return load_npy(path)


def _entry_record(entry: ModelEntry) -> dict[str, Any]:
    """A model's manifest record. Fields added since 1.0 are written only when they say
    something (int8), so an fp32 index stays readable by dupecheck 1.0."""
    record = asdict(entry)
    if record["precision"] == "fp32" and record["calibration"] is None:
        del record["precision"], record["calibration"]
    return record


def index_exists(root: Path) -> bool:
    return (root / CURRENT_FILE).exists()


def open_index(root: Path) -> Index:
    """The current generation, fully verified; IndexUnusable otherwise."""
    root = Path(root)
    # A writer may publish a new generation and delete an old one between our reading
    # CURRENT and opening the files: read again then.
    for attempt in range(3):
        try:
            return _open_generation(root)
        except FileNotFoundError:
            if attempt == 2 or not index_exists(root):
                break
            time.sleep(0.05)
    if not root.exists() or not index_exists(root):
        raise IndexUnusable("no index here yet; run `dupecheck index ARCHIVE` first", root)
    raise IndexUnusable("index files are missing (the index is damaged); "
                        "re-run `dupecheck index ARCHIVE --rebuild`", root)


def _open_generation(root: Path) -> Index:
    current = (root / CURRENT_FILE).read_text(encoding="utf-8", errors="replace").split()
    if len(current) != 2 or not current[0].startswith("gen-") or "/" in current[0]:
        raise IndexUnusable("CURRENT is damaged; re-run `dupecheck index ARCHIVE --rebuild`",
                            root / CURRENT_FILE)
    generation, manifest_sha = current
    gen_dir = root / generation
    manifest_path = gen_dir / MANIFEST_FILE
    manifest_bytes = manifest_path.read_bytes()
    if hashlib.sha256(manifest_bytes).hexdigest() != manifest_sha:
        raise IndexUnusable("manifest.json does not match the checksum it was published with "
                            "(edited or damaged); re-run `dupecheck index ARCHIVE --rebuild`",
                            manifest_path)
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        raise IndexUnusable(f"manifest.json is not JSON ({exc})", manifest_path) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexUnusable("not a dupecheck index", manifest_path)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise IndexUnusable(
            f"index schema version {manifest.get('schema_version')!r}, this dupecheck reads "
            f"version {SCHEMA_VERSION}; re-index with `dupecheck index ARCHIVE --rebuild`", root)
    try:
        count = int(manifest["count"])
        files = {str(k): str(v) for k, v in manifest["files"].items()}
        fast = {str(k): str(v) for k, v in manifest.get("blake3", {}).items()}
        models = {name: ModelEntry(**entry) for name, entry in manifest["models"].items()}
        archives = [str(a) for a in manifest.get("archives", [])]
        created_at = str(manifest.get("created_at", ""))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexUnusable(f"manifest.json is malformed ({exc})", manifest_path) from exc
    checks = Checksums(files, fast)
    photos = _open_rows(gen_dir, count, checks)
    pdq = _load_verified(gen_dir / PDQ_FILE, np.dtype("u1"), (count, PDQ_BYTES), checks)
    local = None
    local_info = manifest.get("local")
    if (isinstance(local_info, dict) and local_info.get("version") == LOCAL_VERSION
            and local_info.get("features") == LOCAL_FEATURES):
        local = LocalStore(gen_dir, count, checks)
    return Index(root, generation, photos, pdq, models, archives, created_at, checks, local)


def _open_rows(gen_dir: Path, count: int, checks: Checksums) -> PhotoRows:
    """The rows: lazily when the generation has the row columns, else (an index written
    by 1.0) parsed now."""
    photos_path = gen_dir / PHOTOS_FILE
    with open(photos_path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data: bytes | mmap.mmap = (mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                                   if size else b"")
    checks.verify(photos_path, data)
    if PHOTO_SPANS_FILE not in checks.sha256:
        return PhotoRows.parsed(data, count, photos_path)
    spans = _load_verified(gen_dir / PHOTO_SPANS_FILE, np.dtype("<i8"), (count, 2), checks)
    digests = _load_verified(gen_dir / PHOTO_DIGESTS_FILE, np.dtype("u1"), (count, 32), checks)
    if count and not (spans[0, 0] >= 0 and spans[-1, 1] <= size
                      and (spans[:, 1] > spans[:, 0]).all()
                      and (spans[1:, 0] >= spans[:-1, 1]).all()):
        raise IndexUnusable("row spans do not fit photos.json (damaged); re-run "
                            "`dupecheck index ARCHIVE --rebuild`", gen_dir / PHOTO_SPANS_FILE)
    return PhotoRows(data, spans, digests, photos_path)


# numpy parses .npy headers with ast.literal_eval, whose recursion counter CPython 3.11
# shares between threads ("AST constructor recursion depth mismatch" when a reader and a
# writer parse at once): one header at a time.
_NPY_HEADER_LOCK = threading.Lock()


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """np.load without pickles, one header parse at a time (see above): every .npy that
    dupecheck reads while other threads may read others goes through here."""
    with _NPY_HEADER_LOCK:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def _check_npy(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Header and size of a .npy, checked before numpy maps it."""
    try:
        with _NPY_HEADER_LOCK, open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                found_shape, fortran, found_dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                found_shape, fortran, found_dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = fh.tell()
    except FileNotFoundError:
        raise
    except Exception as exc:  # numpy raises ValueError for bad headers, pickled dtypes included
        raise IndexUnusable(f"not a valid .npy file ({exc})", path) from exc
    if found_dtype != dtype or fortran:
        raise IndexUnusable(f"holds {found_dtype}{' (Fortran order)' if fortran else ''}, "
                            f"expected {dtype}", path)
    if tuple(found_shape) != shape:
        raise IndexUnusable(f"holds an array of shape {tuple(found_shape)}, the index has "
                            f"{shape}", path)
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise IndexUnusable(f"{size} bytes, expected {expected} (truncated or padded)", path)


def _file_sha256(path: Path) -> str:
    """Hashed through a read-only map: no copy of the file passes through Python."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return hashlib.sha256().hexdigest()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return hashlib.sha256(mapped).hexdigest()


def _file_blake3(path: Path) -> str:
    """BLAKE3 with every core (it lets go of the GIL), straight from a map of the file."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest()


def _blake3(data: bytes | mmap.mmap) -> str:
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


# -- writing -------------------------------------------------------------------------


@contextlib.contextmanager
def writer_lock(root: Path, wait_s: float = 0.0) -> Iterator[None]:
    """One writer at a time per index; readers never wait. A writer waits up to `wait_s`
    for the one before it (an add behind another add), then gives up naming why."""
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with open(root / LOCK_FILE, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise IndexUnusable("another `dupecheck index` is writing this index",
                                        root) from exc
                time.sleep(WRITER_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, write: Any) -> str:
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return _file_sha256(path)


def write_index(
    root: Path,
    photos: Sequence[IndexedPhoto],
    pdq: np.ndarray,
    embeddings: Mapping[str, tuple[ModelEntry, np.ndarray]],
    archives: Sequence[str],
    local: LocalArrays | None = None,
) -> Index:
    """Publish a new generation atomically; on any failure the previous one stays current."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    count = len(photos)
    if pdq.shape != (count, PDQ_BYTES) or pdq.dtype != np.uint8:
        raise ValueError(f"pdq must be ({count}, {PDQ_BYTES}) uint8, got {pdq.shape} {pdq.dtype}")
    for name, (entry, matrix) in embeddings.items():
        if matrix.shape != (count, entry.dim) or name != entry.name:
            raise ValueError(f"{name}: embeddings {matrix.shape} do not fit {count} x {entry.dim}")
    if local is not None and not (
            local.descriptors.shape == (count, LOCAL_FEATURES, DESCRIPTOR_DIM)
            and local.points.shape == (count, LOCAL_FEATURES, 2)
            and local.meta.shape == (count, 3)):
        raise ValueError("local features do not fit the rows")
    generation = f"gen-{time.time_ns()}-{secrets.token_hex(3)}"
    tmp_dir = root / f".{generation}.tmp"
    try:
        tmp_dir.mkdir()
        files: dict[str, str] = {}
        rows, spans, digests = _photo_rows(photos)
        files[PHOTOS_FILE] = _write_synced(tmp_dir / PHOTOS_FILE, lambda fh: fh.write(rows))
        files[PHOTO_SPANS_FILE] = _write_synced(tmp_dir / PHOTO_SPANS_FILE,
                                                lambda fh: np.save(fh, spans))
        files[PHOTO_DIGESTS_FILE] = _write_synced(tmp_dir / PHOTO_DIGESTS_FILE,
                                                  lambda fh: np.save(fh, digests))
        files[PDQ_FILE] = _write_synced(
            tmp_dir / PDQ_FILE, lambda fh: np.save(fh, np.ascontiguousarray(pdq, np.uint8)))
        for name, (_entry, matrix) in embeddings.items():
            files[embeddings_file(name)] = _write_synced(
                tmp_dir / embeddings_file(name),
                lambda fh, m=matrix: np.save(fh, np.ascontiguousarray(m, dtype="<f4")))
        local_info = None
        if local is not None:
            local_info = _write_local(tmp_dir, local, files)
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "count": count,
            "archives": list(archives),
            "models": {name: _entry_record(entry) for name, (entry, _m) in embeddings.items()},
            "files": files,
            "blake3": {name: _file_blake3(tmp_dir / name) for name in files},
            **({"local": local_info} if local_info else {}),
        }
        manifest_bytes = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")
        manifest_sha = _write_synced(tmp_dir / MANIFEST_FILE, lambda fh: fh.write(manifest_bytes))
        _fsync_dir(tmp_dir)
        os.rename(tmp_dir, root / generation)
        _fsync_dir(root)
        current_tmp = root / f".{CURRENT_FILE}.{generation}.tmp"
        _write_synced(current_tmp, lambda fh: fh.write(f"{generation} {manifest_sha}\n".encode()))
        previous = _current_generation(root)
        os.replace(current_tmp, root / CURRENT_FILE)
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.rmtree(root / generation, ignore_errors=True)
        for leftover in root.glob(f".{CURRENT_FILE}.{generation}.tmp"):
            leftover.unlink(missing_ok=True)
        kept = "the previous index is intact" if index_exists(root) else "no index was written"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.ENOSPC:
            reason = "disk full"
        raise IndexUnusable(f"could not write the index ({reason}); {kept}", root) from exc
    _collect_garbage(root, keep={generation, previous or ""})
    return open_index(root)


def _photo_rows(photos: Sequence[IndexedPhoto]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """photos.json as a JSON array with one record per line (what 1.0 reads), where each
    record lies in it, and each photo's SHA-256 as bytes."""
    records = [json.dumps(asdict(p), ensure_ascii=False).encode("utf-8", "surrogatepass")
               for p in photos]
    lengths = np.fromiter((len(r) for r in records), np.int64, len(records))
    ends = np.cumsum(lengths + 2)  # "[\n" before the first record, ",\n" between records
    spans = np.stack([ends - lengths, ends], axis=1).astype("<i8")
    return b"[\n" + b",\n".join(records) + b"\n]\n", spans, sha256_column(photos)


def _write_local(tmp_dir: Path, local: LocalArrays, files: dict[str, str]) -> dict[str, Any]:
    arrays = {
        LOCAL_DESCRIPTORS_FILE: np.ascontiguousarray(local.descriptors, np.uint8),
        LOCAL_POINTS_FILE: np.ascontiguousarray(local.points, "<f2"),
        LOCAL_META_FILE: np.ascontiguousarray(local.meta, "<u2"),
        LOCAL_BLOCKS_FILE: _block_hashes(local.descriptors, local.points),
    }
    for name, array in arrays.items():
        files[name] = _write_synced(tmp_dir / name, lambda fh, a=array: np.save(fh, a))
    if local.shortlist is not None:
        raw = np.ascontiguousarray(local.shortlist, np.uint8).tobytes()
        files[LOCAL_SHORTLIST_FILE] = _write_synced(tmp_dir / LOCAL_SHORTLIST_FILE,
                                                    lambda fh: fh.write(raw))
    return {"version": LOCAL_VERSION, "features": LOCAL_FEATURES,
            "shortlist": "faiss-ivfpq" if local.shortlist is not None else "flat"}


def _current_generation(root: Path) -> str | None:
    try:
        return (root / CURRENT_FILE).read_text().split()[0]
    except (OSError, IndexError):
        return None


def _collect_garbage(root: Path, keep: set[str]) -> None:
    """Drop generations older than the previous one (a reader may still hold that)."""
    for child in root.iterdir():
        name = child.name
        stale_gen = name.startswith("gen-") and name not in keep
        stale_tmp = name.startswith(".gen-") and name.endswith(".tmp")
        stale_pointer = name.startswith(f".{CURRENT_FILE}.") and name.endswith(".tmp")
        if stale_gen or stale_tmp:
            shutil.rmtree(child, ignore_errors=True)
        elif stale_pointer:  # a writer killed before its swap; we hold the writer lock
            child.unlink(missing_ok=True)


# -- staging: finished batches of an unfinished run ------------------------------------


@dataclass(frozen=True)
class StagedPhoto:
    pdq: np.ndarray
    embedding: np.ndarray
    taken_at: str | None
    local: LocalFeatures | None = None


class Staging:
    """Finished batches, kept apart from the visible index until the run publishes.

    Keyed by model, weights and preprocessing, so a batch is only ever reused for
    the embeddings it was made for.
    """

    def __init__(self, root: Path, key: str) -> None:
        self.dir = Path(root) / STAGING_DIR / key

    def load(self) -> dict[str, StagedPhoto]:
        found: dict[str, StagedPhoto] = {}
        if not self.dir.is_dir():
            return found
        for batch in sorted(self.dir.glob("batch-*.npz")):
            try:
                # An .npz parses each member's header when it is read: all under the lock.
                with _NPY_HEADER_LOCK, np.load(batch, allow_pickle=False) as data:
                    shas = [s.decode("ascii") for s in data["sha256"]]
                    pdq, emb, taken = data["pdq"], data["embedding"], data["taken_at"]
                    if not (len(shas) == len(pdq) == len(emb) == len(taken)):
                        raise ValueError("ragged batch")
                    local = None
                    if "local_meta" in data and int(data["local_version"]) == LOCAL_VERSION:
                        local = (data["local_descriptors"], data["local_points"],
                                 data["local_meta"])
                        if not all(len(a) == len(shas) for a in local):
                            raise ValueError("ragged batch")
                    for i, sha in enumerate(shas):
                        found[sha] = StagedPhoto(
                            pdq[i].copy(), emb[i].copy(), str(taken[i]) or None,
                            unpack(*local, i) if local is not None else None)
            except Exception:
                batch.unlink(missing_ok=True)  # a batch cut short by a crash: embed again
        return found

    def add(self, shas: Sequence[str], pdq: np.ndarray, embeddings: np.ndarray,
            taken_at: Sequence[str | None],
            local: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"batch-{time.time_ns()}-{secrets.token_hex(3)}"
        tmp = self.dir / f".{name}.tmp.npz"
        extra = {}
        if local is not None:
            extra = {"local_descriptors": local[0], "local_points": local[1],
                     "local_meta": local[2], "local_version": np.array(LOCAL_VERSION)}
        with open(tmp, "wb") as fh:
            np.savez(fh, sha256=np.array(shas, dtype="S64"), pdq=pdq.astype(np.uint8),
                     embedding=embeddings.astype("<f4"),
                     taken_at=np.array([t or "" for t in taken_at], dtype="U40"), **extra)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / f"{name}.npz")

    def clear_all(self) -> None:
        shutil.rmtree(self.dir.parent, ignore_errors=True)


# -- "not a match", remembered ------------------------------------------------------------


class NotMatches:
    """Pairs the person said are not re-posts: candidate content -> archive photos' content.

    Keyed by SHA-256 on both sides, so a verdict survives renames and re-indexing. The
    file lives beside the generations (it outlives them) and carries the SHA-256 of its
    own pairs: a file changed by anything but dupecheck is refused, never used (a wrong
    pair there would turn a posted photo `new`). A file from before that checksum is read
    once and rewritten with it.
    """

    VERSION = 2

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / NOT_MATCHES_FILE

    @staticmethod
    def _digest(pairs: Mapping[str, Sequence[str]]) -> str:
        canonical = {k: sorted(v) for k, v in sorted(pairs.items())}
        return hashlib.sha256(json.dumps(canonical, sort_keys=True,
                                         separators=(",", ":")).encode()).hexdigest()

    def load(self) -> dict[str, set[str]]:
        forget = "delete it to forget the pairs marked not a match"
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            raise IndexUnusable(f"unreadable ({exc}); {forget}", self.path) from exc
        legacy = isinstance(doc, dict) and "version" not in doc
        pairs = doc if legacy else (doc.get("pairs") if isinstance(doc, dict) else None)
        if not isinstance(pairs, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
                for k, v in pairs.items()):
            raise IndexUnusable(f"malformed; {forget}", self.path)
        if not legacy and (doc.get("version") != self.VERSION
                           or doc.get("sha256") != self._digest(pairs)):
            raise IndexUnusable(f"changed outside dupecheck (its checksum does not match its "
                                f"pairs); {forget}", self.path)
        result = {k: set(v) for k, v in pairs.items()}
        if legacy:
            with contextlib.suppress(OSError):
                self._write(result)
        return result

    def add(self, candidate_sha256: str, archive_sha256s: set[str]) -> None:
        pairs = self.load()
        pairs.setdefault(candidate_sha256, set()).update(archive_sha256s)
        self._write(pairs)

    def _write(self, pairs: Mapping[str, set[str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        listed = {k: sorted(v) for k, v in sorted(pairs.items())}
        doc = {"version": self.VERSION, "pairs": listed, "sha256": self._digest(listed)}
        _write_synced(tmp, lambda fh: fh.write(json.dumps(doc, indent=1).encode()))
        os.replace(tmp, self.path)


def republish(index: Index, models: Mapping[str, ModelEntry]) -> Index:
    """The same rows under an updated manifest (e.g. a calibrated threshold)."""
    embeddings = {name: (entry, np.asarray(index.embeddings(name)))
                  for name, entry in models.items()}
    with writer_lock(index.root):
        return write_index(index.root, index.photos, index.pdq, embeddings, index.archives,
                           local_arrays(index))


def local_arrays(index: Index) -> LocalArrays | None:
    """The index's local features as they are, to carry into a new generation."""
    if index.local is None:
        return None
    return LocalArrays(index.local.all_descriptors(), index.local.all_points(),
                       index.local.meta.copy(), index.local.shortlist_bytes())
