"""A photo's container, walked before any decoder sees it: what a decoder would spend time
or memory on before (or instead of) pixels is bounded here.

A decoder's cost follows its pixels (capped by imaging.MAX_PIXELS and the service's lower
limit) except where a format lets a small file ask for repeated work or large side data:
a progressive JPEG's scans (each one passes over every coefficient: 8,000 empty scans of
7000 x 7000 took 39 s), an RLE-compressed BMP (Pillow's RLE decoder is Python, 0.28 us a
pixel however few bytes ask for them), a PNG's ancillary chunks (an eXIf chunk is read
whole), a GIF's extension sub-blocks (Pillow joins a comment's sub-blocks one by one).
Each is counted here, in one pass over the bytes, and refused over its limit with an
ImageError naming the file, as any unreadable photo is. Real photos are far inside every
limit (a progressive JPEG has 3-12 scans; Instagram's and phones' metadata is kilobytes).
"""

from __future__ import annotations

import struct

from .errors import ImageError

MAX_JPEG_SCANS = 24  # at 50 MP each scan costs ~45 ms: the worst file allowed ~1 s more
MAX_JPEG_SEGMENTS = 4096  # markers before the image ends
MAX_RLE_BMP_PIXELS = 2_000_000  # Pillow's Python RLE decoder: ~0.6 s at the limit
MAX_SIDE_CHUNK_BYTES = 4 * 1024 * 1024  # one PNG chunk besides the image data (eXIf, iCCP)
MAX_SIDE_BYTES = 16 * 1024 * 1024  # all of them together, and a GIF's extensions
MAX_PNG_CHUNKS = 200_000  # a 64 MB PNG of 8 KB IDAT chunks has 8,000
MAX_GIF_SUB_BLOCKS = 1_000_000  # sub-blocks before the first frame's pixels end

PNG_IMAGE_CHUNKS = (b"IDAT", b"fdAT")


def screen(data: bytes, fmt: str | None, name: object) -> None:
    """Refuse (ImageError) a file whose container asks a decoder for more than a photo
    needs; return quietly otherwise, or when the format has nothing to count."""
    check = _SCREENS.get(fmt or "")
    if check is not None:
        reason = check(data)
        if reason:
            raise ImageError(reason, name)


def _jpeg(data: bytes) -> str | None:
    pos, scans, segments, end = 2, 0, 0, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None  # not a marker where one should be: the decoder says what is wrong
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            return None
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            return f"over {MAX_JPEG_SEGMENTS} JPEG segments, more than a photo has"
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        pos += 2 + length
        if marker != 0xDA:
            continue
        scans += 1
        if scans > MAX_JPEG_SCANS:
            return (f"a progressive JPEG of over {MAX_JPEG_SCANS} scans (a photo has at most "
                    f"a dozen; each one is another pass over every pixel)")
        while True:  # the scan's entropy-coded data runs to the next marker but RST/stuffing
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= end:
                return None
            following = data[pos + 1]
            if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
                pos += 1 if following == 0xFF else 2
                continue
            break
    return None


def _bmp(data: bytes) -> str | None:
    if len(data) < 34:
        return None
    header_size = struct.unpack_from("<I", data, 14)[0]
    if header_size < 40:
        return None  # OS/2 headers have no compression field
    width, height = struct.unpack_from("<ii", data, 18)
    compression = struct.unpack_from("<I", data, 30)[0]
    pixels = abs(width) * abs(height)
    if compression in (1, 2) and pixels > MAX_RLE_BMP_PIXELS:
        return (f"an RLE-compressed BMP of {pixels:,} pixels (this format is decoded up to "
                f"{MAX_RLE_BMP_PIXELS:,})")
    return None


def _png(data: bytes) -> str | None:
    pos, chunks, side, end = 8, 0, 0, len(data)
    while pos + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            return f"over {MAX_PNG_CHUNKS} PNG chunks, more than a photo has"
        if kind not in PNG_IMAGE_CHUNKS:
            label = kind.decode("latin-1", "replace")
            if not label.isalnum():
                label = repr(kind)[1:]
            if length > MAX_SIDE_CHUNK_BYTES:
                return (f"a {length}-byte PNG {label} chunk, over the "
                        f"{MAX_SIDE_CHUNK_BYTES // (1024 * 1024)} MB allowed for metadata")
            side += length
            if side > MAX_SIDE_BYTES:
                return (f"over {MAX_SIDE_BYTES // (1024 * 1024)} MB of PNG metadata chunks")
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def _gif(data: bytes) -> str | None:
    end = len(data)
    if end < 13:
        return None
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks, side = 0, 0
    while pos < end:
        introducer = data[pos]
        if introducer == 0x3B:  # trailer
            return None
        if introducer == 0x21:  # extension: label, then sub-blocks
            pos += 2
            image = False
        elif introducer == 0x2C:  # image descriptor, local colour table, LZW code size
            if pos + 10 > end:
                return None
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            image = True
        else:
            return None  # the decoder says what is wrong
        while pos < end:
            size = data[pos]
            pos += 1 + size
            blocks += 1
            if blocks > MAX_GIF_SUB_BLOCKS:
                return f"over {MAX_GIF_SUB_BLOCKS} GIF sub-blocks before its first frame ends"
            if size == 0:
                break
            if not image:
                side += size
                if side > MAX_SIDE_BYTES:
                    return (f"over {MAX_SIDE_BYTES // (1024 * 1024)} MB of GIF extensions "
                            f"(comments, application data)")
        if image:
            return None  # the first frame is what is decoded
    return None


_SCREENS = {"jpeg": _jpeg, "bmp": _bmp, "png": _png, "gif": _gif}
