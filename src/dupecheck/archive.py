"""Instagram exports (every layout, zips or folders, split or not) -> photo records.

Zips are read in place and never extracted; a member name that would leave the
archive is refused. Nothing here decodes images: a file's type comes from its
first bytes (`formats.media_type`), because Instagram's extensions lie.
"""

from __future__ import annotations

import json
import os
import re
import stat
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ArchiveError
from .formats import SNIFF_BYTES, media_type

# Kinds of photo, as the person asking thinks of them.
KIND_POST = "post"
KIND_STORY = "story"
KIND_REEL = "reel"
KIND_ARCHIVED = "archived"
KIND_DELETED = "recently deleted"
KIND_PROFILE = "profile"
KIND_OTHER = "other"
KIND_UNLISTED = "unlisted"  # in media/ but named by no JSON
KIND_PHOTO = "photo"  # a plain folder of images, no JSON at all
KIND_ADDED = "added"  # recorded by `dupecheck add` since the export (not in any archive)

# Metadata files by name, in the order a photo named twice takes its kind from.
# IGTV was folded into reels by Instagram in 2022, so its videos count as reels.
METADATA_FILES: tuple[tuple[re.Pattern[str], str, str | None], ...] = (
    (re.compile(r"posts_\d+\.json"), KIND_POST, None),
    (re.compile(r"reels\.json"), KIND_REEL, "ig_reels_media"),
    (re.compile(r"stories\.json"), KIND_STORY, "ig_stories"),
    (re.compile(r"archived_posts\.json"), KIND_ARCHIVED, "ig_archived_post_media"),
    (re.compile(r"igtv_videos\.json"), KIND_REEL, "ig_igtv_media"),
    (re.compile(r"other_content\.json"), KIND_OTHER, "ig_other_media"),
    (re.compile(r"recently_deleted_content\.json"), KIND_DELETED, "ig_recently_deleted_media"),
    (re.compile(r"profile_photos\.json"), KIND_PROFILE, "ig_profile_picture"),
)
LAYOUT_A_FILE = "media.json"
LAYOUT_A_KEYS = {"photos": KIND_POST, "stories": KIND_STORY, "profile": KIND_PROFILE,
                 "videos": KIND_POST}

# Top-level names that mark an export's root; anything above them is a wrapper folder.
ROOT_MARKERS = {"media", "content", "your_instagram_activity", "media.json", "public-media"}
# Where media files live; a file here that no JSON names is an orphan.
MEDIA_DIRS = ("media/", "public-media/", "photos/", "videos/", "stories/", "profile/")

MEDIA_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".heic", ".heif", ".avif",
                    ".tif", ".tiff", ".bmp", ".mp4", ".mov", ".m4v", ".webm")
MAX_MEMBER_BYTES = 256 * 1024 * 1024  # no photo or metadata file is this big; a zip bomb is
MAX_JSON_DEPTH_ERRORS = (RecursionError, ValueError, UnicodeDecodeError)


@dataclass(frozen=True)
class PhotoRecord:
    """One photo of the archive, with the context the person cares about."""

    path: str  # inside the archive, relative to its root
    kind: str
    taken_at: str | None  # ISO 8601; UTC for Instagram's times, camera local for EXIF
    caption: str | None
    carousel_index: int | None  # 0-based in posts of two or more media, else None


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why: reported, never fatal."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ArchiveScan:
    """Everything found in the archives given, before any image is decoded."""

    photos: list[PhotoRecord] = field(default_factory=list)
    videos: int = 0
    subtitles: int = 0
    missing: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    layouts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Entry:
    container: int  # index into Archive._containers
    name: str  # zip member name, or path on disk
    size: int


def repair_mojibake(text: str) -> str:
    """Undo Instagram's one-escape-per-UTF-8-byte encoding, or leave the text as it is."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def display_name(name: str) -> str:
    """A printable form of a name that may carry undecodable bytes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def safe_member_name(name: str) -> str | None:
    """The normalised relative name, or None when it would escape the archive."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _is_junk(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith("._") or base == ".DS_Store"


class Archive:
    """One export, read from one or more zips or folders (the parts of a split export)."""

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.sources = [str(p) for p in paths]
        self.problems: list[Problem] = []
        self.files: dict[str, _Entry] = {}
        self._containers: list[zipfile.ZipFile | Path] = []
        opened = 0
        for path in paths:
            try:
                self._add_source(Path(path))
                opened += 1
            except ArchiveError as exc:
                self.problems.append(Problem(exc.path or str(path), exc.reason))
        if not opened:
            self.close()
            reasons = "; ".join(str(p) for p in self.problems) or "no archive given"
            raise ArchiveError(f"no archive could be read ({reasons})")

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for c in self._containers:
            if isinstance(c, zipfile.ZipFile):
                c.close()

    # -- opening -----------------------------------------------------------------

    def _add_source(self, path: Path) -> None:
        if path.is_dir():
            self._containers.append(path)
            names = dict(self._walk_folder(path))
        elif path.is_file():
            with open(path, "rb") as fh:
                magic = fh.read(4)
            if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
                raise ArchiveError("not a zip file or a folder", path)
            try:
                zf = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise ArchiveError(f"unreadable zip ({exc})", path) from exc
            self._containers.append(zf)
            names = dict(self._zip_members(zf, path))
        elif path.exists():
            raise ArchiveError("not a zip file or a folder", path)
        else:
            raise ArchiveError("no such file or folder", path)
        container = len(self._containers) - 1
        root = _export_root(names)
        for name, (member, size) in names.items():
            rel = name[len(root) :] if root and name.startswith(root) else name
            if rel in self.files:
                if self.files[rel].container != container:
                    continue  # the same file in two parts of a split export
                self.problems.append(Problem(f"{path}:{display_name(rel)}",
                                             "duplicate name, first copy kept"))
                continue
            self.files[rel] = _Entry(container, member, size)

    def _zip_members(self, zf: zipfile.ZipFile, path: Path
                     ) -> Iterator[tuple[str, tuple[str, int]]]:
        seen: set[str] = set()
        for info in zf.infolist():
            if info.is_dir() or _is_junk(info.filename):
                continue
            where = f"{path}:{display_name(info.filename)}"
            safe = safe_member_name(info.filename)
            if safe is None:
                self.problems.append(Problem(where, "member name escapes the archive, skipped"))
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                self.problems.append(Problem(where, "symbolic link member, skipped"))
                continue
            if info.flag_bits & 0x1:
                self.problems.append(Problem(where, "encrypted member, skipped"))
                continue
            if safe in seen:
                self.problems.append(Problem(where, "duplicate name, first copy kept"))
                continue
            seen.add(safe)
            yield safe, (info.filename, info.file_size)

    def _walk_folder(self, root: Path) -> Iterator[tuple[str, tuple[str, int]]]:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for fname in sorted(filenames):
                full = os.path.join(dirpath, fname)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                if _is_junk(rel):
                    continue
                try:
                    st = os.lstat(full)
                except OSError as exc:
                    self.problems.append(Problem(display_name(full), exc.strerror or str(exc)))
                    continue
                if stat.S_ISLNK(st.st_mode):
                    self.problems.append(Problem(display_name(full), "symbolic link, not followed"))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                yield rel, (full, st.st_size)

    # -- reading -----------------------------------------------------------------

    def read(self, path: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """The bytes of one file; ArchiveError (naming it) when unreadable or too large."""
        entry = self.files.get(path)
        if entry is None:
            raise ArchiveError("not in the archive", path)
        if entry.size > limit:
            raise ArchiveError(f"{entry.size} bytes, over the {limit}-byte limit", path)
        container = self._containers[entry.container]
        try:
            if isinstance(container, zipfile.ZipFile):
                with container.open(entry.name) as fh:
                    data = fh.read(limit + 1)
            else:
                with open(entry.name, "rb") as fh:
                    data = fh.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
            raise ArchiveError(f"unreadable ({exc})", display_name(path)) from exc
        except Exception as exc:  # zlib.error and friends from a damaged zip
            raise ArchiveError(f"unreadable ({type(exc).__name__}: {exc})",
                               display_name(path)) from exc
        if len(data) > limit:
            raise ArchiveError(f"over the {limit}-byte limit", display_name(path))
        return data

    def head(self, path: str) -> bytes:
        entry = self.files[path]
        container = self._containers[entry.container]
        try:
            if isinstance(container, zipfile.ZipFile):
                with container.open(entry.name) as fh:
                    return fh.read(SNIFF_BYTES)
            with open(entry.name, "rb") as fh:
                return fh.read(SNIFF_BYTES)
        except Exception:
            return b""  # reported when the photo itself is read

    # -- scanning ----------------------------------------------------------------

    def scan(self) -> ArchiveScan:
        """Every photo with its context, plus what was skipped and why."""
        result = ArchiveScan(problems=list(self.problems))
        named: dict[str, PhotoRecord] = {}  # path -> record, from the JSON
        referenced: set[str] = set()
        metadata = self._metadata_files()
        result.layouts = sorted({_layout_of(p) for p, _ in metadata})
        for json_path, kind in metadata:
            try:
                doc = json.loads(self.read(json_path))
            except ArchiveError as exc:
                result.problems.append(Problem(json_path, exc.reason))
                continue
            except MAX_JSON_DEPTH_ERRORS as exc:
                result.problems.append(Problem(json_path, f"invalid JSON ({_short(exc)})"))
                continue
            items = (_layout_a_items(doc, json_path, result.problems) if kind is None
                     else _items(doc, kind, json_path, result.problems))
            for uri, record in items:
                path = _resolve_uri(uri)
                if path is None:
                    result.missing.append(display_name(uri))
                    continue
                if path not in self.files:
                    result.missing.append(display_name(path))
                    continue
                if path in referenced:
                    continue
                referenced.add(path)
                mtype = media_type(self.head(path), path)
                if mtype == "image":
                    named[path] = PhotoRecord(path, record.kind, record.taken_at,
                                              record.caption, record.carousel_index)
                elif mtype == "video":
                    result.videos += 1
                elif mtype == "subtitle":
                    result.subtitles += 1
                else:
                    reason = ("empty file" if not self.head(path)
                              else "not a photo or a video (unknown file type)")
                    result.problems.append(Problem(display_name(path), f"{reason}, skipped"))
        result.photos.extend(named.values())
        plain = not metadata
        if plain:
            result.layouts = ["folder"]
        for path in sorted(self.files):
            if path in referenced or path.lower().endswith((".json", ".html", ".htm")):
                continue
            if not plain and not path.startswith(MEDIA_DIRS):
                continue
            if path.startswith("public-media/") and path[len("public-"):] in referenced:
                continue  # 2025 exports carry a second copy of media here
            head = self.head(path)
            mtype = media_type(head, path)
            if mtype == "subtitle":
                result.subtitles += 1
                continue
            if mtype == "other" and path.lower().endswith(MEDIA_EXTENSIONS):
                reason = "empty file" if not head else "not a photo or a video (unknown file type)"
                result.problems.append(Problem(display_name(path), f"{reason}, skipped"))
                continue
            if not plain:
                result.orphans.append(display_name(path))
            if mtype == "image":
                kind = KIND_PHOTO if plain else KIND_UNLISTED
                result.photos.append(PhotoRecord(path, kind, None, None, None))
            elif mtype == "video":
                result.videos += 1
        return result

    def _metadata_files(self) -> list[tuple[str, str | None]]:
        found: list[tuple[int, str, str | None]] = []
        for path in self.files:
            base = path.rsplit("/", 1)[-1]
            if path == LAYOUT_A_FILE:
                found.append((0, path, None))
                continue
            for order, (pattern, kind, _key) in enumerate(METADATA_FILES):
                if pattern.fullmatch(base):
                    found.append((order, path, kind))
                    break
        return [(p, k) for _, p, k in sorted(found)]


def _export_root(names: Iterable[str]) -> str:
    """The wrapper folder (with trailing slash) above the export's own top level, if any."""
    best: list[str] | None = None
    for name in names:
        parts = name.split("/")
        for depth, part in enumerate(parts):
            if part in ROOT_MARKERS:
                if best is None or depth < len(best):
                    best = parts[:depth]
                break
    return "/".join(best) + "/" if best else ""


def _layout_of(path: str) -> str:
    if path == LAYOUT_A_FILE:
        return "A"
    if path.startswith("your_instagram_activity/media/"):
        return "D"
    if path.startswith("your_instagram_activity/"):
        return "C"
    return "B"


def _resolve_uri(uri: str) -> str | None:
    """An archive path for a JSON uri; None for remote or escaping ones."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        return None
    uri = uri.split("?", 1)[0].split("#", 1)[0]
    return safe_member_name(uri)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."


@dataclass(frozen=True)
class _Context:
    kind: str
    taken_at: str | None
    caption: str | None
    carousel_index: int | None


def _iso_from_unix(value: Any) -> str | None:
    if isinstance(value, bool):
        raise ValueError(repr(value))
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, (int, float)) or value < 0 or value > 1e11:
        raise ValueError(repr(value)[:40])
    return datetime.fromtimestamp(value, tz=timezone.utc).isoformat(timespec="seconds")


def _iso_from_text(value: Any) -> str | None:
    if not isinstance(value, str):
        raise ValueError(repr(value)[:40])
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def _text(value: Any) -> str | None:
    return repair_mojibake(value) if isinstance(value, str) else None


def _items(doc: Any, kind: str, where: str, problems: list[Problem]
           ) -> Iterator[tuple[str, _Context]]:
    """(uri, context) for every media item of a post-shaped or flat metadata file."""
    base = where.rsplit("/", 1)[-1]
    key = next(k for p, kd, k in METADATA_FILES if kd == kind and p.fullmatch(base))
    if isinstance(doc, dict) and key and key in doc:
        entries = doc[key]
    elif isinstance(doc, dict):
        entries = [doc]  # an export with one post writes a single object
    else:
        entries = doc
    if not isinstance(entries, list):
        found = type(entries).__name__
        problems.append(Problem(where, f"expected a list of entries, found {found}"))
        return
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(Problem(where, f"entry {n}: not an object, skipped"))
            continue
        if "media" in entry:
            media = entry["media"]
            if not isinstance(media, list):
                problems.append(Problem(where, f"entry {n}: 'media' is not a list, skipped"))
                continue
            post_time = _time_of(entry, where, n, problems)
            post_caption = _text(entry.get("title")) or None
            for pos, item in enumerate(media):
                if not isinstance(item, dict):
                    problems.append(Problem(where, f"entry {n} media {pos}: not an object"))
                    continue
                uri = item.get("uri")
                if not isinstance(uri, str) or not uri:
                    problems.append(Problem(where, f"entry {n} media {pos}: no uri"))
                    continue
                taken = post_time or _time_of(item, where, n, problems)
                caption = post_caption or _text(item.get("title"))
                yield uri, _Context(kind, taken, caption, pos if len(media) >= 2 else None)
        elif isinstance(entry.get("uri"), str) and entry["uri"]:
            yield entry["uri"], _Context(kind, _time_of(entry, where, n, problems),
                                         _text(entry.get("title")), None)
        else:
            problems.append(Problem(where, f"entry {n}: no 'media' or 'uri', skipped"))


def _time_of(obj: dict[str, Any], where: str, n: int, problems: list[Problem]) -> str | None:
    if "creation_timestamp" not in obj:
        return None
    try:
        return _iso_from_unix(obj["creation_timestamp"])
    except (ValueError, OverflowError, OSError) as exc:
        problems.append(Problem(where, f"entry {n}: creation_timestamp is not a Unix time "
                                       f"({_short(exc)}), date left empty"))
        return None


def _layout_a_items(doc: Any, where: str, problems: list[Problem]
                    ) -> Iterator[tuple[str, _Context]]:
    """Layout A (~2018-2020): media.json with photos/videos/stories/profile lists."""
    if not isinstance(doc, dict):
        problems.append(Problem(where, f"expected an object, found {type(doc).__name__}"))
        return
    for key, kind in LAYOUT_A_KEYS.items():
        entries = doc.get(key, [])
        if isinstance(entries, dict):
            entries = [entries]
        if not isinstance(entries, list):
            problems.append(Problem(where, f"'{key}' is not a list, skipped"))
            continue
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                problems.append(Problem(where, f"{key} entry {n}: no path, skipped"))
                continue
            taken = None
            if entry.get("taken_at") is not None:
                try:
                    taken = _iso_from_text(entry["taken_at"])
                except (ValueError, TypeError) as exc:
                    problems.append(Problem(where, f"{key} entry {n}: taken_at is not a date "
                                                   f"({_short(exc)}), date left empty"))
            yield entry["path"], _Context(kind, taken, _text(entry.get("caption")), None)


def scan_archive(paths: Sequence[str | Path]) -> tuple[Archive, ArchiveScan]:
    """Open the archives and scan them; the caller closes the Archive."""
    archive = Archive(paths)
    try:
        return archive, archive.scan()
    except Exception:
        archive.close()
        raise

