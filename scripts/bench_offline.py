"""The phone's offline copy: its size, and a check of a 12 MP JPEG in headless Chromium.

    python scripts/bench_offline.py [--photos ../shared/data/photos] [--runs 5]
                                    [--out bench-offline.json]

Index: the photos as an export holds them, ResNet-50 with random weights (sizes and
speed do not depend on their values). Size: the copy's bytes per photo on this index
(embeddings as encoded, PDQ, SHA-256, 64 px thumbnails, the header's rows), and what that
makes for 10,000 photos (per-photo bytes x 10,000: a projection from these photos, said
so), with the fp32 model and with the int8 model beside it. Speed: in Debian's Chromium,
served on loopback, the copy kept, the server stopped: `check()` of a 12 MP JPEG (the
phone HEIC's pixels) and the model alone on it (`embedding()`), median of --runs after
one warm-up. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

from bench import machine, random_weights, table  # noqa: E402

from helpers import CHROMEDRIVER, CHROMIUM, instagramify, served_on_loopback  # noqa: E402


def twelve_mp_jpeg(photos: Path) -> bytes:
    from PIL import Image

    from dupecheck.imaging import decode

    img = decode((photos / "heic__IMG_2927.HEIC").read_bytes(), "IMG_2927.HEIC").image
    img = img.resize((4032, 3024) if img.width >= img.height else (3024, 4032),
                     Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench-offline.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dupecheck-offline-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> int:
    from dupecheck.engines import get_model_spec
    from dupecheck.engines.onnx_engine import onnx_cache_path
    from dupecheck.engines.quantize import quantize
    from dupecheck.engines.weights import file_sha256
    from dupecheck.imaging import decode
    from dupecheck.indexer import build_index
    from dupecheck.offline import build_copy, read_copy
    from dupecheck.precision import engine_for
    from dupecheck.service import Pairing, ServiceState, create_app
    from dupecheck.store import open_index
    from dupecheck.tokens import TokenStore

    spec = get_model_spec("resnet50")
    export = work / "export"
    export.mkdir()
    sources = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".heic"))
    for i, path in enumerate(sources):
        (export / f"{i:03d}.jpg").write_bytes(instagramify(path.read_bytes()))
    weights = random_weights("resnet50", work)
    build_index([export], work / "idx", spec, weights, engine="onnx")
    index = open_index(work / "idx")
    copy = build_copy(index, spec, 1.0, {})
    header, sections = read_copy(copy.path.read_bytes())
    per_photo = copy.bytes / len(index)
    fp32_model = onnx_cache_path(spec, file_sha256(weights))
    int8_model = work / "int8.onnx"
    pixels = [spec.to_input(decode((export / f"{i:03d}.jpg").read_bytes(), "p",
                                   draft=spec.archive_draft_size).image) for i in range(32)]
    import numpy as np

    quantize(fp32_model, np.stack(pixels), int8_model)
    sizes = {name: len(data) for name, data in sections.items()}
    doc = {"machine": machine(), "photos": len(index), "copy_bytes": copy.bytes,
           "embeddings": copy.encoding, "sections": sizes, "per_photo_bytes": per_photo,
           "fp32_model_bytes": fp32_model.stat().st_size,
           "int8_model_bytes": int8_model.stat().st_size}
    ten_k = per_photo * 10_000
    table(f"the phone's copy ({len(index)} real photos; 10,000 projected from them)",
          ["", "MB"],
          [["copy of this index", f"{copy.bytes / 1e6:.2f}"],
           [f"  per photo, bytes ({copy.encoding} embeddings)", f"{per_photo:.0f}"],
           ["copy of 10,000 photos (projected)", f"{ten_k / 1e6:.1f}"],
           ["  + the int8 model", f"{(ten_k + doc['int8_model_bytes']) / 1e6:.1f}"],
           ["  + the fp32 model", f"{(ten_k + doc['fp32_model_bytes']) / 1e6:.1f}"]])
    print("   sections:", {k: f"{v / len(index):.0f} B/photo" for k, v in sizes.items()})

    if not (CHROMIUM and CHROMEDRIVER):
        print("no chromium: the timing is left out")
    else:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        state = ServiceState(work / "idx", spec, engine_for(index, spec, weights, "onnx"),
                             file_sha256(weights), TokenStore(work / "config"))
        state.pairing = Pairing.new()
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={work / 'chrome'}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_script_timeout(600)
        photo = base64.b64encode(twelve_mp_jpeg(args.photos)).decode()
        timed = ("const [data, call, done] = arguments;"
                 "const blob = new Blob([Uint8Array.from(atob(data), c => c.charCodeAt(0))],"
                 " {type: 'image/jpeg'});"
                 "const t = performance.now();"
                 "window.dupecheck.offline[call](blob, 'IMG.jpg')"
                 ".then(() => done(performance.now() - t), e => done(String(e)));")
        try:
            serving = served_on_loopback(create_app(state))
            port = serving.__enter__()
            try:
                driver.get(f"http://127.0.0.1:{port}/#pair={state.pairing.code}")
                import time

                time.sleep(2)
                driver.execute_async_script(
                    "window.dupecheck.offline.save().then(arguments[0])")
            finally:
                serving.__exit__(None, None, None)
            results = {}
            for call in ("check", "embedding"):
                runs = [driver.execute_async_script(timed, photo, call)
                        for _ in range(args.runs + 1)][1:]
                results[call] = runs
        finally:
            driver.quit()
        doc["chromium_ms"] = results
        table("offline, in headless Chromium (one thread of WASM), a 12 MP JPEG",
              ["", "median ms", "runs"],
              [["check() (decode, SHA-256, PDQ x 4 + 8, model, rank)",
                f"{statistics.median(results['check']):.0f}", str(args.runs)],
               ["the model alone (embedding() of the full frame)",
                f"{statistics.median(results['embedding']):.0f}", str(args.runs)]])
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
