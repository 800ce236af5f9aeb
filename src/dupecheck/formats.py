"""File types from their first bytes: Instagram's extensions lie."""

from __future__ import annotations

from typing import Literal

MediaType = Literal["image", "video", "subtitle", "other"]

SNIFF_BYTES = 64

IMAGE_FORMATS = ("jpeg", "png", "gif", "webp", "heif", "avif", "bmp", "tiff")

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_VIDEO_BRANDS = {
    b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash",
    b"qt  ", b"M4V ", b"3gp4", b"3gp5", b"3g2a", b"MSNV", b"f4v ",
}


def sniff(head: bytes) -> str | None:
    """The format of a file from its first bytes, or None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(len(head), 48), 4)}
        major = head[8:12]
        if major in _AVIF_BRANDS:
            return "avif"
        if major in _HEIF_BRANDS:
            return "heif"
        if major in _VIDEO_BRANDS:
            return "mp4"
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def media_type(head: bytes, name: str) -> MediaType:
    """Whether a file is a photo, a video, a subtitle, or something else."""
    fmt = sniff(head)
    if fmt in IMAGE_FORMATS:
        return "image"
    if fmt in ("mp4", "webm"):
        return "video"
    if name.lower().endswith(".srt"):
        return "subtitle"
    return "other"
