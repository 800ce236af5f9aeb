"""ResNet-50 at int8 against fp32 on ONNX Runtime, side by side in one run; prints a table,
writes JSON.

    python scripts/bench_precision.py [--photos ../shared/data/photos] [--repeat 3]
                                      [--out bench-precision.json]

1. The model alone on ready tensors (batch 16, every core): img/s, fp32 and int8.
2. `index` end to end (decode, hash, local features, embed, write) of the photos as an
   export holds them (1080 px JPEGs), with the fp32 and the int8 engine, and fp32 without
   local features; interleaved repeats, medians; each also as a share of its own
   model-alone ceiling.
3. The fidelity gate as `dupecheck index --precision int8` runs it on these photos:
   lowest cosine(int8, fp32) and the share keeping their nearest neighbour, and the
   decision. Random weights (none can be downloaded here) give embeddings that all lie
   within a hair of each other, so nearest neighbours are decided by noise: the gate
   refusing int8 for them is the gate working; trained weights separate photos.
4. Where a photo's CPU goes at `index` (one thread, medians of 3): reading its hash,
   decoding it at the index's draft, PDQ, the model's input, local features, and the
   fp32 model itself (batch 16, CPU of both cores); the model's share of the sum is what
   `index` could reach of its ceiling were every step perfectly overlapped.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from bench import random_weights, save, table, workspace  # noqa: E402
from bench_reframed import export_like  # noqa: E402

from dupecheck.engines import MODELS, load_engine  # noqa: E402
from dupecheck.engines.quantize import split_sample  # noqa: E402
from dupecheck.engines.weights import file_sha256  # noqa: E402
from dupecheck.evidence import sha256_bytes  # noqa: E402
from dupecheck.imaging import decode  # noqa: E402
from dupecheck.indexer import build_index  # noqa: E402
from dupecheck.precision import load_int8_engine  # noqa: E402


def alone(engine, spec, n: int = 96) -> float:
    pixels = np.random.default_rng(0).normal(size=(16, 3, spec.crop, spec.crop)
                                             ).astype(np.float32)
    engine.embed_batch(pixels)
    done, start = 0, time.perf_counter()
    while done < n:
        engine.embed_batch(pixels)
        done += len(pixels)
    return done / (time.perf_counter() - start)


def cpu_per_step(files: list[Path], spec, engine) -> dict[str, float]:  # noqa: ANN001
    """CPU ms per photo of each step `index` takes (section 4)."""
    from dupecheck import localfeatures as lf
    from dupecheck.evidence import pdq_hash

    datas = [p.read_bytes() for p in files]
    images = [decode(d, "x", draft=spec.archive_draft_size).image for d in datas]
    pixels = np.stack([spec.to_input(img) for img in images[:16]])
    steps = {
        "content hash (SHA-256)": lambda: [sha256_bytes(d) for d in datas],
        "decode at the index's draft": lambda: [
            decode(d, "x", draft=spec.archive_draft_size) for d in datas],
        "PDQ": lambda: [pdq_hash(img) for img in images],
        "model input": lambda: [spec.to_input(img) for img in images],
        "local features": lambda: [lf.extract(img) for img in images],
    }
    runs: dict[str, list[float]] = {}
    for _ in range(3):
        for name, step in steps.items():
            start = time.process_time()
            step()
            runs.setdefault(name, []).append(1000 * (time.process_time() - start) / len(datas))
        start = time.process_time()
        for _ in range(3):
            engine.embed_batch(pixels)
        runs.setdefault("ResNet-50 fp32 (both cores)", []).append(
            1000 * (time.process_time() - start) / (3 * len(pixels)))
    result = {name: statistics.median(v) for name, v in runs.items()}
    model = result["ResNet-50 fp32 (both cores)"]
    rest = sum(v for k, v in result.items() if k != "ResNet-50 fp32 (both cores)")
    rest_plain = rest - result["local features"]
    table(f"4. CPU per photo at `index`, {len(files)} photos as an export holds them "
          "(median of 3)", ["step", "CPU ms per photo"],
          [[k, f"{v:.1f}"] for k, v in result.items()])
    print(f"   the model's share of a photo's CPU: {model / (model + rest_plain):.0%} "
          f"without local features, {model / (model + rest):.0%} with them: the most "
          "`index` can reach of its ceiling on two cores")
    return {**result, "model_share_plain": model / (model + rest_plain),
            "model_share_local": model / (model + rest)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench-precision.json")
    args = parser.parse_args()
    work, doc = workspace("bench-precision")
    try:
        spec = MODELS["resnet50"]
        weights = random_weights("resnet50", work)
        sha = file_sha256(weights)
        export = export_like(args.photos, work)
        files = sorted(p for p in export.iterdir() if p.is_file())
        shas = {sha256_bytes(p.read_bytes()): p for p in files}
        calibration, _ = split_sample(list(shas))

        def pixels_of(wanted):
            return np.stack([spec.to_input(decode(shas[s].read_bytes(), shas[s].name,
                                                  draft=spec.archive_draft_size).image)
                             for s in wanted])

        engines = {"fp32": load_engine(spec, weights, "onnx", sha),
                   "int8": load_int8_engine(spec, weights, sha, calibration, pixels_of)}
        # fp32 also without local features: the pipeline's own share of the ceiling, apart
        # from what re-framed (#8) adds to every photo.
        runs = {"fp32": ("fp32", True), "fp32, no local features": ("fp32", False),
                "int8": ("int8", True)}
        ceilings: dict[str, list[float]] = {"fp32": [], "int8": []}
        ends: dict[str, list[float]] = {label: [] for label in runs}
        for k in range(args.repeat):  # interleaved: this machine's speed drifts
            for name, engine in engines.items():
                ceilings[name].append(alone(engine, spec))
            for label, (name, local) in runs.items():
                engine = engines[name]
                start = time.perf_counter()
                build_index([export], work / f"i-{label}-{k}", spec, weights,
                            engine_loader=lambda s, w, e=engine: e, local_features=local)
                ends[label].append(len(files) / (time.perf_counter() - start))
        rows = {label: {"model_alone_img_s": statistics.median(ceilings[name]),
                        "index_img_s": statistics.median(ends[label]),
                        "local_features": local} for label, (name, local) in runs.items()}
        for r in rows.values():
            r["index_vs_ceiling"] = r["index_img_s"] / r["model_alone_img_s"]
        doc["speed"] = rows
        table(f"1-2. ResNet-50 on ONNX Runtime, {len(files)} photos as an export holds them "
              f"(median of {args.repeat}, interleaved)",
              ["index", "model alone img/s", "index end to end img/s", "index/ceiling"],
              [[n, f"{r['model_alone_img_s']:.1f}", f"{r['index_img_s']:.1f}",
                f"{r['index_vs_ceiling']:.0%}"] for n, r in rows.items()])
        print(f"   int8 vs fp32: model alone {rows['int8']['model_alone_img_s'] / rows['fp32']['model_alone_img_s']:.2f}x, "  # noqa: E501
              f"index {rows['int8']['index_img_s'] / rows['fp32']['index_img_s']:.2f}x")
        summary = build_index([export], work / "gate", spec, weights, engine="onnx",
                              precision="int8")
        doc["gate"] = {"fidelity": summary.int8_fidelity, "precision": summary.precision,
                       "note": summary.precision_note}
        f = summary.int8_fidelity or {}
        table("3. the int8 fidelity gate on these photos (random weights)",
              ["photos", "lowest cosine", "same nearest neighbour", "index built at"],
              [[f.get("photos"), f"{f.get('min_cosine', 0):.4f}",
                f"{f.get('top1_agreement', 0):.1%}", summary.precision]])
        if summary.precision_note:
            print(f"   {summary.precision_note}")
        doc["cpu_per_photo"] = cpu_per_step(files, spec, engines["fp32"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return save(doc, args.out)


if __name__ == "__main__":
    sys.exit(main())
