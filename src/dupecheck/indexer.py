"""`dupecheck index`: archive -> decoded photos -> hashes and embeddings -> a new index.

Work already done is never done again: embeddings are reused by content hash
from the previous index and from the finished batches of an interrupted run.
The model is only loaded when something new needs embedding.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from .added import extended_local, held_by_export, stored_copy
from .archive import (
    KIND_ADDED,
    KIND_PHOTO,
    KIND_UNLISTED,
    Archive,
    PhotoRecord,
    Problem,
    scan_archive,
)
from .engines import Engine, ModelSpec, embed_images, load_engine
from .engines.quantize import MIN_PHOTOS, calibration_id, measure_fidelity, split_sample
from .engines.weights import file_sha256
from .errors import ArchiveError, ImageError, IndexUnusable
from .evidence import PDQ_BYTES, pdq_hash, sha256_bytes
from .imaging import decode
from .localfeatures import LocalFeatures, build_shortlist, empty_features, extract, pack
from .precision import FP32, INT8, index_pixels, load_int8_engine
from .store import (
    Index,
    IndexedPhoto,
    LocalArrays,
    ModelEntry,
    Staging,
    index_exists,
    open_index,
    write_index,
    writer_lock,
)

ProgressHook = Callable[[str, int, int], None]  # (stage, done, total)
EngineLoader = Callable[[ModelSpec, Path], Engine]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class IndexSummary:
    """What an `index` run did, for the summary table and --json."""

    index: str
    model: str
    photos: int = 0
    embedded: int = 0
    reused: int = 0
    videos: int = 0
    subtitles: int = 0
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dropped_models: list[str] = field(default_factory=list)
    layouts: list[str] = field(default_factory=list)
    archives: list[str] = field(default_factory=list)
    added_replaced: int = 0  # photos added since an export, now held by this export
    added_kept: list[str] = field(default_factory=list)  # added photos it does not hold
    # added photos to take again whose copy in added/ is gone or changed: kept, by their
    # SHA-256 and PDQ hash only
    added_without_copy: list[str] = field(default_factory=list)
    precision: str = "fp32"  # what the embeddings were made with
    int8_fidelity: dict[str, object] | None = None  # the gate's figures, when it ran
    precision_note: str | None = None  # why int8 was asked for and fp32 used


@dataclass
class _Prepared:
    """A photo decoded and ready for the model."""

    sha256: str
    pdq: np.ndarray
    pixels: np.ndarray | None  # None when the embedding is already known
    taken_at: str | None
    features: LocalFeatures | None


def staging_key(spec: ModelSpec, weights_sha256: str,
                calibration: Sequence[str] | None = None) -> str:
    """Batches staged by one model, weights, preprocessing and precision (int8: one
    calibration): an interrupted run resumes only with embeddings it can mix."""
    key = f"{spec.name}-{weights_sha256[:16]}-p{spec.preprocessing_version}"
    return key if calibration is None else f"{key}-int8-{calibration_id(calibration)[:12]}"


def ordered_pool_map(func: Callable[[T], R], items: Iterable[T], workers: int,
                     ahead: int) -> Iterator[R]:
    """Like Executor.map, in order, but never more than `ahead` items in flight (bounded memory)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dupecheck-decode") as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def build_index(
    archives: Sequence[Path],
    index_dir: Path,
    spec: ModelSpec,
    weights: Path,
    *,
    rebuild: bool = False,
    progress: ProgressHook | None = None,
    engine: str = "auto",
    engine_loader: EngineLoader | None = None,
    workers: int | None = None,
    local_features: bool = True,
    precision: str = FP32,
) -> IndexSummary:
    """Make the index hold exactly the photos of `archives`, embedded with `spec`.

    With `local_features` (the default) every photo's local features are stored too, for
    the `re-framed` evidence; they are reused by content like the embeddings. With
    `precision` int8 the model is quantized on a sample of these photos and used only if
    it passes the fidelity gate (engines/quantize.py); else fp32, and the summary says
    why."""
    workers = workers or default_workers()
    archive, scan = scan_archive(archives)
    summary = IndexSummary(
        index=str(index_dir), model=spec.name, videos=scan.videos, subtitles=scan.subtitles,
        missing=scan.missing, orphans=scan.orphans, layouts=scan.layouts,
        archives=[str(Path(a).resolve()) for a in archives],
        errors=[str(p) for p in scan.problems])
    with archive, writer_lock(index_dir):
        previous = _previous_index(index_dir, rebuild)
        weights_sha = file_sha256(weights)
        _refuse_mismatch(previous, spec, weights_sha, rebuild, precision)
        loader = engine_loader or (lambda s, w: load_engine(s, w, engine, weights_sha))

        # 1. Content hashes of every photo (cheap: no decoding).
        def hash_one(record: PhotoRecord) -> tuple[PhotoRecord, str | None, str | None]:
            try:
                return record, sha256_bytes(archive.read(record.path)), None
            except ArchiveError as exc:
                return record, None, exc.reason

        hashed: list[tuple[PhotoRecord, str]] = []
        for n, (record, sha, error) in enumerate(
                ordered_pool_map(hash_one, scan.photos, workers, ahead=4 * workers), 1):
            if sha is None:
                summary.errors.append(f"{record.path}: {error}")
            else:
                hashed.append((record, sha))
            if progress:
                progress("reading", n, len(scan.photos))

        calibration: list[str] | None = None
        if precision == INT8 and engine_loader is not None:
            raise ValueError("int8 quantizes and loads its own engine: no engine_loader")
        if precision == INT8:
            prev_entry = previous.models.get(spec.name) if previous is not None else None
            if prev_entry is not None and prev_entry.calibration:
                calibration = prev_entry.calibration  # the same int8 model as before
                ready = previous

                def pixels_of(shas: Sequence[str]) -> np.ndarray:
                    return index_pixels(ready, spec, shas)
            else:
                calibration, pixels_of = _choose_int8(archive, hashed, spec, weights,
                                                      weights_sha, summary, progress)
            if calibration is None:
                precision = FP32
            else:
                loader = functools.partial(_int8_loader, weights_sha=weights_sha,
                                           calibration=calibration, pixels_of=pixels_of)
        summary.precision = precision
        staging = Staging(index_dir, staging_key(spec, weights_sha, calibration))

        # 2. What is already known, by content.
        known_pdq: dict[str, np.ndarray] = {}
        known_emb: dict[str, np.ndarray] = {}
        known_local: dict[str, LocalFeatures] = {}
        exif_taken: dict[str, str | None] = {}
        if previous is not None:
            prev_emb = previous.embeddings(spec.name) if spec.name in previous.models else None
            wanted = {sha for _, sha in hashed} | {p.sha256 for p in previous.photos
                                                    if p.kind == KIND_ADDED}
            for row, photo in enumerate(previous.photos):
                known_pdq[photo.sha256] = previous.pdq[row]
                if prev_emb is not None:
                    known_emb[photo.sha256] = np.asarray(prev_emb[row])
                if (local_features and previous.local is not None
                        and photo.sha256 in wanted):
                    known_local[photo.sha256] = previous.local.features(row)
                if photo.kind in (KIND_UNLISTED, KIND_PHOTO):
                    exif_taken[photo.sha256] = photo.taken_at
        for sha, staged in staging.load().items():
            known_pdq[sha] = staged.pdq
            known_emb[sha] = staged.embedding
            exif_taken[sha] = staged.taken_at
            if staged.local is not None:
                known_local[sha] = staged.local
        needed: dict[str, PhotoRecord] = {}
        for record, sha in hashed:
            missing = sha not in known_emb or (local_features and sha not in known_local)
            if missing and sha not in needed:
                needed[sha] = record
        summary.reused = len({sha for _, sha in hashed if sha in known_emb})
        # Photos added since the last export ride along (embedded from the copy kept of
        # each where this model has not seen them); step 4 decides which the export holds.
        export_shas = {sha for _, sha in hashed}
        added = [p for p in (previous.photos if previous is not None else [])
                 if p.kind == KIND_ADDED and p.sha256 not in export_shas]
        for p in added:
            missing = p.sha256 not in known_emb or (local_features and
                                                    p.sha256 not in known_local)
            if missing and p.sha256 not in needed:
                needed[p.sha256] = PhotoRecord(p.path, KIND_ADDED, p.taken_at, p.caption, None)

        def read(record: PhotoRecord, sha: str) -> bytes:
            if record.kind != KIND_ADDED:
                return archive.read(record.path)
            data = stored_copy(index_dir, sha)
            if data is None:
                raise ArchiveError("the copy dupecheck kept of this added photo is gone",
                                   record.path)
            return data

        # An added photo whose copy is gone or changed is never dropped: `exact` (its
        # SHA-256) and PDQ still find it; what cannot be taken again is left empty (a zero
        # embedding row scores 0; no local features), and the summary says so.
        for p in added:
            if p.sha256 in needed and stored_copy(index_dir, p.sha256) is None:
                del needed[p.sha256]
                known_emb.setdefault(p.sha256, np.zeros(spec.dim, np.float32))
                if local_features:
                    known_local.setdefault(p.sha256, empty_features())
                summary.added_without_copy.append(p.path)

        # 3. Decode and embed what is new, batch by batch; each finished batch is staged.
        failed = _embed_new(read, needed, spec, weights, staging, loader, known_pdq,
                            known_emb, known_local if local_features else None, exif_taken,
                            summary, progress, workers)

        # 4. Assemble the new generation, row-aligned.
        rows: list[IndexedPhoto] = []
        for record, sha in hashed:
            if sha in failed:
                continue
            taken = record.taken_at
            if record.kind in (KIND_UNLISTED, KIND_PHOTO):
                taken = exif_taken.get(sha)
            rows.append(IndexedPhoto(record.path, record.kind, taken, record.caption,
                                     record.carousel_index, sha))
        local = None
        if local_features:
            if progress:
                progress("shortlist", 0, 1)
            desc, points, meta = pack([known_local.get(r.sha256, empty_features())
                                       for r in rows])
            local = LocalArrays(desc, points, meta, build_shortlist(desc, meta))
            if progress:
                progress("shortlist", 1, 1)
        if added:
            held = held_by_export(
                [(p.sha256, known_pdq[p.sha256], known_local.get(p.sha256)) for p in added
                 if p.sha256 not in failed],
                [r.sha256 for r in rows], np.stack([known_pdq[r.sha256] for r in rows])
                if rows else np.zeros((0, PDQ_BYTES), np.uint8), local)
            kept = [p for p in added if p.sha256 not in held and p.sha256 not in failed]
            summary.added_replaced = len(held)
            summary.added_kept = [p.path for p in kept]
            if kept and local is not None:
                local = extended_local(local, *pack([known_local.get(p.sha256, empty_features())
                                                     for p in kept]))
            rows += kept
        shas = [r.sha256 for r in rows]
        pdq = (np.stack([known_pdq[s] for s in shas]) if rows
               else np.zeros((0, PDQ_BYTES), np.uint8))
        matrix = (np.stack([known_emb[s] for s in shas]).astype(np.float32, copy=False) if rows
                  else np.zeros((0, spec.dim), np.float32))
        entry = ModelEntry(spec.name, spec.dim, weights_sha, str(Path(weights).resolve()),
                           spec.preprocessing,
                           threshold=_kept_threshold(previous, spec.name, weights_sha),
                           precision=precision, calibration=calibration)
        embeddings = {spec.name: (entry, matrix)}
        if previous is not None:
            embeddings.update(_realign_other_models(previous, spec.name, shas, summary))
        write_index(index_dir, rows, pdq, embeddings, summary.archives, local)
        staging.clear_all()
        summary.photos = len(rows)
    return summary


def _int8_loader(spec: ModelSpec, weights: Path, *, weights_sha: str,
                 calibration: Sequence[str],
                 pixels_of: Callable[[Sequence[str]], np.ndarray]) -> Engine:
    return load_int8_engine(spec, weights, weights_sha, calibration, pixels_of)


def _choose_int8(archive: Archive, hashed: list[tuple[PhotoRecord, str]], spec: ModelSpec,
                 weights: Path, weights_sha: str, summary: IndexSummary,
                 progress: ProgressHook | None
                 ) -> tuple[list[str] | None, Callable[[Sequence[str]], np.ndarray]]:
    """Quantize on a sample of the archive and run the fidelity gate: (calibration photos,
    their reader) when int8 passed, (None, ...) when fp32 must be used (summary says why)."""
    record_of = {sha: record for record, sha in hashed}
    decoded: dict[str, np.ndarray | None] = {}  # a small archive's two samples overlap

    def model_input(sha: str) -> np.ndarray | None:
        if sha not in decoded:
            try:
                photo = decode(archive.read(record_of[sha].path), record_of[sha].path,
                               draft=spec.archive_draft_size)
                decoded[sha] = spec.to_input(photo.image)
            except (ArchiveError, ImageError):
                decoded[sha] = None  # the index run reports it; the sample goes on without
        return decoded[sha]

    def readable(shas: Sequence[str]) -> tuple[list[str], np.ndarray]:
        used = [sha for sha in shas if model_input(sha) is not None]
        pixels = [model_input(sha) for sha in used]
        return used, (np.stack(pixels) if pixels else np.zeros((0, 3, spec.crop, spec.crop)))

    def pixels_of(shas: Sequence[str]) -> np.ndarray:
        return readable(shas)[1]

    calibration, gate = split_sample(list(record_of))
    if progress:
        progress("int8", 0, 1)
    calibration, calibration_pixels = readable(calibration)
    gate, gate_pixels = readable(gate)
    if len(set(calibration) | set(gate)) < MIN_PHOTOS:
        summary.precision_note = (f"int8 needs at least {MIN_PHOTOS} readable photos to show "
                                  f"that it follows fp32; this archive has "
                                  f"{len(set(calibration) | set(gate))}: fp32 used")
        return None, pixels_of
    fp32 = load_engine(spec, weights, "onnx", weights_sha)
    int8 = load_int8_engine(spec, weights, weights_sha, calibration,
                            lambda _shas: calibration_pixels)
    fidelity = measure_fidelity(
        lambda x: embed_images(fp32, x, spec.batch_size),
        lambda x: embed_images(int8, x, spec.batch_size), gate_pixels)
    summary.int8_fidelity = fidelity.document()
    if progress:
        progress("int8", 1, 1)
    if not fidelity.passed:
        summary.precision_note = f"{fidelity.reason()}: fp32 used"
        return None, pixels_of
    return calibration, pixels_of


def _previous_index(index_dir: Path, rebuild: bool) -> Index | None:
    if rebuild or not index_exists(index_dir):
        return None
    try:
        return open_index(index_dir)
    except IndexUnusable as exc:
        raise IndexUnusable(f"{exc.reason}; pass --rebuild to start a new index here",
                            exc.path) from exc


def _refuse_mismatch(previous: Index | None, spec: ModelSpec, weights_sha: str,
                     rebuild: bool, precision: str = FP32) -> None:
    if previous is None or rebuild or spec.name not in previous.models:
        return
    entry = previous.models[spec.name]
    if entry.precision != precision:
        raise IndexUnusable(
            f"this index's {spec.name} embeddings are {entry.precision}, not {precision}: an "
            f"index never mixes them; pass --rebuild to embed everything again at "
            f"{precision}, or --precision {entry.precision}", previous.root)
    if entry.weights_sha256 != weights_sha:
        raise IndexUnusable(
            f"this index's {spec.name} embeddings were made with other weights "
            f"(SHA-256 {entry.weights_sha256[:12]}..., these are {weights_sha[:12]}...); "
            f"pass --rebuild to embed everything again, or use another --index", previous.root)
    if entry.preprocessing != spec.preprocessing:
        raise IndexUnusable(
            f"this index's {spec.name} embeddings used other preprocessing "
            f"({entry.preprocessing}); pass --rebuild to embed everything again", previous.root)


def _kept_threshold(previous: Index | None, model: str, weights_sha: str) -> float | None:
    if previous is None or model not in previous.models:
        return None
    entry = previous.models[model]
    return entry.threshold if entry.weights_sha256 == weights_sha else None


def _realign_other_models(previous: Index, model: str, shas: list[str],
                          summary: IndexSummary) -> dict[str, tuple[ModelEntry, np.ndarray]]:
    """Keep another model's embeddings where they cover every photo; else drop and say so."""
    kept: dict[str, tuple[ModelEntry, np.ndarray]] = {}
    row_of = {p.sha256: i for i, p in enumerate(previous.photos)}
    for name, entry in previous.models.items():
        if name == model:
            continue
        if all(s in row_of for s in shas):
            matrix = previous.embeddings(name)
            rows = np.array([row_of[s] for s in shas], dtype=np.int64)
            kept[name] = (entry, np.asarray(matrix[rows] if len(rows) else
                                            np.zeros((0, entry.dim), np.float32)))
        else:
            summary.dropped_models.append(name)
    return kept


def _embed_new(
    read: Callable[[PhotoRecord, str], bytes],
    needed: dict[str, PhotoRecord],
    spec: ModelSpec,
    weights: Path,
    staging: Staging,
    engine_loader: EngineLoader,
    known_pdq: dict[str, np.ndarray],
    known_emb: dict[str, np.ndarray],
    known_local: dict[str, LocalFeatures] | None,
    exif_taken: dict[str, str | None],
    summary: IndexSummary,
    progress: ProgressHook | None,
    workers: int,
) -> set[str]:
    """Decode, hash, embed and take the local features of the new photos (each only where
    not already known); returns the content hashes that failed."""
    failed: set[str] = set()
    if not needed:
        return failed

    def prepare(item: tuple[str, PhotoRecord]) -> _Prepared | Problem:
        sha, record = item
        try:
            photo = decode(read(record, sha), record.path, draft=spec.archive_draft_size)
            pixels = None if sha in known_emb else spec.to_input(photo.image)
            features = extract(photo.image) if known_local is not None else None
            return _Prepared(sha, pdq_hash(photo.image), pixels, photo.taken_at, features)
        except (ArchiveError, ImageError) as exc:
            return Problem(record.path, exc.reason)

    engine: Engine | None = None
    batch: list[_Prepared] = []

    def flush() -> None:
        nonlocal engine
        if not batch:
            return
        to_embed = [p for p in batch if p.pixels is not None]
        if to_embed:
            if engine is None:
                engine = engine_loader(spec, weights)
            for p, vec in zip(to_embed, engine.embed_batch(np.stack([p.pixels for p in to_embed])),
                              strict=True):
                known_emb[p.sha256] = vec
        vectors = np.stack([known_emb[p.sha256] for p in batch])
        pdqs = np.stack([p.pdq for p in batch])
        local = None
        if known_local is not None:
            local = pack([p.features or empty_features() for p in batch])
        staging.add([p.sha256 for p in batch], pdqs, vectors, [p.taken_at for p in batch], local)
        for p in batch:
            known_pdq[p.sha256] = p.pdq
            exif_taken[p.sha256] = p.taken_at
            if known_local is not None:
                known_local[p.sha256] = p.features or empty_features()
        summary.embedded += len(to_embed)
        batch.clear()

    items = list(needed.items())
    ahead = max(2 * spec.batch_size, 2 * workers)
    for n, result in enumerate(ordered_pool_map(prepare, items, workers, ahead), 1):
        if isinstance(result, Problem):
            failed.add(items[n - 1][0])
            summary.errors.append(str(result))
        else:
            batch.append(result)
            if len(batch) >= spec.batch_size:
                flush()
        if progress:
            progress("embedding", n, len(items))
    flush()
    return failed
