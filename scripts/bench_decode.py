"""Preparing one photo for `check`, side by side in one run: a 12 MP phone HEIC decoded
in full (what `check` did before formats without a draft were reduced) against reduced
once right after decoding (what it does now), and an 8 MP JPEG (its draft decode, for
reference). Median of 7 each, single process; prints a table, writes JSON.

    python scripts/bench_decode.py [--photos ../shared/data/photos] [--out bench-decode.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from bench import machine, table  # noqa: E402

from dupecheck.engines import MODELS  # noqa: E402
from dupecheck.evidence import pdq_hash  # noqa: E402
from dupecheck.imaging import crop_variants, decode  # noqa: E402
from dupecheck.localfeatures import extract  # noqa: E402


def prepare(data: bytes, name: str, draft: int | None) -> None:
    """What load_candidate does with the decoded photo: crops, PDQ, model inputs, features."""
    spec = MODELS["resnet50"]
    photo = decode(data, name, draft=draft)
    variants = crop_variants(photo.image)
    for _, img in variants:
        pdq_hash(img)
        spec.to_input(img)
    extract(photo.image)


def timed(data: bytes, name: str, draft: int | None, runs: int = 7) -> float:
    prepare(data, name, draft)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        prepare(data, name, draft)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--out", type=Path, default=REPO / "bench-decode.json")
    args = parser.parse_args()
    draft = MODELS["resnet50"].draft_size
    heic = (args.photos / "heic__IMG_2927.HEIC").read_bytes()
    src = next(p for p in sorted(args.photos.iterdir()) if p.suffix.lower() == ".jpg")
    buf = io.BytesIO()
    Image.open(src).convert("RGB").resize((3264, 2448)).save(buf, "JPEG", quality=92)
    jpeg = buf.getvalue()
    rows = {"heic_12mp_full_s": timed(heic, "IMG_2927.HEIC", None),
            "heic_12mp_reduced_s": timed(heic, "IMG_2927.HEIC", draft),
            "jpeg_8mp_draft_s": timed(jpeg, "IMG_8MP.jpg", draft)}
    rows["heic_speedup"] = rows["heic_12mp_full_s"] / rows["heic_12mp_reduced_s"]
    table("preparing one photo for check (decode, crops, PDQ, model inputs, local features)",
          ["photo", "seconds (median of 7)"],
          [["12 MP HEIC, decoded in full (before)", f"{rows['heic_12mp_full_s']:.3f}"],
           ["12 MP HEIC, reduced once after decoding (now)",
            f"{rows['heic_12mp_reduced_s']:.3f}"],
           ["8 MP JPEG, draft decode", f"{rows['jpeg_8mp_draft_s']:.3f}"]])
    print(f"   HEIC: {rows['heic_speedup']:.2f}x faster")
    args.out.write_text(json.dumps({"machine": machine(), **rows}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
