"""Benchmarks, side by side in one run: prints tables and writes JSON.

    python scripts/bench.py [--photos ../shared/data/photos] [--out bench-results.json]
                            [--models resnet50,mobileclip-s2] [--max-rows 1000000]

1. index throughput end to end (decode + embed + write) per model: a seed-style
   baseline (eager torch fp32, batch 1, full decode), dupecheck's torch engine and
   its ONNX engine; plus the ONNX model alone on ready tensors (the ceiling).
2. `dupecheck check` latency in a fresh process with a 10,000-photo index, per engine.
3. top-k search time over memory-mapped float32 matrices of 1k to 1M rows.
4. peak RSS of `check` and `index`.
5. `re-framed`: re-edits found on the held-back part with the embedding off, and `index`
   with and without local features (scripts/bench_reframed.py runs all of it).

Weights are random (no downloads here): speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dupecheck.engines import MODELS, load_engine  # noqa: E402
from dupecheck.engines.weights import file_sha256  # noqa: E402
from dupecheck.indexer import build_index  # noqa: E402
from dupecheck.search import Candidate, Searcher  # noqa: E402
from dupecheck.store import IndexedPhoto, ModelEntry, open_index, write_index  # noqa: E402


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "platform": platform.platform()}


def workspace(name: str) -> tuple[Path, dict[str, object]]:
    """A fresh folder for the run (its own dupecheck cache inside), and the run's document,
    which starts with the machine, printed."""
    work = Path(tempfile.mkdtemp(prefix=f"dupecheck-{name}-"))
    os.environ.setdefault("XDG_CACHE_HOME", str(work / "cache"))
    doc: dict[str, object] = {"machine": machine()}
    print("machine:", json.dumps(doc["machine"]))
    return work, doc


def save(doc: dict[str, object], out: Path) -> int:
    """Write the run's figures as JSON (what benchmarks/ keeps) and say where."""
    out.write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {out}")
    return 0


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def random_weights(name: str, folder: Path) -> Path:
    path = folder / f"{name}-random.safetensors"  # resnet50: numpy alone, no torch
    subprocess.run([sys.executable, str(REPO / "scripts/make_random_weights.py"), name,
                    str(path)], check=True, capture_output=True)
    return path


# -- 1. index throughput -----------------------------------------------------------


def seed_baseline(spec, weights: Path, photos: list[Path], out: Path) -> tuple[float, float]:
    """What the idea's original script did: full decode, eager fp32, batch 1, then np.save,
    with the model as the library gives it (MobileCLIP not reparameterised)."""
    import torch
    from PIL import Image, ImageOps
    from pillow_heif import register_heif_opener

    from dupecheck.engines.torch_models import build_module, mobileclip_s2_module

    register_heif_opener()
    t0 = time.perf_counter()
    module = (mobileclip_s2_module(weights, spec, reparameterize=False).eval()
              if spec.name == "mobileclip-s2" else build_module(spec, weights))
    load = time.perf_counter() - t0
    start = time.perf_counter()
    rows = []
    with torch.inference_mode():
        for path in photos:
            img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
            x = torch.from_numpy(spec.to_input(img))[None]
            v = module(x)[0]
            rows.append((v / v.norm()).numpy())
    np.save(out, np.stack(rows))
    return time.perf_counter() - start, load


def dupecheck_index(spec, weights: Path, folder: Path, engine: str, index_dir: Path
                    ) -> tuple[float, float]:
    load_time = [0.0]

    def loader(s, w):
        t = time.perf_counter()
        e = load_engine(s, w, engine)
        load_time[0] += time.perf_counter() - t
        return e

    start = time.perf_counter()
    summary = build_index([folder], index_dir, spec, weights, engine_loader=loader)
    total = time.perf_counter() - start
    assert summary.embedded > 0
    return total - load_time[0], load_time[0]


def onnx_ceiling(spec, weights: Path, n: int) -> float:
    engine = load_engine(spec, weights, "onnx")
    pixels = np.random.default_rng(0).normal(size=(spec.batch_size, 3, spec.crop, spec.crop)
                                             ).astype(np.float32)
    engine.embed_batch(pixels)  # warm-up
    done, start = 0, time.perf_counter()
    while done < n:
        engine.embed_batch(pixels)
        done += len(pixels)
    return done / (time.perf_counter() - start)


def bench_index(models: list[str], photos_dir: Path, work: Path, repeat: int = 3
                ) -> list[dict[str, object]]:
    photos = sorted(p for p in photos_dir.iterdir() if p.is_file())
    folder = photos_dir
    results = []
    for name in models:
        spec = MODELS[name]
        weights = random_weights(name, work)
        load_engine(spec, weights, "onnx")  # export once, outside the timings
        n = len(photos)
        # Interleaved repeats, medians: this machine's speed drifts between minutes.
        runs: dict[str, list[tuple[float, float]]] = {"seed": [], "torch": [], "onnx": []}
        ceilings = []
        for k in range(repeat):
            runs["seed"].append(seed_baseline(spec, weights, photos, work / f"{name}-seed.npy"))
            for engine in ("torch", "onnx"):
                runs[engine].append(dupecheck_index(spec, weights, folder, engine,
                                                    work / f"i-{name}-{engine}-{k}"))
            ceilings.append(onnx_ceiling(spec, weights, max(n, 64)))
        (base_s, base_load), (torch_s, torch_load), (onnx_s, onnx_load) = (
            sorted(runs[e])[len(runs[e]) // 2] for e in ("seed", "torch", "onnx"))
        ceiling = statistics.median(ceilings)
        row = {"model": name, "photos": n,
               "seed_baseline_img_s": n / base_s, "torch_engine_img_s": n / torch_s,
               "onnx_engine_img_s": n / onnx_s, "onnx_model_alone_img_s": ceiling,
               "model_load_s": {"seed": base_load, "torch": torch_load, "onnx": onnx_load}}
        row["onnx_vs_baseline"] = row["onnx_engine_img_s"] / row["seed_baseline_img_s"]
        row["onnx_vs_ceiling"] = row["onnx_engine_img_s"] / ceiling
        results.append(row)
    table(f"1. index throughput, end to end (img/s, median of {repeat}; model loading "
          "excluded)",
          ["model", "photos", "seed baseline", "torch engine", "onnx engine", "onnx alone",
           "onnx/baseline", "onnx/ceiling"],
          [[r["model"], r["photos"], f"{r['seed_baseline_img_s']:.1f}",
            f"{r['torch_engine_img_s']:.1f}", f"{r['onnx_engine_img_s']:.1f}",
            f"{r['onnx_model_alone_img_s']:.1f}", f"{r['onnx_vs_baseline']:.2f}x",
            f"{r['onnx_vs_ceiling']:.0%}"] for r in results])
    return results


# -- 2 and 4. check latency and peak RSS ---------------------------------------------------


def synthetic_index(root: Path, spec, weights: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    photos = [IndexedPhoto(f"media/posts/{i // 100}/{i}.jpg", "post",
                           "2024-01-01T00:00:00+00:00", f"caption {i}", None, f"{i:064x}")
              for i in range(n)]
    emb = rng.normal(size=(n, spec.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pdq = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    entry = ModelEntry(spec.name, spec.dim, file_sha256(weights), str(weights.resolve()),
                       spec.preprocessing)
    write_index(root, photos, pdq, {spec.name: (entry, emb)}, ["synthetic"])


# Runs dupecheck and reports its own high-water RSS (VmHWM) at exit: a child's ru_maxrss
# would include the (large) benchmark process it was forked from.
_MEASURED = (
    "import atexit, runpy, sys\n"
    "def hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('VMHWM_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(hwm)\n"
    "sys.argv = ['dupecheck'] + sys.argv[1:]\n"
    "runpy.run_module('dupecheck', run_name='__main__')\n")


def byte_compile(src: Path) -> None:
    """Compile a source tree as pip compiles what it installs: a fresh process then loads
    .pyc files, where PYTHONDONTWRITEBYTECODE would otherwise make every run of dupecheck
    compile its modules from source."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)


def run_measured(args: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Wall seconds, exit code and peak RSS (MB) of `dupecheck ARGS` in a fresh process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURED, *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    kb = [int(line.split()[1]) for line in proc.stderr.splitlines()
          if line.startswith("VMHWM_KB")]
    return wall, proc.returncode, (kb[-1] // 1024 if kb else -1)


def bench_check(photos_dir: Path, work: Path, runs: int) -> list[dict[str, object]]:
    spec = MODELS["resnet50"]
    weights = work / "resnet50-random.safetensors"
    if not weights.exists():
        weights = random_weights("resnet50", work)
    load_engine(spec, weights, "onnx")
    idx = work / "index-10k"
    synthetic_index(idx, spec, weights, 10_000)
    photo = next(p for p in sorted(photos_dir.iterdir()) if p.suffix.lower() == ".jpg")
    byte_compile(REPO / "src")
    env = {**os.environ, "DUPECHECK_INDEX": str(idx), "PYTHONPATH": str(REPO / "src")}
    results = []
    for engine in ("onnx", "torch"):
        cmd = ["check", str(photo), "--quiet", "--engine", engine]
        run_measured(cmd, env)  # warm the page cache
        times, rss = [], []
        for _ in range(runs):
            wall, code, peak = run_measured(cmd, env)
            assert code in (0, 1), code
            times.append(wall)
            rss.append(peak)
        results.append({"engine": engine, "runs": runs, "median_s": statistics.median(times),
                        "min_s": min(times), "peak_rss_mb": max(rss)})
    ratio = results[1]["median_s"] / results[0]["median_s"]
    table(f"2. `dupecheck check` in a fresh process, 10,000-photo resnet50 index ({runs} runs)",
          ["engine", "median s", "min s", "peak RSS MB"],
          [[r["engine"], f"{r['median_s']:.2f}", f"{r['min_s']:.2f}", r["peak_rss_mb"]]
           for r in results])
    print(f"   onnx is {ratio:.1f}x faster than torch")
    return results


def bench_index_rss(photos_dir: Path, work: Path) -> dict[str, object]:
    weights = work / "resnet50-random.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DUPECHECK_WEIGHTS": str(weights)}
    cmd = ["index", str(photos_dir), "--index", str(work / "index-rss"), "--engine", "onnx",
           "--quiet"]
    wall, code, peak = run_measured(cmd, env)
    assert code == 0, code
    print(f"\n4. peak RSS of `dupecheck index` (onnx, {photos_dir.name}): {peak} MB, {wall:.1f} s")
    return {"peak_rss_mb": peak, "wall_s": wall}


# -- 5. load: 100k photos' worth of index rows ------------------------------------------


def bench_load(photos_dir: Path, work: Path, rows: int, runs: int) -> dict[str, object]:
    """`check` against a 100k-row index, and `index` re-reading a 100k-photo archive.

    The archive is 100k small distinct JPEGs; the index rows for them are written directly
    through the store's API (with their real content hashes), so `index` reuses every
    embedding: what is measured is the work and memory around the model at that size.
    """
    from PIL import Image

    spec = MODELS["resnet50"]
    weights = work / "resnet50-random.safetensors"
    if not weights.exists():
        weights = random_weights("resnet50", work)
    load_engine(spec, weights, "onnx")
    folder = work / "archive-100k"
    rng = np.random.default_rng(7)
    shas, pdqs = [], []
    import hashlib
    import io

    for i in range(rows):
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
        (sub / f"{i}.jpg").write_bytes(buf.getvalue())
        shas.append(hashlib.sha256(buf.getvalue()).hexdigest())
    paths = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jpg"))
    sha_of = {f"{i // 1000:03d}/{i}.jpg": s for i, s in enumerate(shas)}
    photos = [IndexedPhoto(p, "photo", None, None, None, sha_of[p]) for p in paths]
    emb = rng.normal(size=(rows, spec.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pdqs = rng.integers(0, 256, (rows, 32), dtype=np.uint8)
    entry = ModelEntry(spec.name, spec.dim, file_sha256(weights), str(weights.resolve()),
                       spec.preprocessing)
    idx = work / "index-100k"
    write_index(idx, photos, pdqs, {spec.name: (entry, emb)}, [str(folder)])
    del emb
    photo = next(p for p in sorted(photos_dir.iterdir()) if p.suffix.lower() == ".jpg")
    env = {**os.environ, "DUPECHECK_INDEX": str(idx), "PYTHONPATH": str(REPO / "src"),
           "DUPECHECK_WEIGHTS": str(weights)}
    run_measured(["check", str(photo), "-q"], env)
    times, rss = [], []
    for _ in range(runs):
        wall, code, peak = run_measured(["check", str(photo), "-q"], env)
        assert code in (0, 1), code
        times.append(wall)
        rss.append(peak)
    wall, code, index_rss = run_measured(["index", str(folder), "--quiet"], env)
    assert code == 0, code
    result = {"rows": rows, "dim": spec.dim, "check_median_s": statistics.median(times),
              "check_peak_rss_mb": max(rss), "index_reuse_all_s": wall,
              "index_peak_rss_mb": index_rss, "matrix_mb": rows * spec.dim * 4 // 2**20}
    table(f"5. load: {rows:,} photos ({spec.name}, {result['matrix_mb']} MB matrix)",
          ["what", "wall s", "peak RSS MB"],
          [["check (median)", f"{result['check_median_s']:.2f}", result["check_peak_rss_mb"]],
           ["index (every row reused)", f"{wall:.1f}", index_rss]])
    shutil.rmtree(folder)
    shutil.rmtree(idx)
    return result


# -- 3. search ----------------------------------------------------------------------------


def bench_search(work: Path, max_rows: int) -> list[dict[str, object]]:
    import resource

    results = []
    for dim in (512, 2048):
        for n in (1_000, 10_000, 100_000, 1_000_000):
            if n > max_rows:
                continue
            root = work / f"search-{n}-{dim}"
            _write_big_index(root, n, dim)
            t = time.perf_counter()
            index = open_index(root)
            searcher = Searcher(index, "bench")
            searcher.embeddings  # noqa: B018 - waits for the matrix's checksum (a thread)
            verify = time.perf_counter() - t
            rng = np.random.default_rng(2)
            q = rng.normal(size=(4, dim)).astype(np.float32)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            cand = Candidate("q", "x" * 64, ["full", "4:5", "1:1", "1.91:1"],
                             rng.integers(0, 256, (4, 32), dtype=np.uint8),
                             np.zeros((4, 3, 1, 1), np.float32))
            searcher.search(cand, q, 0.9, 5)  # page the matrix in
            times = []
            for _ in range(5):
                t = time.perf_counter()
                searcher.search(cand, q, 0.9, 5)
                times.append(time.perf_counter() - t)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            results.append({"rows": n, "dim": dim, "search_s": statistics.median(times),
                            "verify_s": verify, "matrix_mb": n * dim * 4 // 2**20,
                            "process_peak_rss_mb": rss})
            del searcher, index
            shutil.rmtree(root)
    table("3. top-k search (4 crop variants, k=5) over a memory-mapped float32 matrix",
          ["rows", "dim", "search s", "open+verify s", "matrix MB", "peak RSS MB so far"],
          [[f"{r['rows']:,}", r["dim"], f"{r['search_s']:.4f}", f"{r['verify_s']:.3f}",
            r["matrix_mb"], r["process_peak_rss_mb"]] for r in results])
    return results


def _write_big_index(root: Path, n: int, dim: int) -> None:
    """Rows written through the store's API; the matrix itself is built in chunks."""
    rng = np.random.default_rng(0)
    photos = [IndexedPhoto(f"p/{i}.jpg", "post", None, None, None, f"{i:064x}")
              for i in range(n)]
    emb = np.lib.format.open_memmap(root.parent / f"tmp-{n}-{dim}.npy", mode="w+",
                                    dtype=np.float32, shape=(n, dim))
    for i in range(0, n, 50_000):
        block = rng.normal(size=(min(50_000, n - i), dim)).astype(np.float32)
        emb[i:i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    pdq = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    entry = ModelEntry("bench", dim, "0" * 64, "/none", "bench")
    write_index(root, photos, pdq, {"bench": (entry, emb)}, [])
    del emb
    (root.parent / f"tmp-{n}-{dim}.npy").unlink()


def bench_reframed(photos_dir: Path, work: Path, repeat: int) -> dict[str, object]:
    """Section 5, from scripts/bench_reframed.py (imported here: it imports this module)."""
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_reframed import index_cost, quality

    folder = work / "reframed"
    folder.mkdir(exist_ok=True)
    return {"quality": quality(photos_dir, folder, parts=("held-back",)),
            "index": index_cost(photos_dir, folder, max(repeat, 5))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results.json")
    parser.add_argument("--models", default="resnet50,mobileclip-s2")
    parser.add_argument("--max-rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="repeats of section 1")
    parser.add_argument("--load-rows", type=int, default=100_000)
    parser.add_argument("--skip", default="",
                        help="comma list of: index,check,rss,load,search,reframed")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work, doc = workspace("bench")
    try:
        if "index" not in skip:
            doc["index"] = bench_index(args.models.split(","), args.photos, work, args.repeat)
        if "check" not in skip:
            doc["check"] = bench_check(args.photos, work, args.runs)
        if "rss" not in skip:
            if not (work / "resnet50-random.safetensors").exists():
                random_weights("resnet50", work)
            doc["index_rss"] = bench_index_rss(args.photos, work)
        if "load" not in skip:
            doc["load"] = bench_load(args.photos, work, args.load_rows, max(3, args.runs // 2))
        if "search" not in skip:
            doc["search"] = bench_search(work, args.max_rows)
        if "reframed" not in skip:
            doc["reframed"] = bench_reframed(args.photos, work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return save(doc, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
