"""Benchmark of a very large index: open + verify, and the search, side by side with how
dupecheck did them before (1.0's index layout and numpy's cosine pass); prints a table,
writes JSON.

    python scripts/bench_scale.py [--rows 1000000] [--dim 512] [--runs 5] [--out F]

One index of `--rows` rows is written through the store (export-like records: paths,
dates, captions; random unit embeddings; random PDQ), then a second one shares its
matrix and PDQ files (hard links) but has what dupecheck 1.0 wrote: photos.json on one
line, SHA-256 digests only, no row columns. Each measurement runs in a fresh process,
the two ways alternating, files in the page cache (a first read from disk is bound by
the disk, not by dupecheck):

- open + verify: `open_index`, a `Searcher`, and the wait for the matrix's checksum;
- first search: the first `search` of a 4-variant candidate (what a cold `check` does
  after embedding; the new way's ONNX session is built in a thread meanwhile);
- search: the median of the next `--runs` searches (a warm `serve`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from bench import save, table, workspace  # noqa: E402

from dupecheck.store import (  # noqa: E402
    CURRENT_FILE,
    MANIFEST_FILE,
    PHOTO_DIGESTS_FILE,
    PHOTO_SPANS_FILE,
    PHOTOS_FILE,
    IndexedPhoto,
    ModelEntry,
    write_index,
)

MODEL = "bench"

CHILD = r"""
import json, statistics, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from dupecheck import cosines
from dupecheck.search import Candidate, Searcher
from dupecheck.store import open_index
root, way, runs = sys.argv[2], sys.argv[3], int(sys.argv[4])
if way == "before":
    cosines.LARGE_ELEMENTS = 1 << 62  # numpy's pass, as before
t0 = time.perf_counter()
index = open_index(root)
searcher = Searcher(index, "bench")
searcher.embeddings
t1 = time.perf_counter()
dim = index.models["bench"].dim
rng = np.random.default_rng(2)
q = rng.normal(size=(4, dim)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
cand = Candidate("q", "ab" * 32, ["full", "4:5", "1:1", "1.91:1"],
                 rng.integers(0, 256, (4, 32), dtype=np.uint8), np.zeros((4, 3, 1, 1), np.float32))
first = searcher.search(cand, q, 0.9, 5)
t2 = time.perf_counter()
times = []
for _ in range(runs):
    t = time.perf_counter()
    result = searcher.search(cand, q, 0.9, 5)
    times.append(time.perf_counter() - t)
print(json.dumps({"open_verify_s": t1 - t0, "first_search_s": t2 - t1,
                  "search_s": statistics.median(times),
                  "top": [[m.row, round(m.score, 6)] for m in result.matches]}))
"""


def write_big(root: Path, n: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    photos = [IndexedPhoto(f"media/posts/{2015 + i % 10}{1 + i % 12:02d}/"
                           f"{17_840_000_000_000_000 + i}.jpg", "post",
                           f"{2015 + i % 10}-{1 + i % 12:02d}-14T18:{i % 60:02d}:00+00:00",
                           f"Evening light over the harbour, shot {i} #film #35mm",
                           None if i % 5 else i % 4, f"{i:064x}") for i in range(n)]
    emb = np.lib.format.open_memmap(root.parent / "matrix.npy", mode="w+", dtype=np.float32,
                                    shape=(n, dim))
    for i in range(0, n, 50_000):
        block = rng.normal(size=(min(50_000, n - i), dim)).astype(np.float32)
        emb[i:i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    pdq = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    entry = ModelEntry(MODEL, dim, "0" * 64, "/none", "bench")
    write_index(root, photos, pdq, {MODEL: (entry, emb)}, [])
    del emb
    (root.parent / "matrix.npy").unlink()


def as_written_by_1_0(new: Path, old: Path) -> None:
    """The same rows as dupecheck 1.0 laid them out; the big files are hard links."""
    import hashlib

    generation = (new / CURRENT_FILE).read_text().split()[0]
    src, dst = new / generation, old / generation
    dst.mkdir(parents=True)
    manifest = json.loads((src / MANIFEST_FILE).read_text())
    manifest.pop("blake3")
    for name in manifest["files"]:
        if name == PHOTOS_FILE:
            (dst / name).write_bytes(json.dumps(json.loads((src / name).read_bytes()),
                                                ensure_ascii=False).encode())
        elif name not in (PHOTO_SPANS_FILE, PHOTO_DIGESTS_FILE):
            os.link(src / name, dst / name)
    for name in (PHOTO_SPANS_FILE, PHOTO_DIGESTS_FILE):
        manifest["files"].pop(name)
    manifest["files"][PHOTOS_FILE] = hashlib.sha256((dst / PHOTOS_FILE).read_bytes()).hexdigest()
    raw = json.dumps(manifest, indent=2).encode()
    (dst / MANIFEST_FILE).write_bytes(raw)
    (old / CURRENT_FILE).write_text(f"{generation} {hashlib.sha256(raw).hexdigest()}\n")


def measure(root: Path, way: str, runs: int) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "src"), str(root), way,
                          str(runs)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per way")
    parser.add_argument("--out", type=Path, default=REPO / "bench-scale.json")
    args = parser.parse_args()
    work, doc = workspace("scale")
    new, old = work / "new", work / "old"
    t = time.perf_counter()
    write_big(new, args.rows, args.dim)
    written = time.perf_counter() - t
    as_written_by_1_0(new, old)
    sizes = {p.name: p.stat().st_size for p in next(new.glob("gen-*")).iterdir()}
    print(f"wrote {args.rows:,} x {args.dim} in {written:.1f} s; files: {sizes}")
    runs: dict[str, list[dict[str, object]]] = {"before": [], "now": []}
    for i in range(args.runs + 1):  # the first round pages the files in; not counted
        for way, root in (("before", old), ("now", new)):
            result = measure(root, way, args.runs)
            if i:
                runs[way].append(result)
    assert runs["before"][0]["top"] == runs["now"][0]["top"] or all(
        abs(a[1] - b[1]) < 1e-5 for a, b in zip(runs["before"][0]["top"],
                                                  runs["now"][0]["top"], strict=True)), \
        "the two ways disagree on the matches"
    rows = []
    summary: dict[str, dict[str, float]] = {}
    for key, label in (("open_verify_s", "open + verify"), ("first_search_s", "first search"),
                       ("search_s", "search (warm)")):
        before = statistics.median(r[key] for r in runs["before"])
        now = statistics.median(r[key] for r in runs["now"])
        summary[key] = {"before": before, "now": now}
        rows.append([label, f"{before:.3f}", f"{now:.3f}", f"{before / now:.2f}x"])
    table(f"{args.rows:,} x {args.dim} float32 index, median of {args.runs} fresh processes "
          f"(before = 1.0's layout, SHA-256, numpy's cosine pass)",
          ["step", "before s", "now s", "speed-up"], rows)
    doc.update({"rows": args.rows, "dim": args.dim, "runs": args.runs, "write_s": written,
                "file_bytes": sizes, "median": summary, "each": runs})
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return save(doc, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
