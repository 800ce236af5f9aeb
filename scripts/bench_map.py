"""Benchmark of `dupecheck map` on a 10,000-photo index; prints tables, writes JSON.

    python scripts/bench_map.py [--photos ../shared/data/photos] [--rows 10000]
                                [--work DIR] [--out bench-map.json]

The archive is real: 10,000 distinct 1080 px JPEGs (what an export holds) cut from the
photos in ../shared (a different crop and grade of one of them each). The index is
written directly: its embeddings are synthetic (2048-d, 60 clusters of different sizes
and spreads, some photos posted twice), because indexing 10,000 photos with ResNet-50
takes ~10 minutes here and the map's cost depends on the rows and the dimension, not on
what the vectors mean; the local features are those of the real photos (so `dupes`
inside the map does its re-framed pass for real).

1. Layout engines side by side on the same 10,000 x 2048 rows (PCA to 50 first):
   openTSNE (250 iterations after early exaggeration, as `map` runs it, and its default
   500), scikit-learn's t-SNE, UMAP (each in a fresh process: import included), with the
   share of each photo's 10 nearest neighbours that stay its neighbours on the map.
2. `dupecheck map --png` in a fresh process: thumbnail cache empty, then filled;
   wall seconds and peak RSS.
3. What `--reframed` would add: `dupes`' re-framed pass (each photo's descriptors vote
   in the shortlist, its best four are verified) timed per photo on a sample of rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from bench import machine, random_weights, run_measured, save, table  # noqa: E402

from dupecheck import localfeatures as lf  # noqa: E402
from dupecheck.engines import MODELS  # noqa: E402
from dupecheck.engines.weights import file_sha256  # noqa: E402
from dupecheck.evidence import pdq_hash  # noqa: E402
from dupecheck.imaging import decode  # noqa: E402
from dupecheck.store import IndexedPhoto, LocalArrays, ModelEntry, write_index  # noqa: E402

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".heic", ".webp"}


def _make_one(args: tuple[str, int, str]) -> None:
    from PIL import Image, ImageEnhance, ImageOps

    src, i, dest = args
    if os.path.exists(dest):
        return
    rng = np.random.default_rng(i)
    img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    w, h = img.size
    keep = rng.uniform(0.6, 1.0)
    cw, ch = int(w * keep), int(h * keep)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch))
    img.thumbnail((1080, 1080), Image.Resampling.BILINEAR)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))
    img.save(dest, quality=80)


def make_archive(photos_dir: Path, folder: Path, rows: int) -> list[str]:
    from dupecheck.imaging import _register_openers

    _register_openers()
    sources = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i // 1000:02d}/{i:05d}.jpg" for i in range(rows)]
    for n in {n.split("/")[0] for n in names}:
        (folder / n).mkdir(exist_ok=True)
    jobs = [(str(sources[i % len(sources)]), i, str(folder / names[i])) for i in range(rows)]
    with Pool(os.cpu_count() or 1, initializer=_register_openers) as pool:
        pool.map(_make_one, jobs, chunksize=32)
    return names


def write_bench_index(root: Path, archive: Path, names: list[str], photos_dir: Path,
                      weights: Path) -> None:
    spec = MODELS["resnet50"]
    n = len(names)
    rng = np.random.default_rng(0)
    clusters = 60
    sizes = rng.dirichlet(np.full(clusters, 0.7))
    centres = rng.normal(size=(clusters, spec.dim)).astype(np.float32)
    of = rng.choice(clusters, n, p=sizes)
    spread = rng.uniform(0.6, 1.6, clusters)[of][:, None]
    emb = centres[of] + spread * rng.normal(size=(n, spec.dim)).astype(np.float32)
    twice = rng.choice(n, n // 50, replace=False)  # 2% posted twice: near copies
    emb[twice[1::2]] = emb[twice[0::2]] + 0.01 * rng.normal(size=(len(twice) // 2, spec.dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    start = time.perf_counter()
    sources = sorted(p for p in photos_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    real = [lf.extract(decode(p.read_bytes(), p.name, draft=512).image) for p in sources]
    pdq_real = [pdq_hash(decode(p.read_bytes(), p.name, draft=256).image) for p in sources]
    feats, pdq = [], []
    for i in range(n):
        f = real[i % len(real)]
        variant = i // len(real)
        cells = np.roll(f.descriptors.reshape(-1, 4, 4, 8), variant % 8, axis=3)
        if variant // 8 % 2:
            cells = cells[:, :, ::-1]
        if variant // 16 % 2:
            cells = cells[:, ::-1]
        feats.append(lf.LocalFeatures(f.points, np.ascontiguousarray(cells.reshape(-1, 128)),
                                      f.size))
        h = np.unpackbits(pdq_real[i % len(real)])
        h[rng.choice(256, 64, replace=False)] ^= 1  # distinct hashes, far from each other
        pdq.append(np.packbits(h))
    desc, points, meta = lf.pack(feats)
    shortlist = lf.build_shortlist(desc, meta)
    photos = [IndexedPhoto(name, "photo", f"{2014 + i % 12}-06-01T00:00:00+00:00",
                           f"caption {i}", None, f"{i:064x}") for i, name in enumerate(names)]
    entry = ModelEntry(spec.name, spec.dim, file_sha256(weights), str(weights.resolve()),
                       spec.preprocessing)
    write_index(root, photos, np.stack(pdq), {spec.name: (entry, emb)}, [str(archive)],
                LocalArrays(desc, points, meta, shortlist))
    print(f"   index written in {time.perf_counter() - start:.0f} s")


_LAYOUT = """
import sys, time, numpy as np
start = time.perf_counter()
x = np.load(sys.argv[2], allow_pickle=False)
from sklearn.decomposition import PCA
p = PCA(50, random_state=0, svd_solver="randomized").fit_transform(x)
which = sys.argv[1]
if which.startswith("openTSNE"):
    from openTSNE import TSNE
    iters = int(which.split()[-1]) if " " in which else 500
    y = TSNE(n_iter=iters, random_state=0, n_jobs=2).fit(p.astype(np.float64))
elif which == "scikit-learn t-SNE":
    from sklearn.manifold import TSNE
    y = TSNE(random_state=0, init="pca").fit_transform(p)
else:
    import umap
    y = umap.UMAP(random_state=0, n_jobs=1).fit_transform(p)
seconds = time.perf_counter() - start
from sklearn.neighbors import NearestNeighbors
y = np.asarray(y)
hi = NearestNeighbors(n_neighbors=11).fit(p).kneighbors(p[:2000], return_distance=False)[:, 1:]
lo = NearestNeighbors(n_neighbors=11).fit(y).kneighbors(y[:2000], return_distance=False)[:, 1:]
kept = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hi, lo)])
print(seconds, kept)
"""


def bench_layouts(emb_file: Path, engines: list[str], python: str) -> list[dict[str, object]]:
    rows = []
    for name in engines:
        proc = subprocess.run([python, "-c", _LAYOUT, name, str(emb_file)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            rows.append({"engine": name, "seconds": None,
                         "error": proc.stderr.strip().splitlines()[-1][:120]})
            continue
        seconds, kept = proc.stdout.split()[-2:]
        rows.append({"engine": name, "seconds": float(seconds), "knn10_kept": float(kept)})
    table("1. 2-D layout of 10,000 x 2048 embeddings (fresh process, imports and PCA "
          "included); share of each photo's 10 nearest neighbours kept on the map",
          ["engine", "seconds", "10-NN kept"],
          [[r["engine"], f"{r['seconds']:.1f}" if r["seconds"] else r.get("error"),
            f"{r['knn10_kept']:.3f}" if r.get("knn10_kept") is not None else "-"]
           for r in rows])
    return rows


def reframed_pass(idx: Path, sample: int) -> dict[str, float]:
    """analysis._reframed_edges (what `dupes` and `map --reframed` run) on the first
    `sample` rows, after the shortlist is open."""
    from dupecheck.analysis import _reframed_edges
    from dupecheck.store import open_index

    index = open_index(idx)
    assert index.local is not None
    index.local.shortlist()
    times: dict[int, list[float]] = {1: [], 64: []}
    found = {}
    for _ in range(2):  # interleaved
        for chunk in times:
            start = time.perf_counter()
            found[chunk] = _reframed_edges(index, "resnet50", [], None, upto=sample,
                                           chunk=chunk)
            times[chunk].append((time.perf_counter() - start) / sample)
    assert found[1] == found[64]  # batching changes the speed, not the pairs
    one, batched = (1000 * min(times[c]) for c in (1, 64))
    result = {"sample": sample, "per_photo_ms_one_by_one": one, "per_photo_ms": batched,
              "pairs_found": len(found[64])}
    print(f"\n3. dupes' re-framed pass (what `map --reframed` adds), {sample} photos of the "
          f"index, best of 2: votes one photo at a time {one:.1f} ms a photo, 64 photos per "
          f"FAISS search {batched:.1f} ms ({one / batched:.2f}x): "
          f"{batched * 10:.0f} s for 10,000 photos")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=None,
                        help="Keep the archive and index here (reused by the next run).")
    parser.add_argument("--layouts", default="openTSNE 250,openTSNE 500,scikit-learn t-SNE,UMAP")
    parser.add_argument("--layout-python", default=sys.executable,
                        help="Interpreter for section 1 (UMAP is not a dependency: give one "
                             "with umap-learn, openTSNE and scikit-learn installed).")
    parser.add_argument("--reframed-sample", type=int, default=300)
    parser.add_argument("--skip-map", action="store_true", help="Sections 1 and 3 only.")
    parser.add_argument("--out", type=Path, default=REPO / "bench-map.json")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dupecheck-bench-map-"))
    work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, object] = {"machine": machine(), "rows": args.rows}
    print(json.dumps(doc["machine"]))
    try:
        archive, idx = work / "archive", work / f"index-{args.rows}"
        start = time.perf_counter()
        names = make_archive(args.photos, archive, args.rows)
        print(f"   archive of {args.rows} 1080 px JPEGs ready in "
              f"{time.perf_counter() - start:.0f} s")
        weights = work / "resnet50-random.safetensors"
        if not weights.exists():
            random_weights("resnet50", work)
        if not idx.exists():
            write_bench_index(idx, archive, names, args.photos, weights)
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DUPECHECK_INDEX": str(idx),
               "DUPECHECK_WEIGHTS": str(weights), "XDG_CACHE_HOME": str(work / "cache")}
        if args.layouts:
            from dupecheck.store import open_index

            emb_file = work / "embeddings.npy"
            np.save(emb_file, np.asarray(open_index(idx).embeddings("resnet50")))
            doc["layouts"] = bench_layouts(emb_file, args.layouts.split(","), args.layout_python)
        if args.reframed_sample:
            doc["reframed_pass"] = reframed_pass(idx, args.reframed_sample)
        if args.skip_map:
            return save(doc, args.out)
        shutil.rmtree(work / "cache" / "dupecheck" / "thumbs", ignore_errors=True)
        runs = []
        for label in ("thumbnail cache empty", "thumbnail cache filled"):
            wall, code, peak = run_measured(
                ["map", "--out", str(work / "map.html"), "--png", str(work / "map.png"),
                 "--quiet"], env)
            assert code == 0, code
            runs.append({"run": label, "seconds": wall, "peak_rss_mb": peak})
        doc["map"] = runs
        doc["html_mb"] = (work / "map.html").stat().st_size / 2**20
        table(f"2. `dupecheck map --png` of a {args.rows:,}-photo index, fresh process",
              ["run", "seconds", "peak RSS MB"],
              [[r["run"], f"{r['seconds']:.1f}", r["peak_rss_mb"]] for r in runs])
        print(f"   map.html {doc['html_mb']:.1f} MB (thumbnails embedded)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return save(doc, args.out)


if __name__ == "__main__":
    sys.exit(main())
