"""Photos posted since the export: recorded by hand (`add`, `check --add`), until an export
that holds them is indexed.

An added photo is a row like any other (kind `added`), with its hashes, embeddings and
local features, in a new generation published atomically. A copy of its bytes is kept
in the index folder under `added/<sha256>`, so that a later `index` with another model
can embed it and a report can show it. When a newer export is indexed, each added photo
that the export holds (the same content by exact, near-identical or re-framed evidence)
gives way to the export's own record; the others are kept.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .archive import KIND_ADDED, Archive
from .engines import Engine, ModelSpec
from .errors import DupecheckError, UsageError
from .evidence import PDQ_MATCH_DISTANCE, pdq_distances, pdq_hash, sha256_bytes
from .formats import IMAGE_FORMATS, SNIFF_BYTES, sniff
from .imaging import MAX_PIXELS, decode
from .localfeatures import (
    LocalFeatures,
    Shortlist,
    empty_features,
    extract,
    pack,
    unpack,
    verify,
)
from .search import Source, Upload, read_source
from .store import (
    ADDED_DIR,
    Index,
    IndexedPhoto,
    LocalArrays,
    ModelEntry,
    local_arrays,
    open_index,
    write_index,
    writer_lock,
)

ProgressHook = Callable[[int, int], None]


# -- photos from files and folders ---------------------------------------------------------------


def collect_photos(paths: Sequence[Path]) -> tuple[list[Path], list[str]]:
    """Files as given, and every photo inside the folders given (recursively; the file
    type from its bytes, never its name). Problems are one line each, naming the file."""
    found: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)  # a missing or unreadable file is reported when it is read
            continue
        for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if name.startswith(".") or file.is_symlink():
                    continue
                try:
                    with open(file, "rb") as fh:
                        head = fh.read(SNIFF_BYTES)
                except OSError as exc:
                    problems.append(f"{file}: {exc.strerror or exc}")
                    continue
                if sniff(head) in IMAGE_FORMATS:
                    found.append(file)
                else:
                    problems.append(f"{file}: not a photo")
    return found, problems


# -- add --------------------------------------------------------------------------------------


@dataclass
class AddedPhoto:
    path: str
    sha256: str
    taken_at: str | None


@dataclass
class AddSummary:
    """What `add` did, for the summary and --json."""

    index: str
    added: list[AddedPhoto] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # in the index already (same bytes)
    errors: list[str] = field(default_factory=list)
    photos: int = 0  # in the index afterwards


@dataclass
class _Prepared:
    path: str
    data: bytes
    sha256: str
    pdq: np.ndarray
    vectors: dict[str, np.ndarray]
    features: LocalFeatures | None
    taken_at: str | None


ADD_WAIT_S = 60.0  # an add behind another writer waits this long for its turn
UPLOADED = "uploaded/"  # the path of a photo added through `serve`: its upload name


def _record_path(source: Source) -> str:
    return UPLOADED + source.name if isinstance(source, Upload) else str(source.resolve())


def parse_date(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"--date must be YYYY-MM-DD, got {text!r}") from None


def add_photos(index_dir: Path, paths: Sequence[Source],
               engines: dict[str, tuple[ModelSpec, Callable[[], Engine]]],
               caption: str | None = None, date: str | None = None,
               progress: ProgressHook | None = None,
               wait_s: float = ADD_WAIT_S) -> AddSummary:
    """Record photos as posted: hashed, embedded with every model the index holds, with
    local features, in a new generation. `engines` maps each of the index's models to its
    spec and a loader (called once, only if something is new). Behind another writer it
    waits its turn up to `wait_s` (two adds at once both land)."""
    with writer_lock(index_dir, wait_s):
        index = open_index(index_dir)
        missing = set(index.models) - set(engines)
        if missing:
            raise UsageError(f"no engine for the index's model(s): {', '.join(sorted(missing))}")
        summary = AddSummary(str(index_dir))
        known = {p.sha256 for p in index.photos}
        taken_default = parse_date(date)
        prepared: list[_Prepared] = []
        loaded: dict[str, Engine] = {}
        for n, path in enumerate(paths, 1):
            try:
                name, data = read_source(path)
                sha = sha256_bytes(data)
                if sha in known:
                    summary.already.append(name)
                    continue
                photo = decode(data, name,
                               draft=max(s.archive_draft_size for s, _ in engines.values()),
                               max_pixels=path.max_pixels if isinstance(path, Upload)
                               else MAX_PIXELS)
                vectors = {}
                for name in index.models:
                    spec, loader = engines[name]
                    if name not in loaded:
                        loaded[name] = loader()
                    vectors[name] = loaded[name].embed_batch(spec.to_input(photo.image)[None])[0]
                features = extract(photo.image) if index.local is not None else None
                taken = taken_default or photo.taken_at or datetime.date.today().isoformat()
                prepared.append(_Prepared(_record_path(path), data, sha, pdq_hash(photo.image),
                                          vectors, features, taken))
                known.add(sha)
            except DupecheckError as exc:
                summary.errors.append(str(exc))
            if progress:
                progress(n, len(paths))
        if prepared:
            _publish_with(index, prepared, caption)
        for p in prepared:
            summary.added.append(AddedPhoto(p.path, p.sha256, p.taken_at))
        summary.photos = len(index) + len(prepared)
    return summary


def _store_copy(root: Path, sha256: str, data: bytes) -> None:
    folder = root / ADDED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / sha256
    if target.exists():
        return
    tmp = folder / f".{sha256}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def stored_copy(root: Path, sha256: str) -> bytes | None:
    """The bytes of an added photo, verified by their hash; None when gone or changed."""
    try:
        data = (Path(root) / ADDED_DIR / sha256).read_bytes()
    except OSError:
        return None
    return data if sha256_bytes(data) == sha256 else None


@contextlib.contextmanager
def photo_reader(index: Index) -> Iterator[Callable[[IndexedPhoto], bytes | None]]:
    """read(photo) -> the bytes of one of the index's photos: from the archive the index was
    built from, or the copy kept of an added photo; None where neither can be read now
    (the archive moved, the member is damaged, the copy changed). The archive is opened
    on the first read that needs it, once, for any number of threads."""
    opened: list[Archive | None] = []
    lock = threading.Lock()

    def archive() -> Archive | None:
        with lock:
            if not opened:
                try:
                    opened.append(Archive([Path(a) for a in index.archives])
                                  if index.archives else None)
                except DupecheckError:
                    opened.append(None)
            return opened[0]

    def read(photo: IndexedPhoto) -> bytes | None:
        if photo.kind == KIND_ADDED:
            return stored_copy(index.root, photo.sha256)
        source = archive()
        if source is None:
            return None
        try:
            return source.read(photo.path)
        except DupecheckError:
            return None

    try:
        yield read
    finally:
        if opened and opened[0] is not None:
            opened[0].close()


def _publish_with(index: Index, prepared: list[_Prepared], caption: str | None) -> None:
    for p in prepared:  # the copies first: a published row always has its bytes
        _store_copy(index.root, p.sha256, p.data)
    rows = list(index.photos) + [IndexedPhoto(p.path, KIND_ADDED, p.taken_at, caption, None,
                                              p.sha256) for p in prepared]
    pdq = np.concatenate([index.pdq, np.stack([p.pdq for p in prepared])])
    embeddings: dict[str, tuple[ModelEntry, np.ndarray]] = {}
    for name, entry in index.models.items():
        new = np.stack([p.vectors[name] for p in prepared]).astype(np.float32)
        embeddings[name] = (entry, np.concatenate([np.asarray(index.embeddings(name)), new]))
    local = None
    if index.local is not None:
        old = local_arrays(index)
        assert old is not None
        desc, points, meta = pack([p.features or empty_features() for p in prepared])
        local = extended_local(old, desc, points, meta)
    write_index(index.root, rows, pdq, embeddings, index.archives, local)


def extended_local(old: LocalArrays, desc: np.ndarray, points: np.ndarray, meta: np.ndarray
              ) -> LocalArrays:
    """Rows appended: the stored shortlist, where there is one, gains them without being
    trained again."""
    from .localfeatures import build_shortlist, extend_shortlist

    all_desc = np.concatenate([old.descriptors, desc])
    all_meta = np.concatenate([old.meta, meta])
    if old.shortlist is not None:
        shortlist = extend_shortlist(old.shortlist, desc, meta, first_row=len(old.meta))
    else:
        shortlist = build_shortlist(all_desc, all_meta)
    return LocalArrays(all_desc, np.concatenate([old.points, points]), all_meta, shortlist)


# -- remove -----------------------------------------------------------------------------------


@dataclass
class RemoveSummary:
    index: str
    removed: list[str] = field(default_factory=list)
    photos: int = 0


def remove_photos(index_dir: Path, targets: Sequence[str]) -> RemoveSummary:
    """Take added photos out again, by the path `check` shows or by the file itself (its
    content). An export's photo is refused: the export decides what it holds."""
    with writer_lock(index_dir):
        index = open_index(index_dir)
        photos = list(index.photos)
        drop: set[int] = set()
        for target in targets:
            rows = [r for r, p in enumerate(photos) if p.path == target]
            if not rows and Path(target).is_file():
                rows = index.rows_with_sha256(sha256_bytes(Path(target).read_bytes()))
            if not rows:
                raise UsageError(f"{target}: no such photo in the index (use the path `check` "
                                 f"shows, or the file itself)")
            export_rows = [r for r in rows if index.photos[r].kind != KIND_ADDED]
            if export_rows:
                kind = index.photos[export_rows[0]].kind
                raise UsageError(f"{target}: a photo of the export ({kind}), not one you "
                                 f"added; only added photos can be removed")
            drop.update(rows)
        keep = [r for r in range(len(index)) if r not in drop]
        summary = RemoveSummary(str(index_dir), sorted({index.photos[r].path for r in drop}))
        _publish_rows(index, keep)
        gone = {index.photos[r].sha256 for r in drop} - {index.photos[r].sha256 for r in keep}
        for sha in gone:
            (index.root / ADDED_DIR / sha).unlink(missing_ok=True)
        summary.photos = len(keep)
    return summary


def _publish_rows(index: Index, keep: list[int]) -> None:
    rows = np.asarray(keep, dtype=np.int64)
    embeddings = {name: (entry, np.asarray(index.embeddings(name))[rows])
                  for name, entry in index.models.items()}
    local = None
    if index.local is not None:
        from .localfeatures import build_shortlist

        old = local_arrays(index)
        assert old is not None
        desc, meta = old.descriptors[rows], old.meta[rows]
        local = LocalArrays(desc, old.points[rows], meta, build_shortlist(desc, meta))
    photos = list(index.photos)
    write_index(index.root, [photos[r] for r in keep], index.pdq[rows], embeddings,
                index.archives, local)


# -- a newer export: which added photos it holds ---------------------------------------------------


def held_by_export(added: Iterable[tuple[str, np.ndarray, LocalFeatures | None]],
                   export_shas: Sequence[str], export_pdq: np.ndarray,
                   export_local: LocalArrays | None) -> set[str]:
    """The content hashes of the added photos that the export holds: the same bytes, a PDQ
    within 31 bits, or re-framed (local features verified against the export's best)."""
    held: set[str] = set()
    shas = set(export_shas)
    shortlist = None
    if export_local is not None and len(export_shas):
        shortlist = Shortlist.open(lambda: export_local.descriptors, export_local.meta,
                                   export_local.shortlist)
    for sha, pdq, features in added:
        if sha in shas:
            held.add(sha)
        elif len(export_pdq) and int(pdq_distances(export_pdq, pdq).min()) <= PDQ_MATCH_DISTANCE:
            held.add(sha)
        elif shortlist is not None and export_local is not None and features is not None:
            for row in shortlist.votes(features, limit=4):
                other = unpack(export_local.descriptors, export_local.points, export_local.meta,
                               row)
                if verify(features, other).reframed:
                    held.add(sha)
                    break
    return held

