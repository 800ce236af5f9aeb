"""Write tests/photos/: the compact set of real photos the test suite runs on.

    python scripts/make_test_photos.py [--shared ../shared/data]

From ../shared/data (SOURCES.md there says where each photo comes from): the photos the
tests name, and others spread evenly over the name order, 30 in all; JPEGs downscaled to 1280 px on
the long edge (EXIF kept: the Orientation tag still describes the stored pixels), the
phone HEIC as it is; and the orientation set unchanged. The whole is kept under 15 MB so
that a clone without ../shared still tests real photos; ../shared stays for benchmarks
and the larger held-back sets.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "photos"  # camera/ (the 30), orientation/ (the 16), ATTRIBUTION.md
LONG_EDGE = 1280
COUNT = 30
NAMED = (  # photos a test picks by name
    "heic__IMG_2927.HEIC", "jpg__Canon_EOS_30D_(4).jpg", "jpg__Nikon_D100.jpg",
    "jpg__Apple_iPhone_4S.jpg", "jpg__Olympus_E-10.jpg", "jpg__Kodak_DX6490.jpg",
    "jpg__Canon_EOS_20D_(1).jpg", "jpg__Panasonic_FZ5.jpg", "jpg__FujiFilm_DX-10.jpg",
    "jpg__Canon_PowerShot_A85.jpg", "jpg__Apple_iPhone_6.jpg")


def downscaled(path: Path) -> bytes:
    from PIL import Image

    img = Image.open(path)
    exif = img.info.get("exif")
    img = img.convert("RGB")
    img.thumbnail((LONG_EDGE, LONG_EDGE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **({"exif": exif} if exif else {}))
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    photos = args.shared / "photos"
    others = [p.name for p in sorted(photos.iterdir())
              if p.suffix.lower() == ".jpg" and p.name not in NAMED]
    wanted = COUNT - len(NAMED)
    chosen = list(NAMED) + [others[i * len(others) // wanted] for i in range(wanted)]
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "orientation").mkdir(parents=True)
    (OUT / "camera").mkdir()
    for name in chosen:
        src = photos / name
        data = downscaled(src) if src.suffix.lower() == ".jpg" else src.read_bytes()
        (OUT / "camera" / name).write_bytes(data)
    for src in sorted((args.shared / "orientation").iterdir()):
        shutil.copyfile(src, OUT / "orientation" / src.name)
    (OUT / "ATTRIBUTION.md").write_text(ATTRIBUTION)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(chosen)} photos and the orientation set to {OUT} "
          f"({total / 1e6:.1f} MB)")
    return 0 if total <= 15_000_000 else 1


ATTRIBUTION = """# The test suite's photos

Real photos the tests run on, made by `scripts/make_test_photos.py` from the
project's shared test data.

## camera/

Camera and phone photos from the public repository
drewnoakes/metadata-extractor-images, whose README says: "You are free to use
these media files however you wish." The JPEGs were downscaled to 1280 px on
the long edge with their EXIF kept (the Orientation tag still describes the
stored pixels); the HEIC is unchanged. File names are `<format>__<camera>.<ext>`.

## orientation/

`landscape_1..8.jpg`, `portrait_1..8.jpg`: one 600x450 photo stored with each
EXIF Orientation value 1-8, so that all sixteen look the same when shown
correctly. From ianare/exif-samples (images from Wikimedia Commons, CC BY-SA).
"""

if __name__ == "__main__":
    sys.exit(main())
