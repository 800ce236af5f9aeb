"""imaging.py: every format and mode ends as upright RGB; crops; model input."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from dupecheck.errors import ImageError
from dupecheck.evidence import PDQ_MATCH_DISTANCE, pdq_distances, pdq_hash
from dupecheck.formats import media_type, sniff
from dupecheck.imaging import (
    FULL_FRAME,
    centre_crop_to_aspect,
    crop_variants,
    decode,
    model_views,
    to_model_input,
)
from helpers import encode, jpeg_bytes, png_declaring, synthetic_photo


def mean_rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64).reshape(-1, 3).mean(axis=0)


@pytest.fixture
def photo() -> Image.Image:
    return synthetic_photo(11, (320, 240))


@pytest.mark.parametrize("fmt,kw", [
    ("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"quality": 95}), ("GIF", {}),
    ("HEIF", {"quality": 95}), ("AVIF", {"quality": 95}), ("TIFF", {}), ("BMP", {}),
])
def test_every_format_decodes_to_the_same_rgb(photo, fmt, kw):
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    decoded = decode(encode(photo, fmt, **kw), f"x.{fmt.lower()}")
    assert decoded.image.mode == "RGB" and decoded.image.size == photo.size
    tolerance = 12 if fmt == "GIF" else 4  # GIF is palette-quantised
    assert np.abs(mean_rgb(decoded.image) - mean_rgb(photo)).max() < tolerance
    if fmt != "GIF":  # dithering to 256 colours moves PDQ bits on smooth gradients
        assert pdq_distances(pdq_hash(photo)[None], pdq_hash(decoded.image))[0] <= 24


def test_gif_and_webp_animations_take_the_first_frame(photo):
    other = synthetic_photo(12, photo.size)
    for fmt in ("GIF", "WEBP"):
        data = encode(photo, fmt, save_all=True, append_images=[other], duration=100)
        decoded = decode(data, f"anim.{fmt.lower()}").image
        got = np.asarray(decoded, np.float64)
        to_first = np.abs(got - np.asarray(photo, np.float64)).mean()
        to_second = np.abs(got - np.asarray(other, np.float64)).mean()
        assert to_first < 10 < to_second, fmt


def test_cmyk_jpeg_becomes_rgb(photo):
    decoded = decode(jpeg_bytes(photo.convert("CMYK"), quality=95), "cmyk.jpg").image
    assert decoded.mode == "RGB"
    assert np.abs(mean_rgb(decoded) - mean_rgb(photo)).max() < 6


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (40, 40), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 0, 20, 40))  # left half red, right half "transparent black"
    data = encode(img, "PNG", transparency=0)
    decoded = decode(data, "p.png").image
    assert decoded.getpixel((5, 5)) == (255, 0, 0)
    assert decoded.getpixel((35, 5)) == (255, 255, 255)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (0, 0, 255, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    decoded = decode(encode(rgba, "PNG"), "a.png").image
    assert decoded.getpixel((0, 0)) == (0, 0, 255)
    assert decoded.getpixel((5, 5)) == (255, 255, 255)
    la = Image.new("LA", (4, 4), (0, 0))
    assert decode(encode(la, "PNG"), "la.png").image.getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_png_keeps_its_tones():
    ramp = (np.arange(64, dtype=np.uint16)[None, :].repeat(8, 0) * 1024)  # 0..64512
    img = Image.fromarray(ramp)  # mode I;16
    decoded = decode(encode(img, "PNG"), "16.png").image
    row = np.asarray(decoded)[0, :, 0]
    assert decoded.mode == "RGB"
    assert row[0] == 0 and 248 <= row[-1] <= 252  # scaled, not clipped to white
    assert np.all(np.diff(row.astype(int)) >= 0)


def test_grayscale_and_one_bit_become_rgb(photo):
    for mode in ("L", "1"):
        decoded = decode(encode(photo.convert(mode), "PNG"), f"{mode}.png").image
        assert decoded.mode == "RGB"


def test_jpeg_draft_decodes_smaller_but_never_below_the_request():
    big = synthetic_photo(3, (2400, 1800))
    full = decode(jpeg_bytes(big), "big.jpg").image
    small = decode(jpeg_bytes(big), "big.jpg", draft=448).image
    assert full.size == (2400, 1800)
    assert small.size[0] < 2400 and min(small.size) >= 448
    assert pdq_distances(pdq_hash(full)[None], pdq_hash(small))[0] <= 8


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to show
    stored = photo.transpose(Image.Transpose.ROTATE_90)
    decoded = decode(jpeg_bytes(stored, quality=95, exif=exif), "r.jpg").image
    assert decoded.size == photo.size
    assert pdq_distances(pdq_hash(photo)[None], pdq_hash(decoded))[0] <= 16


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_absurd_orientation_is_ignored(photo, value):
    exif = Image.Exif()
    exif[0x0112] = value
    decoded = decode(jpeg_bytes(photo, exif=exif), "o.jpg").image
    assert decoded.size == photo.size


def test_exif_date_time_original(photo):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2022:07:17 09:33:32"
    assert decode(jpeg_bytes(photo, exif=exif), "d.jpg").taken_at == "2022-07-17T09:33:32"
    assert decode(jpeg_bytes(photo), "n.jpg").taken_at is None


def test_orientation_set_hashes_alike_once_upright(orientation_dir):
    """The eight EXIF orientations of one photo meet within PDQ's threshold once upright."""
    for group in ("landscape", "portrait"):
        files = [orientation_dir / f"{group}_{n}.jpg" for n in range(1, 9)]
        upright = [pdq_hash(decode(f.read_bytes(), f.name).image) for f in files]
        raw = [pdq_hash(Image.open(f).convert("RGB")) for f in files]
        for a, b in itertools.combinations(range(8), 2):
            assert pdq_distances(upright[a][None], upright[b])[0] <= PDQ_MATCH_DISTANCE
        # Without the EXIF transpose they are far apart: the test has teeth.
        far = [pdq_distances(raw[0][None], raw[n])[0] for n in range(1, 8)]
        assert max(far) > 100


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40, "not a photo (a mp4 video)"),
    (bytes(range(256)) * 4, "not a photo (an unknown format)"),
])
def test_non_photos_are_refused_with_a_reason(data, reason):
    with pytest.raises(ImageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode(data, "bad.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_truncated_files_are_refused(photo, fmt):
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    data = encode(photo, fmt)
    with pytest.raises(ImageError) as info:
        decode(data[: len(data) // 2], f"cut.{fmt.lower()}")
    assert info.value.path == f"cut.{fmt.lower()}"


def test_decompression_bomb_is_refused():
    data = png_declaring(40000, 40000)
    assert len(data) < 1000
    with pytest.raises(ImageError) as info:
        decode(data, "innocent.png")
    assert info.value.path == "innocent.png"
    assert info.value.reason.startswith("decompression bomb refused")  # Pillow's, at open


def test_a_lower_pixel_limit_refuses_before_decoding():
    data = png_declaring(8000, 7000)  # 56 MP: under the CLI's limit, over 50 MP
    with pytest.raises(ImageError) as info:
        decode(data, "phone.png", max_pixels=50_000_000)
    assert "over the 50000000-pixel limit" in info.value.reason
    with pytest.raises(ImageError) as info:
        decode(data, "phone.png")  # the CLI's limit: only its (empty) data is wrong
    assert "limit" not in info.value.reason


_PEAK_MEMORY = """
import resource, sys
from pathlib import Path
from dupecheck.imaging import decode
data = Path(sys.argv[1]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
photo = decode(data, "deep.png", draft=int(sys.argv[2]) or None)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown * 1024, *photo.image.size, *(photo.image.getpixel((x, 0))[0] for x in (0, 1)))
"""


@pytest.mark.parametrize("draft", [0, 512])
def test_a_16_bit_frame_decodes_without_a_float64_copy(tmp_path, draft):
    """A 16-bit greyscale PNG compresses ~500:1: 36 MP in 70 KB. Its decode may take the
    frame itself (2 bytes a pixel) and an 8-bit copy, not float64 copies of it (it took
    25 bytes a pixel: 3.2 GB for the 119 MP one in #26)."""
    import subprocess
    import sys

    side = 6000
    frame = np.zeros((side, side), np.uint16)
    frame[::7] = 60000
    frame[0, :2] = (65406, 65407)  # / 257 = 254.498 and 254.502: rounded to 254 and 255
    path = tmp_path / "deep.png"
    Image.fromarray(frame).save(path)
    del frame
    out = subprocess.run([sys.executable, "-c", _PEAK_MEMORY, str(path), str(draft)],
                         capture_output=True, text=True, check=True).stdout.split()
    grown, width, height, first, second = (int(x) for x in out)
    assert (width, height) == ((side, side) if not draft else (546, 546))  # 6000 / 11
    assert draft or (first, second) == (254, 255)
    assert grown < 8 * side * side, f"{grown / side / side:.1f} bytes a pixel"


def test_images_between_our_limit_and_pillows_are_refused_by_ours():
    """120 MP is our limit; Pillow's own bomb error starts at 2 x 89.5 = 179 MP. A 132 MP
    header must be refused by ours, naming it; a 100 MP one must not be."""
    from dupecheck.imaging import MAX_PIXELS

    over = png_declaring(11_000, 12_000)  # 132 MP
    assert MAX_PIXELS < 11_000 * 12_000 < 2 * 89_478_485
    with pytest.raises(ImageError, match=f"over the {MAX_PIXELS}-pixel limit|bomb") as info:
        decode(over, "big.png")
    assert "120000000" in info.value.reason or "120,000,000" in info.value.reason \
        or str(MAX_PIXELS) in info.value.reason
    under = png_declaring(10_000, 10_000)  # 100 MP: allowed, and only its data is bad
    with pytest.raises(ImageError) as info:
        decode(under, "under.png")
    assert "limit" not in info.value.reason and "bomb" not in info.value.reason


def test_extreme_shapes_decode(photo):
    for size in ((1, 1), (10000, 10), (10, 10000)):
        img = Image.new("RGB", size, (10, 200, 30))
        decoded = decode(encode(img, "PNG"), "x.png").image
        assert decoded.size == size
        for _name, crop in crop_variants(decoded):
            arr = to_model_input(crop, 32, 32, (0.5,) * 3, (0.25,) * 3)
            assert arr.shape == (3, 32, 32) and np.isfinite(arr).all()


def test_crops_have_instagram_aspect_ratios(photo):
    portrait = synthetic_photo(5, (300, 400))
    names = {name: img.size for name, img in crop_variants(portrait)}
    assert names == {FULL_FRAME: (300, 400), "4:5": (300, 375), "1:1": (300, 300),
                     "1.91:1": (300, 157)}
    square = synthetic_photo(5, (400, 400))
    assert [n for n, _ in crop_variants(square)] == [FULL_FRAME, "4:5", "1.91:1"]
    assert centre_crop_to_aspect(portrait, 1.0).size == (300, 300)


def test_crops_that_keep_the_shorter_side_share_the_full_frames_model_view():
    """The models see a centre square of the shorter side: a portrait's 4:5 and 1:1 show
    them the full frame's square again (embedded once), its 1.91:1 does not; a landscape's
    4:5 narrows the shorter side."""
    portrait = crop_variants(synthetic_photo(5, (300, 400)))
    assert model_views(portrait) == [0, 0, 0, 3]
    landscape = crop_variants(synthetic_photo(5, (400, 300)))
    assert [n for n, _ in landscape] == [FULL_FRAME, "4:5", "1:1", "1.91:1"]
    assert model_views(landscape) == [0, 1, 0, 3]
    assert model_views(crop_variants(synthetic_photo(5, (400, 400)))) == [0, 1, 2]
    # The shared view is the same square to within resampling: the inputs agree closely,
    # while a view that differs (the 1.91:1 crop) does not.
    full = to_model_input(portrait[0][1], 232, 224, (0.5,) * 3, (0.25,) * 3)
    square = to_model_input(portrait[2][1], 232, 224, (0.5,) * 3, (0.25,) * 3)
    wide = to_model_input(portrait[3][1], 232, 224, (0.5,) * 3, (0.25,) * 3)
    assert np.abs(full - square).mean() < 0.2 * np.abs(full - wide).mean()


def test_sniff_ignores_extensions():
    assert sniff(b"\xff\xd8\xff\xe0") == "jpeg"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "heif"
    assert sniff(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1") == "avif"
    assert sniff(b"\x00\x00\x00\x18ftypdash\x00\x00\x00\x00iso6") == "mp4"
    assert media_type(b"\xff\xd8\xff\xe0", "x.webp") == "image"
    assert media_type(b"1\n00:00", "x.srt") == "subtitle"
    assert media_type(b"<html>", "x.jpg") == "other"


def test_model_input_matches_manual_computation(photo):
    arr = to_model_input(photo, 232, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert arr.shape == (3, 224, 224) and arr.dtype == np.float32
    resized = photo.resize((309, 232), Image.Resampling.BILINEAR)
    top, left = 4, 42
    ref = np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32) / 255
    ref = ((ref - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)
    assert np.abs(arr - ref).max() < 1e-5


def test_heic_from_a_phone_decodes(real_photos):
    data = (real_photos / "heic__IMG_2927.HEIC").read_bytes()
    full = decode(data, "IMG_2927.HEIC").image
    decoded = decode(data, "IMG_2927.HEIC", draft=512).image
    assert decoded.mode == "RGB" and full.size == (3024, 4032)
    # Reduced once, by a whole factor, never below the request; the same photo to PDQ.
    assert decoded.size == (-(-3024 // 5), -(-4032 // 5)) and min(decoded.size) >= 512
    assert pdq_distances(pdq_hash(full)[None], pdq_hash(decoded))[0] <= 8


def test_formats_without_a_draft_are_reduced_after_decoding():
    big = synthetic_photo(5, (2400, 1800))
    for fmt in ("PNG", "WEBP"):
        small = decode(encode(big, fmt), f"big.{fmt.lower()}", draft=448).image
        assert small.size == (2400 // 4, 1800 // 4)  # 1800 // 448 = 4
        assert pdq_distances(pdq_hash(big)[None], pdq_hash(small))[0] <= PDQ_MATCH_DISTANCE
    tiny = decode(encode(big.resize((600, 450)), "PNG"), "s.png", draft=448).image
    assert tiny.size == (600, 450)  # already small: untouched


def test_bytes_in_memory_only(photo):
    buf = io.BytesIO(jpeg_bytes(photo))
    assert decode(buf.getvalue(), "m.jpg").image.size == photo.size


def test_a_photo_decoded_ahead_is_the_photo_decode_returns_and_only_for_the_same_bytes(tmp_path):
    """`check` starts decoding the photos it names before its imports (decode_ahead): the
    result is used only for the very bytes `decode` is given, and is what `decode` would
    have returned; a JPEG is decoded at check's draft, and used only for that draft."""
    from dupecheck import imaging

    png, jpg, broken = tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"
    png.write_bytes(encode(synthetic_photo(3, (900, 700)), "PNG"))
    jpg.write_bytes(jpeg_bytes(synthetic_photo(4, (2400, 1800))))
    broken.write_bytes(encode(synthetic_photo(5, (90, 70)), "PNG")[:60])
    imaging.decode_ahead([png, jpg, broken, tmp_path / "missing.png"])
    assert set(imaging._ahead) == {str(png), str(jpg), str(broken)}
    jpg_ahead = imaging._ahead[str(jpg)]
    got = decode(jpg.read_bytes(), str(jpg), draft=imaging.CHECK_DRAFT)
    assert jpg_ahead.data is not None and got.image is jpg_ahead.result.image  # taken
    fresh = decode(jpg.read_bytes(), str(jpg), draft=imaging.CHECK_DRAFT)
    assert got.image.size == fresh.image.size == (1200, 900)  # JPEG's draft: 1/2
    assert np.array_equal(np.asarray(got.image), np.asarray(fresh.image))
    imaging.decode_ahead([jpg])  # another draft asked for: decoded again, at that draft
    jpg_ahead = imaging._ahead[str(jpg)]
    other = decode(jpg.read_bytes(), str(jpg), draft=256)
    assert other.image is not jpg_ahead.result.image and other.image.size == (600, 450)
    ahead = imaging._ahead[str(png)]
    got = decode(png.read_bytes(), str(png), draft=300)
    assert str(png) not in imaging._ahead and ahead.data is not None  # it was taken
    fresh = decode(png.read_bytes(), str(png), draft=300)
    assert got.image.size == fresh.image.size == (450, 350)  # reduced as decode reduces
    assert np.array_equal(np.asarray(got.image), np.asarray(fresh.image))
    with pytest.raises(ImageError) as ahead_error:
        decode(broken.read_bytes(), str(broken))
    with pytest.raises(ImageError) as own_error:
        decode(broken.read_bytes(), str(broken))
    assert str(ahead_error.value) == str(own_error.value)
    # The file changed after the head start: its new bytes are decoded, not the old ones.
    imaging.decode_ahead([png])
    imaging._ahead[str(png)]._thread.join()
    png.write_bytes(encode(synthetic_photo(6, (640, 480)), "PNG"))
    changed = decode(png.read_bytes(), str(png))
    assert changed.image.size == (640, 480)
    assert np.array_equal(np.asarray(changed.image), np.asarray(synthetic_photo(6, (640, 480))))


def test_the_head_start_decodes_a_jpeg_at_the_draft_every_model_checks_at():
    """Else a JPEG's head start would be thrown away for that model (and decoded again)."""
    from dupecheck.engines import MODELS
    from dupecheck.imaging import CHECK_DRAFT

    assert {spec.draft_size for spec in MODELS.values()} == {CHECK_DRAFT}


def test_a_damaged_photo_is_named_with_a_reason_a_person_can_read():
    """Pillow's UnidentifiedImageError names its buffer (`<_io.BytesIO object at 0x...>`):
    the one line says what is wrong instead."""
    broken = b"\x89PNG\r\n\x1a\n" + bytes(50)  # a PNG's signature, then nothing Pillow knows
    with pytest.raises(ImageError) as caught:
        decode(broken, "holiday.png")
    assert str(caught.value) == "holiday.png: cannot decode png (truncated or damaged)"
