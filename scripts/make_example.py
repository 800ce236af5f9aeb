"""Build the small example export shipped in examples/ from a few of ../shared/data/photos.

    python scripts/make_example.py [--shared ../shared/data/photos]

The export is what Instagram's "Download your information" gives (layout D, one zip
with a wrapper folder): photos posted as Instagram posts them (upright, 4:5 crop when
taller, 1080 px wide, re-encoded, EXIF stripped). The candidates are what a person
would check before posting: a camera original of a posted photo (stored sideways with
an EXIF Orientation tag), a re-edit of another posted photo, a re-framed (cropped,
straightened, black and white) re-edit of a third, and one never posted.
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parents[1]
POSTED = [  # (source file, caption, kind)
    ("jpg__Canon_EOS_20D_(1).jpg", "Passion flower in the garden \U0001f338", "post"),
    ("jpg__Apple_iPhone_4S.jpg", "Weekend walk", "carousel"),
    ("jpg__Canon_EOS_30D_(4).jpg", "Weekend walk", "carousel"),
    ("jpg__Olympus_E-10.jpg", "", "story"),
]
ORIGINAL = "jpg__Apple_iPhone_4S.jpg"  # checked as its camera original: EXIF orientation 6
REEDITED = "jpg__Canon_EOS_20D_(1).jpg"  # checked as a brighter, warmer re-edit
NEVER_POSTED = "jpg__Nikon_D100.jpg"
RECROPPED = "jpg__Canon_EOS_30D_(4).jpg"  # checked as an off-centre, straightened B&W re-edit


def as_instagram_posts_it(data: bytes) -> bytes:
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    if h > w * 5 / 4:
        new_h = round(w * 5 / 4)
        img = img.crop((0, (h - new_h) // 2, w, (h - new_h) // 2 + new_h))
    if img.width > 1080:
        img = img.resize((1080, round(img.height * 1080 / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=82, progressive=True)
    return buf.getvalue()


def smaller_keeping_exif(data: bytes, long_side: int) -> bytes:
    """A smaller camera file: stored pixels and EXIF (Orientation too) kept as they were."""
    img = Image.open(io.BytesIO(data))
    exif = img.getexif()
    img = img.convert("RGB")
    img.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88, exif=exif.tobytes())
    return buf.getvalue()


def reedit(data: bytes) -> bytes:
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    img.thumbnail((1400, 1400), Image.Resampling.LANCZOS)
    img = ImageEnhance.Brightness(img).enhance(1.12)
    img = ImageEnhance.Color(img).enhance(1.25)
    r, g, b = img.split()
    img = Image.merge("RGB", (r.point(lambda v: min(255, v + 8)), g, b.point(lambda v: v * 0.94)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def recrop(data: bytes) -> bytes:
    """The same exposure edited again: straightened 3 degrees, cropped off-centre to about
    two thirds of each side, black and white. PDQ and the embedding's crops miss this."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    img = img.rotate(3.0, Image.Resampling.BICUBIC)
    img = img.crop((int(w * 0.30), int(h * 0.22), int(w * 0.95), int(h * 0.90)))
    img = ImageEnhance.Contrast(img.convert("L")).enhance(1.2).convert("RGB")
    img.thumbnail((1200, 1200), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=86)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--out", type=Path, default=REPO / "examples")
    args = parser.parse_args()
    src = args.shared
    wrapper = "instagram-jane.doe-2025-10-29-UXHp/"
    meta = wrapper + "your_instagram_activity/media/"
    files: dict[str, bytes] = {}
    posts: list[dict] = []
    stories: list[dict] = []
    carousel: list[dict] = []
    for n, (name, caption, kind) in enumerate(POSTED):
        stamp = 1700000000 + n * 86400 * 30
        folder = "stories" if kind == "story" else "posts"
        uri = f"media/{folder}/2023{11 + n // 2:02d}/{1000 + n}_n_{n}.jpg"
        files[wrapper + uri] = as_instagram_posts_it((src / name).read_bytes())
        # Instagram writes non-ASCII as one \u00XX escape per UTF-8 byte.
        title = caption.encode("utf-8").decode("latin-1")
        if kind == "post":
            posts.append({"media": [{"uri": uri, "creation_timestamp": stamp, "title": title}]})
        elif kind == "carousel":
            carousel.append({"uri": uri, "creation_timestamp": stamp, "title": ""})
            last_title, last_stamp = title, stamp + 60
        else:
            stories.append({"uri": uri, "creation_timestamp": stamp, "title": title})
    posts.append({"media": carousel, "title": last_title, "creation_timestamp": last_stamp})
    files[meta + "posts_1.json"] = json.dumps(posts, indent=1).encode()
    files[meta + "stories.json"] = json.dumps({"ig_stories": stories}, indent=1).encode()
    args.out.mkdir(parents=True, exist_ok=True)
    archive = args.out / "instagram-jane.doe-2025-10-29-UXHp.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            zf.writestr(name, files[name])
    cands = args.out / "candidates"
    cands.mkdir(exist_ok=True)
    (cands / "IMG_0412.jpg").write_bytes(smaller_keeping_exif((src / ORIGINAL).read_bytes(), 1400))
    (cands / "flower-reedit.jpg").write_bytes(reedit((src / REEDITED).read_bytes()))
    (cands / "walk-recropped.jpg").write_bytes(recrop((src / RECROPPED).read_bytes()))
    (cands / "never-posted.jpg").write_bytes(
        smaller_keeping_exif((src / NEVER_POSTED).read_bytes(), 1200))
    print(f"wrote {archive} and {cands}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
