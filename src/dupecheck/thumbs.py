"""Small pictures of index rows, made from the archive once and cached by content hash.

A map of 10,000 photos needs 10,000 thumbnails; decoding the archive again on every run
would cost minutes, so each is kept under the user cache as `<side>/<sha256>.jpg`. The
cache is keyed by the photo's bytes, so a moved or re-exported archive reuses it; a
damaged cache file is made again, never trusted (it is decoded like any photo).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from .errors import DupecheckError
from .store import Index, IndexedPhoto

THUMB_QUALITY = 80


def thumbs_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dupecheck")) / "thumbs"


def _cached(path: Path, side: int) -> Image.Image | None:
    try:
        with Image.open(path) as img:
            img.load()
            if max(img.size) > side or img.format != "JPEG":
                return None
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _store(path: Path, img: Image.Image) -> None:
    """Written atomically: a reader sees the whole thumbnail or none."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=THUMB_QUALITY)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs speed


def row_thumbnails(index: Index, rows: Sequence[int], side: int, keep: int | None = None,
                   cache: Path | None = None, workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None
                   ) -> list[Image.Image | None]:
    """One thumbnail per row, made (and cached) with long side `side` and returned with
    long side `keep` (memory: 10,000 at 64 px hold ~90 MB); None where the photo cannot be
    read (the archive moved, the member is damaged)."""
    from .added import photo_reader
    from .imaging import decode

    folder = (cache or thumbs_dir()) / str(side)

    def one(read: Callable[[IndexedPhoto], bytes | None], photo: IndexedPhoto
            ) -> Image.Image | None:
        img = made(read, photo)
        if img is not None and keep is not None and max(img.size) > keep:
            img.thumbnail((keep, keep), Image.Resampling.BILINEAR)
        return img

    def made(read: Callable[[IndexedPhoto], bytes | None], photo: IndexedPhoto
             ) -> Image.Image | None:
        path = folder / photo.sha256[:2] / f"{photo.sha256}.jpg"
        img = _cached(path, side)
        if img is not None:
            return img
        data = read(photo)
        if data is None:
            return None
        try:
            img = decode(data, photo.path, draft=side).image
        except DupecheckError:
            return None
        img = img.convert("RGB")
        img.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        _store(path, img)
        return img

    out: list[Image.Image | None] = []
    with photo_reader(index) as read, \
            ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
        for img in pool.map(lambda photo: one(read, photo), [index.photos[r] for r in rows]):
            out.append(img)
            if progress and (len(out) % 64 == 0 or len(out) == len(rows)):
                progress(len(out), len(rows))
    return out
