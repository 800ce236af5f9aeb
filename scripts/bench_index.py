"""Cold `index` side by side with an earlier revision of dupecheck, in one run; prints a
table, writes JSON.

    python scripts/bench_index.py [--photos tests/photos/camera] [--runs 3]
                                  [--baseline ab7bce3] [--out bench-index.json]

A fresh process per run (`dupecheck index FOLDER --rebuild --engine onnx`, ResNet-50 with
random weights: the same speed), the two revisions interleaved run by run (this
machine's speed drifts between minutes). Two cases each:

- first index: an empty dupecheck cache, so the run includes making the ONNX graph from
  the weights once (the baseline exports it through PyTorch; this revision builds it
  from the arrays);
- index again: the cache warm, a fresh index: decoding, embedding, local features.

The baseline is `git archive REV src` run from the same interpreter (the test venv has
PyTorch, which the baseline needs); both trees are byte-compiled first, as pip does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench import byte_compile, random_weights, run_measured, save, table, workspace  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO / "tests/photos/camera")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", default="ab7bce3")
    parser.add_argument("--out", type=Path, default=REPO / "bench-index.json")
    args = parser.parse_args()
    work, doc = workspace("bench-index")
    photos = sorted(p for p in args.photos.iterdir() if p.is_file())
    doc.update(baseline=args.baseline, photos=len(photos), folder=str(args.photos))
    try:
        weights = random_weights("resnet50", work)
        baseline = work / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "src"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        sources = {f"baseline {args.baseline}": baseline / "src", "this revision": REPO / "src"}
        for src in sources.values():
            byte_compile(src)

        def once(name: str, src: Path, run: int, fresh_cache: bool) -> float:
            cache = work / f"cache-{name}-{run}" if fresh_cache else work / f"cache-{name}"
            index = work / f"index-{name}-{run}-{fresh_cache}"
            env = {**os.environ, "PYTHONPATH": str(src), "XDG_CACHE_HOME": str(cache),
                   "DUPECHECK_WEIGHTS": str(weights), "DUPECHECK_INDEX": str(index)}
            wall, code, _ = run_measured(["index", str(args.photos), "--rebuild", "--engine",
                                          "onnx", "--quiet"], env)
            assert code == 0, f"{name}: index exited {code}"
            shutil.rmtree(index, ignore_errors=True)
            if fresh_cache:
                shutil.rmtree(cache, ignore_errors=True)
            return wall

        for n, src in enumerate(sources.values()):  # warm each revision's own cache
            once(str(n), src, -1, fresh_cache=False)
        times: dict[tuple[str, str], list[float]] = {}
        for run in range(args.runs):
            for case, fresh in (("first index (empty cache: makes the ONNX graph)", True),
                                ("index again (cache warm)", False)):
                for n, (name, src) in enumerate(sources.items()):
                    times.setdefault((case, name), []).append(once(str(n), src, run, fresh))
        rows = []
        for case in dict.fromkeys(c for c, _ in times):
            base, now = (statistics.median(times[(case, s)]) for s in sources)
            rows.append({"case": case, "baseline_s": base, "now_s": now, "ratio": now / base})
        doc["index"] = rows
        table(f"cold `index` of {len(photos)} photos ({args.photos.name}/), fresh process "
              f"(median of {args.runs}, interleaved)",
              ["case", f"baseline {args.baseline} s", "this revision s", "ratio"],
              [[r["case"], f"{r['baseline_s']:.1f}", f"{r['now_s']:.1f}",
                f"{r['ratio']:.2f}x"] for r in rows])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return save(doc, args.out)


if __name__ == "__main__":
    sys.exit(main())
