"""The container walk before any decoder: small files that ask for far more work than a
photo are refused in milliseconds, naming the file; real photos pass untouched."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from dupecheck import screening
from dupecheck.errors import ImageError
from dupecheck.formats import sniff
from dupecheck.imaging import decode
from helpers import (
    gif_with_comment_blocks,
    jpeg_bytes,
    png_with_chunk,
    progressive_jpeg_bomb,
    rle8_bmp_bomb,
    synthetic_photo,
)

HOSTILE = {  # what each looked like before: measured here, Pillow 12 on a 2-core EPYC
    "progressive JPEG, 8,000 scans of 7000 px (39 s)": lambda: progressive_jpeg_bomb(),
    "RLE8 BMP, one pixel a row, 7000 rows (18 s)": lambda: rle8_bmp_bomb(),
    "PNG with a 60 MB eXIf chunk": lambda: png_with_chunk(b"eXIf", 60_000_000),
    "GIF with 30 million comment sub-blocks": lambda: gif_with_comment_blocks(30_000_000),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_file_asking_for_more_than_a_photo_is_refused_at_once_naming_it(kind):
    data = HOSTILE[kind]()
    start = time.perf_counter()
    with pytest.raises(ImageError) as caught:
        decode(data, "upload.bin")
    assert time.perf_counter() - start < 2.0  # the walk alone, never the decoder
    assert "upload.bin" in str(caught.value) and "\n" not in str(caught.value)


def test_each_limit_is_where_it_says():
    """One under each limit passes the walk; one over it is refused."""
    jpeg_ok, jpeg_over = (progressive_jpeg_bomb(32, n) for n in (
        screening.MAX_JPEG_SCANS - 6, screening.MAX_JPEG_SCANS - 5))  # Pillow writes 6 scans
    side = int(screening.MAX_RLE_BMP_PIXELS ** 0.5)
    cases = [
        (jpeg_ok, jpeg_over),
        (rle8_bmp_bomb(side, side), rle8_bmp_bomb(side + 1, side + 1)),
        (png_with_chunk(b"eXIf", screening.MAX_SIDE_CHUNK_BYTES),
         png_with_chunk(b"eXIf", screening.MAX_SIDE_CHUNK_BYTES + 1)),
        (gif_with_comment_blocks(screening.MAX_GIF_SUB_BLOCKS - 3),
         gif_with_comment_blocks(screening.MAX_GIF_SUB_BLOCKS)),
    ]
    for ok, over in cases:
        fmt = sniff(ok[:64])
        screening.screen(ok, fmt, "ok")
        with pytest.raises(ImageError):
            screening.screen(over, fmt, "over")


def test_metadata_chunks_together_have_a_limit():
    png = png_with_chunk(b"tEXt", screening.MAX_SIDE_CHUNK_BYTES)
    ihdr_end = 33
    chunk = png[ihdr_end:ihdr_end + 12 + screening.MAX_SIDE_CHUNK_BYTES]
    many = png[:ihdr_end] + chunk * 4 + png[ihdr_end:]  # 4 x 4 MB + the one: over 16 MB
    with pytest.raises(ImageError, match="MB of PNG metadata"):
        screening.screen(many, "png", "many")


def test_a_gif_comment_larger_than_the_side_data_limit_is_refused():
    big = b"\x21\xfe" + (b"\xff" + b"c" * 255) * (screening.MAX_SIDE_BYTES // 255 + 1) + b"\x00"
    gif = gif_with_comment_blocks(1)
    after = 13 + (3 << ((gif[10] & 7) + 1))
    with pytest.raises(ImageError, match="GIF extensions"):
        screening.screen(gif[:after] + big + gif[after:], "gif", "big")


def test_every_real_photo_passes_the_walk(real_photos: Path):
    """The test set (cameras, phones, progressive and baseline JPEGs, PNG, GIF, BMP...)
    and the hostile files' honest twins all decode as before."""
    from helpers import SHARED_PHOTOS

    seen = set()
    folders = [real_photos] + ([SHARED_PHOTOS] if SHARED_PHOTOS.is_dir() else [])
    for path in sorted(p for folder in folders for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        fmt = sniff(data[:64])
        screening.screen(data, fmt, path.name)
        seen.add(fmt)
    assert {"jpeg", "heif"} <= seen, seen
    progressive = io.BytesIO()
    synthetic_photo(5, (1200, 900)).save(progressive, "JPEG", progressive=True)
    for data in (progressive.getvalue(), jpeg_bytes(synthetic_photo(6)),
                 rle8_bmp_bomb(300, 200), png_with_chunk(b"eXIf", 60_000),
                 gif_with_comment_blocks(1000)):
        assert decode(data, "fine").image.size[0] > 0
    assert Image.open(io.BytesIO(rle8_bmp_bomb(300, 200))).info["compression"] == 1
