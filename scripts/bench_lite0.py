"""EfficientNet-Lite0 (trained weights) against what dupecheck decides today, in one run.

    python scripts/bench_lite0.py [--photos ../shared/data/photos] [--out bench-lite0.json]

1. Parity: the ONNX graph built from the arrays (no torch) against PyPI's
   efficientnet-lite-pytorch on real photos: cosine per photo.
2. Embedding throughput on ONNX Runtime, lite0 against resnet50 (random weights: the same
   arithmetic as real ones), batch 16 and batch 1, interleaved, median of runs.
3. `calibrate` on the tuning part's archive (its 40 posted photos as Instagram posts
   them, 40 sampled): the recommended threshold.
4. With that threshold, per part (tuning, held-back): re-edits and every form of the
   posted photos checked against an index of them (local features on, as `index` makes
   it), and the never-posted photos' edits and forms: found by `similar` alone (the best
   cosine listed is the photo's own, at or over the threshold), flagged by `similar`
   alone; and with every evidence on, against the embedding off (--threshold 1.0: what
   dupecheck found on random weights): found, lost, flagged.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from bench import random_weights, save, table, workspace  # noqa: E402
from bench_reframed import reedit_set  # noqa: E402

from dupecheck.calibrate import calibrate  # noqa: E402
from dupecheck.engines import MODELS, load_engine  # noqa: E402
from dupecheck.engines.weights import resolve_weights  # noqa: E402
from dupecheck.imaging import decode  # noqa: E402
from dupecheck.indexer import build_index  # noqa: E402
from dupecheck.search import check_photos  # noqa: E402
from dupecheck.store import open_index  # noqa: E402
from helpers import form_cases, reedit_cases  # noqa: E402

LITE0 = MODELS["efficientnet-lite0"]


def parity(photos: list[Path], weights: Path) -> dict[str, object]:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    pixels = np.stack([LITE0.to_input(decode(p.read_bytes(), p.name).image) for p in photos])
    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(weights)).eval()
    with torch.inference_mode():
        theirs = ref.extract_features(torch.from_numpy(pixels)).mean(dim=(2, 3)).numpy()
    theirs /= np.linalg.norm(theirs, axis=1, keepdims=True)
    ours = load_engine(LITE0, weights, "onnx").embed_batch(pixels)
    cos = (ours * theirs).sum(axis=1)
    doc = {"photos": len(photos), "min_cosine": float(cos.min()),
           "median_cosine": float(np.median(cos))}
    table("1. parity: the graph built without torch vs efficientnet-lite-pytorch",
          ["photos", "min cosine", "median cosine"],
          [[len(photos), f"{cos.min():.7f}", f"{np.median(cos):.7f}"]])
    return doc


def throughput(work: Path, lite0_weights: Path, runs: int = 7) -> list[dict[str, object]]:
    r50 = MODELS["resnet50"]
    engines = {"efficientnet-lite0": (LITE0, load_engine(LITE0, lite0_weights, "onnx")),
               "resnet50": (r50, load_engine(r50, random_weights("resnet50", work), "onnx"))}
    rows = []
    for batch in (16, 1):
        times: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(runs):  # interleaved
            for name, (spec, engine) in engines.items():
                x = np.random.default_rng(0).standard_normal(
                    (batch, 3, spec.crop, spec.crop)).astype(np.float32)
                engine.embed_batch(x)  # warm
                start = time.perf_counter()
                engine.embed_batch(x)
                times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"batch": batch, **{f"{k}_img_s": batch / v for k, v in med.items()},
                     "ratio": med["resnet50"] / med["efficientnet-lite0"]})
    table("2. embedding throughput, ONNX Runtime (images/s, median of interleaved runs)",
          ["batch", "efficientnet-lite0", "resnet50", "lite0 / resnet50"],
          [[r["batch"], f"{r['efficientnet-lite0_img_s']:.1f}", f"{r['resnet50_img_s']:.1f}",
            f"{r['ratio']:.2f}x"] for r in rows])
    return rows


def _outcome(cases: list, results: list, threshold: float) -> dict[str, dict[str, int]]:
    """Per edit or form: similar alone found / flagged, every evidence found / flagged."""
    out: dict[str, dict[str, int]] = {}
    for (own, name, _), res in zip(cases, results, strict=True):
        e = out.setdefault(name, {"posted": 0, "never": 0, "similar_found": 0,
                                  "similar_flagged": 0, "found": 0, "flagged": 0})
        best = max(res.matches, key=lambda m: m.score, default=None)
        similar = best is not None and best.score >= threshold
        if own is None:
            e["never"] += 1
            e["similar_flagged"] += similar
            e["flagged"] += res.verdict not in (None, "new")
            continue
        e["posted"] += 1
        e["similar_found"] += similar and best.photo.path.endswith(f"{own:03d}.jpg")
        top = res.matches[0] if res.matches else None
        e["found"] += (res.verdict not in (None, "new") and top is not None
                       and top.photo.path.endswith(f"{own:03d}.jpg"))
    return out


def parts(photos_dir: Path, work: Path, weights: Path, threshold: float,
          names: tuple[str, ...]) -> list[dict[str, object]]:
    engine = load_engine(LITE0, weights, "onnx")
    rows = []
    for part in names:
        for kind, make in (("re-edits", reedit_cases), ("forms", form_cases)):
            label = f"{kind}-{part}"
            _, folder, cases, paths = reedit_set(photos_dir, work, part, label, make)
            idx = work / f"idx-{label}"
            build_index([folder], idx, LITE0, weights)
            index = open_index(idx)
            on = _outcome(cases, check_photos(paths, index, LITE0, engine, threshold, 10),
                          threshold)
            off = _outcome(cases, check_photos(paths, index, LITE0, engine, 1.0, 10), 1.0)
            for name, e in on.items():
                e["found_embedding_off"] = off[name]["found"]
                e["flagged_embedding_off"] = off[name]["flagged"]
            rows.append({"part": part, "kind": kind, "by": on})
            table(f"4. {kind} of the {part} part at threshold {threshold:g}",
                  ["edit or form", "similar alone", "flagged by similar", "every evidence",
                   "embedding off", "flagged", "flagged, embedding off"],
                  [[n, f"{e['similar_found']}/{e['posted']}",
                    f"{e['similar_flagged']}/{e['never']}", f"{e['found']}/{e['posted']}",
                    f"{e['found_embedding_off']}/{e['posted']}", f"{e['flagged']}/{e['never']}",
                    f"{e['flagged_embedding_off']}/{e['never']}"] for n, e in on.items()])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--out", type=Path, default=REPO / "bench-lite0.json")
    parser.add_argument("--parts", default="tuning,held-back")
    parser.add_argument("--sample", type=int, default=40)
    args = parser.parse_args()
    work, doc = workspace("lite0")
    weights = resolve_weights(LITE0, download=False)
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    doc["parity"] = parity(photos[:20], weights)
    doc["throughput"] = throughput(work, weights)
    _, folder, _, _ = reedit_set(args.photos, work, "tuning", "calibrate", lambda *a: [])
    build_index([folder], work / "idx-calibrate", LITE0, weights)
    start = time.perf_counter()
    cal = calibrate(open_index(work / "idx-calibrate"), LITE0,
                    load_engine(LITE0, weights, "onnx"), sample=args.sample)
    neg = np.array(cal.negatives)
    doc["calibrate"] = {**cal.document(), "seconds": time.perf_counter() - start,
                        "highest_negative": float(neg.max())}
    row = next(r for r in cal.table if r.threshold == cal.recommended)
    table("3. calibrate on the tuning part's archive", ["sampled", "recommended", "precision",
                                                        "recall", "highest negative"],
          [[cal.sampled, cal.recommended, f"{row.precision:.3f}", f"{row.recall:.3f}",
            f"{neg.max():.3f}"]])
    doc["parts"] = parts(args.photos, work, weights, float(cal.recommended),
                         tuple(args.parts.split(",")))
    return save(doc, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
