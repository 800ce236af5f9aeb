"""Cold `check` of a phone's 12 MP HEIC and an 8 MP JPEG, side by side with an earlier
revision of dupecheck, in one run; prints a table, writes JSON.

    python scripts/bench_check.py [--photos ../shared/data/photos] [--runs 9]
                                  [--baseline REV] [--out bench-check.json]

A fresh process per check (`dupecheck check PHOTO --quiet --engine onnx`), ResNet-50
(random weights: the same speed), against a 10,000-photo index with local features
(built as scripts/bench_reframed.py builds it), the page cache warm, every variant
interleaved (this machine's speed drifts between minutes). The baseline is `git archive
REV src` run on the same photos' index as its own code writes it (local features are
versioned: a revision ignores another's), each revision with a cache of its own (the
optimized ONNX graph's layout is versioned too), so the ratio is this revision's alone.
Both source trees are byte-compiled first, as an installed package is (pip compiles what
it installs; without it each check would compile dupecheck's modules from source).
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
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from bench import _MEASURED, byte_compile, random_weights, save, table, workspace  # noqa: E402

HEIC = "heic__IMG_2927.HEIC"  # an iPhone's 12 MP HEIC


def eight_megapixel_jpeg(photos: Path, dest: Path) -> Path:
    """An 8 MP camera JPEG (../shared keeps JPEGs at 2048 px): the HEIC's pixels."""
    from PIL import Image, ImageOps

    from dupecheck.imaging import _register_openers

    _register_openers()
    img = ImageOps.exif_transpose(Image.open(photos / HEIC)).convert("RGB")
    img.resize((2448, 3264), Image.Resampling.LANCZOS).save(dest, quality=92)
    return dest


def index_as_written_by(src: Path, work: Path, photos: Path, weights: Path,
                        env: dict[str, str], new: bool = False, rows: int = 10_000) -> Path:
    """work/check-local, the 10,000-photo index with local features, written by the
    dupecheck in `src` (imported first, so that the scripts' path inserts cannot shadow it)."""
    work.mkdir(exist_ok=True)
    if not (work / weights.name).exists():
        os.link(weights, work / weights.name)
    code = ("import dupecheck, sys; from pathlib import Path; "
            "from bench_reframed import check_cost; "
            f"check_cost(Path({str(photos)!r}), Path({str(work)!r}), runs=1, rows={rows}"
            + (f", leave_out=({HEIC!r},))" if new else ")"))
    path = os.pathsep.join([str(src), str(REPO / "scripts"), str(REPO / "tests")])
    subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": path},
                   check=True, stdout=subprocess.DEVNULL)
    return work / "check-local"


def timed(src: Path, photo: Path, env: dict[str, str]) -> tuple[float, int]:
    import time

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _MEASURED, "check", str(photo), "--quiet",
                           "--engine", "onnx"], env={**env, "PYTHONPATH": str(src)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    assert proc.returncode in (0, 1), proc.stderr[-500:]
    peak = [int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("VMHWM_KB")]
    return wall, (peak[-1] // 1024 if peak else -1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--baseline", default="540ab5f",
                        help="The revision compared against (default: before this work).")
    parser.add_argument("--out", type=Path, default=REPO / "bench-check.json")
    parser.add_argument("--new", action="store_true",
                        help="the index leaves the checked photo out: checking it is the "
                             "worst case, a photo that is new (every look runs)")
    parser.add_argument("--rows", type=int, default=10_000,
                        help="photos in the index (below ~1,000 its shortlist is exact: FAISS "
                             "flat, built when a check opens it)")
    args = parser.parse_args()
    work, doc = workspace("bench-check")
    doc["rows"] = args.rows
    doc["baseline"] = args.baseline
    doc["new"] = args.new
    try:
        random_weights("resnet50", work)
        baseline = work / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "src"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        photos = {"12 MP HEIC (iPhone)": args.photos / HEIC,
                  "8 MP JPEG": eight_megapixel_jpeg(args.photos, work / "8mp.jpg")}
        sources = {f"baseline {args.baseline}": baseline / "src", "this revision": REPO / "src"}
        for src in sources.values():
            byte_compile(src)
        envs = {src: {**os.environ, "XDG_CACHE_HOME": str(work / f"cache-{n}")}
                for n, src in enumerate(sources.values())}
        for n, src in enumerate(sources.values()):
            envs[src]["DUPECHECK_INDEX"] = str(index_as_written_by(
                src, work / f"index-{n}", args.photos, work / "resnet50-random.safetensors",
                envs[src], args.new, args.rows))
        for src in sources.values():  # warm: exports, optimized graphs, page cache
            for photo in photos.values():
                timed(src, photo, envs[src])
        times: dict[tuple[str, str], list[float]] = {}
        peaks: dict[tuple[str, str], int] = {}
        for _ in range(args.runs):
            for pname, photo in photos.items():
                for sname, src in sources.items():
                    wall, peak = timed(src, photo, envs[src])
                    times.setdefault((pname, sname), []).append(wall)
                    peaks[(pname, sname)] = max(peaks.get((pname, sname), 0), peak)
        rows = []
        for pname in photos:
            base, now = (statistics.median(times[(pname, s)]) for s in sources)
            rows.append({"photo": pname, "baseline_s": base, "now_s": now,
                         "ratio": now / base, "peak_rss_mb": peaks[(pname, "this revision")]})
        doc["check"] = rows
        table(f"cold `check`, fresh process, {args.rows:,}-photo index with local features "
              f"{'not holding the photo (new: every look runs) ' if args.new else ''}"
              f"(median of {args.runs}, interleaved)",
              ["photo", f"baseline {args.baseline} s", "this revision s", "ratio",
               "peak RSS MB"],
              [[r["photo"], f"{r['baseline_s']:.2f}", f"{r['now_s']:.2f}",
                f"{r['ratio']:.2f}x", r["peak_rss_mb"]] for r in rows])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return save(doc, args.out)


if __name__ == "__main__":
    sys.exit(main())
