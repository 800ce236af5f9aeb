"""Decode photos: bytes -> upright RGB, Instagram's crops, model input tensors.

Every decoded image is upright (EXIF orientation applied first) and RGB (CMYK,
palette, 16-bit and alpha composited on white all end the same way), so that a
phone's original and Instagram's re-encoded copy meet on equal terms.
"""

from __future__ import annotations

import datetime
import io
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from .errors import ImageError
from .formats import IMAGE_FORMATS, sniff
from .screening import screen

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where it is used: a photo can start decoding before numpy is loaded
# (decode_ahead).

# Larger than any camera (a 100 MP sensor is 11648 x 8736); a bomb declares more.
MAX_PIXELS = 120_000_000
MAX_PHOTO_BYTES = 256 * 1024 * 1024  # a photo file larger than this is not read

# Instagram shows photos between 4:5 and 1.91:1 (width:height); 1:1 is common.
CROP_VARIANTS: tuple[tuple[str, float], ...] = (("4:5", 4 / 5), ("1:1", 1.0), ("1.91:1", 1.91))
FULL_FRAME = "full"
# A crop that changes a side by less than this is the full frame again.
MIN_CROP_CHANGE = 0.02

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_OFFSET_TIME_ORIGINAL = 36881

_openers_registered = False


def _register_openers(heif: bool = True) -> None:
    """Pillow's pixel limit always; pillow-heif (~20 ms to import) only once a HEIF or AVIF
    photo needs it, so a JPEG's cold check does not pay for it."""
    global _openers_registered
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    if heif and not _openers_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        _openers_registered = True


@dataclass
class DecodedPhoto:
    """An upright RGB photo and the camera time from its EXIF, if any."""

    image: Image.Image
    taken_at: str | None


# The draft a checked JPEG decodes at with every model registered (ModelSpec.draft_size:
# twice an input of <= 256 px, or PDQ's 512): the head start decodes a JPEG at it.
CHECK_DRAFT = 512


class _DecodingAhead:
    """One photo being read and decoded in a thread, for a later `decode` of its bytes."""

    def __init__(self, path: Path, draft: int | None) -> None:
        self.data: bytes | None = None
        self.draft = draft
        self.result: DecodedPhoto | ImageError | None = None
        self._thread = threading.Thread(target=self._run, args=(path,),
                                        name="dupecheck-decode-ahead")
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            if path.stat().st_size > MAX_PHOTO_BYTES:
                return
            self.data = path.read_bytes()
            self.result = _decode_upright(self.data, str(path), self.draft)
        except ImageError as exc:
            self.result = exc
        except Exception:  # noqa: BLE001 - unreadable now: the real read reports it
            self.data = None

    def take(self, data: bytes, draft: int | None) -> DecodedPhoto | None:
        """The upright photo, when it was decoded from these very bytes as `decode` would
        decode them now (at the same draft)."""
        self._thread.join()
        if self.data is None or self.data != data:
            return None
        if isinstance(self.result, ImageError):
            raise self.result
        if self.result is None or draft != self.draft:
            return None
        return self.result


_ahead: dict[str, _DecodingAhead] = {}


def decode_ahead(paths: list[Path]) -> None:
    """Start decoding photos that `decode` will soon be asked for. A cold `check` spends
    its first ~0.3 s importing modules on one core while the other idles, and pillow-heif
    lets go of the GIL while it decodes (a 12 MP phone HEIC: 0.3-0.5 s), so the photo is
    ready by the time it is needed. A JPEG (Pillow lets go of the GIL too) decodes at
    CHECK_DRAFT, the draft `check` asks for, and any other format is reduced to it. Only
    a head start: `decode` takes the result only for the same bytes and the same draft,
    and does exactly what it would have done after decoding."""
    for path in paths:
        try:
            with path.open("rb") as fh:
                fmt = sniff(fh.read(64))
            if fmt not in IMAGE_FORMATS:
                continue
        except OSError:
            continue  # the real read reports it
        _ahead[str(path)] = _DecodingAhead(path, CHECK_DRAFT)


def decode(data: bytes, name: str, draft: int | None = None,
           max_pixels: int = MAX_PIXELS) -> DecodedPhoto:
    """Decode a photo; `draft` lets it come out reduced, never below draft x draft (JPEGs
    decode reduced; other formats are reduced by a whole factor right after decoding,
    before their pixels are widened to RGB). `max_pixels` may lower the pixel limit.

    Raises ImageError naming the file and the reason.
    """
    ahead = _ahead.pop(name, None) if _ahead and max_pixels == MAX_PIXELS else None
    taken = ahead.take(data, draft) if ahead is not None else None
    return taken if taken is not None else _decode_upright(data, name, draft, max_pixels)


def _decode_upright(data: bytes, name: str, draft: int | None,
                    max_pixels: int = MAX_PIXELS) -> DecodedPhoto:
    """Upright RGB, at `draft` where given (a JPEG decodes reduced, the others are reduced
    before they become RGB)."""
    fmt = sniff(data[:64])
    _register_openers(heif=fmt in ("heif", "avif"))
    if not data:
        raise ImageError("empty file", name)
    if fmt not in IMAGE_FORMATS:
        kind = f"a {fmt} video" if fmt in ("mp4", "webm") else "an unknown format"
        raise ImageError(f"not a photo ({kind})", name)
    screen(data, fmt, name)  # a container that asks for more work than a photo needs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        width, height = img.size
        limit = min(max_pixels, MAX_PIXELS)
        if width * height > limit:
            raise ImageError(f"{width} x {height} pixels, over the {limit}-pixel limit", name)
        if width < 1 or height < 1:
            raise ImageError("image has no pixels", name)
        jpeg_draft = bool(draft) and img.format == "JPEG"
        if jpeg_draft:
            img.draft("RGB", (draft, draft))
        taken_at = _exif_taken_at(img)
        try:
            upright = ImageOps.exif_transpose(img)
        except Exception:  # absurd EXIF: keep the pixels as stored
            upright = img
        upright = upright if upright is not None else img
        upright.load()
        return DecodedPhoto(to_rgb(upright, None if jpeg_draft else draft), taken_at)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"decompression bomb refused ({exc})", name) from exc
    except Exception as exc:  # Pillow raises many types for broken files
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, Image.UnidentifiedImageError):
            reason = "truncated or damaged"  # Pillow's own words name its buffer object
        raise ImageError(f"cannot decode {fmt} ({reason})", name) from exc


def reduce_to(img: Image.Image, size: int) -> Image.Image:
    """What a JPEG's draft does for formats that have none (HEIC, PNG, WebP): shrink by a
    whole factor, once, keeping both sides >= size, before any other work touches the
    pixels (a 12 MP phone photo is then resized once, not once per crop variant)."""
    factor = min(img.size) // size
    return img.reduce(factor) if factor >= 2 else img


def _exif_taken_at(img: Image.Image) -> str | None:
    """EXIF DateTimeOriginal as ISO 8601 (camera local time, with offset when recorded)."""
    try:
        ifd = img.getexif().get_ifd(_EXIF_IFD)
        raw = ifd.get(_DATETIME_ORIGINAL)
        if not isinstance(raw, str):
            return None
        date, _, time = raw.strip("\x00 ").partition(" ")
        iso = date.replace(":", "-") + "T" + time
        if len(iso) != 19 or iso.startswith("0000"):
            return None
        offset = ifd.get(_OFFSET_TIME_ORIGINAL)
        if isinstance(offset, str) and len(offset.strip("\x00 ")) == 6:
            iso += offset.strip("\x00 ")
        datetime.datetime.fromisoformat(iso)  # a date, or ValueError: never other text
        return iso
    except Exception:
        return None


def to_rgb(img: Image.Image, draft: int | None = None) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited on white. With `draft`,
    reduced as `reduce_to` does at the cheapest point: after the samples are 8-bit, before
    they are widened to three channels. Memory stays near the decoded frame's own: 16-bit
    and float frames are narrowed strip by strip, never as a float64 copy."""
    def shrink(im: Image.Image) -> Image.Image:
        return reduce_to(im, draft) if draft else im

    mode = img.mode
    if mode == "RGB":
        return shrink(img)
    if mode in ("I", "F") or mode.startswith("I;16"):
        return shrink(_grey8(img)).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in img.info
    ) or (mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba)  # its alpha band, in place (no 1-byte-a-pixel copy)
        return shrink(flat)
    if mode == "L":
        return shrink(img).convert("RGB")
    return shrink(img.convert("RGB"))


GREY_STRIP_PIXELS = 1 << 22  # 16-bit and float frames are narrowed this much at a time


def _grey8(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float frame -> 8-bit grey ("L"), one strip at a time:
    16-bit samples / 257 rounded (in integers), floats in [0, 1] scaled by 255."""
    import numpy as np

    width, height = img.size
    _, peak = img.getextrema()
    sixteen = img.mode.startswith("I;16") or (img.mode == "I" and peak > 255)
    scale = 255.0 if img.mode == "F" and peak <= 1.0 else 1.0
    out = np.empty((height, width), dtype=np.uint8)
    step = max(1, GREY_STRIP_PIXELS // width)
    for top in range(0, height, step):
        strip = np.asarray(img.crop((0, top, width, min(height, top + step))))
        if sixteen:
            wide = np.clip(strip, 0, 65535).astype(np.uint32)
            out[top:top + step] = (wide + 128) // 257
        elif img.mode == "F":
            out[top:top + step] = np.clip(strip * scale + 0.5, 0, 255).astype(np.uint8)
        else:
            out[top:top + step] = np.clip(strip, 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def centre_crop_to_aspect(img: Image.Image, aspect: float) -> Image.Image:
    """The largest centred crop with width / height == aspect."""
    width, height = img.size
    if width / height > aspect:
        new_w = max(1, round(height * aspect))
        left = (width - new_w) // 2
        return img.crop((left, 0, left + new_w, height))
    new_h = max(1, round(width / aspect))
    top = (height - new_h) // 2
    return img.crop((0, top, width, top + new_h))


def crop_variants(img: Image.Image) -> list[tuple[str, Image.Image]]:
    """The full frame and each distinct centre crop Instagram could have posted."""
    variants = [(FULL_FRAME, img)]
    width, height = img.size
    for name, aspect in CROP_VARIANTS:
        crop = centre_crop_to_aspect(img, aspect)
        cw, ch = crop.size
        if 1 - (cw * ch) / (width * height) >= MIN_CROP_CHANGE:
            variants.append((name, crop))
    return variants


def model_views(variants: list[tuple[str, Image.Image]]) -> list[int]:
    """Per variant, the first variant the model sees alike. The models see a centre square
    of the shorter side, so a centred crop that keeps the whole shorter side (a portrait's
    4:5 and 1:1, a landscape's 1:1) shows them the full frame's square again, to within the
    resampling's half pixel: it need not be embedded twice."""
    shorter = [min(img.size) for _, img in variants]
    return [shorter.index(side) if side == shorter[0] else i for i, side in enumerate(shorter)]


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """torchvision's Resize(int) on a PIL image: the same size rule, PIL's antialiased bilinear."""
    width, height = img.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return img
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def centre_crop(img: Image.Image, size: int) -> Image.Image:
    """torchvision's CenterCrop rounding, for images at least size x size."""
    width, height = img.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def to_model_input(
    img: Image.Image,
    resize: int,
    crop: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> np.ndarray:
    """An upright RGB image -> a (3, crop, crop) float32 array, as the model was trained."""
    import numpy as np

    pixels = centre_crop(resize_shorter_side(img, resize), crop)
    arr = np.asarray(pixels, dtype=np.float32) * (1 / 255.0)
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
