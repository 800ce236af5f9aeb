"""Benchmark of the `re-framed` evidence, side by side in one run; prints tables, writes JSON.

    python scripts/bench_reframed.py [--photos ../shared/data/photos] [--runs 5]
                                     [--out bench-reframed.json]

1. Quality on re-edits of real photos (off-centre crops keeping 55-85% of each side,
   2-5 degree straightening, grades, black and white, combinations), embedding off
   (--threshold 1.0): found at rank 1 with the right archive photo, and never-posted
   photos flagged, with local features and without (PDQ alone), for each part of the set
   (tests/helpers.py: reedit_split; the rule was set on the two tuning parts only).
   1b. The held-back part again among 10,000 archive photos: the shortlist a large
   index stores (FAISS IVF-PQ) instead of the exact one a small index builds.
2. Cost of `index` end to end (ResNet-50, ONNX, random weights) with and without local
   features, each in a fresh process: back-to-back pairs, the median of their ratios in
   wall time and in CPU time; disk per photo.
3. Cold `check` of one photo, fresh process, 10,000-photo index with and without local
   features; the shortlist's size, and what it would be at 100,000 photos.
4. Where `index` time goes: CPU per photo of local features against the ONNX model's.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from unittest.mock import patch

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "scripts"))

from bench import (  # noqa: E402
    byte_compile,
    random_weights,
    run_measured,
    save,
    synthetic_index,
    table,
    workspace,
)

from dupecheck import localfeatures as lf  # noqa: E402
from dupecheck import store  # noqa: E402
from dupecheck.engines import MODELS, load_engine  # noqa: E402
from dupecheck.imaging import decode  # noqa: E402
from dupecheck.indexer import build_index  # noqa: E402
from dupecheck.search import check_photos  # noqa: E402
from dupecheck.store import LocalArrays, open_index, write_index  # noqa: E402
from helpers import form_cases, instagramify, reedit_cases, reedit_split  # noqa: E402

# The library reads these constants at call time for exactly these comparisons; each
# context manager sets them for a block (unittest.mock restores them after).


def archive_side(side: int) -> AbstractContextManager[object]:
    """Archive features taken at `side`."""
    return patch.object(lf, "ARCHIVE_FEATURE_SIDE", side)


def sift_layers(layers: int) -> AbstractContextManager[object]:
    """SIFT with `layers` per octave (contrast threshold scaled as the library scales it),
    for archive and checked photos alike."""
    return patch.multiple(lf, SIFT_OCTAVE_LAYERS=layers, SIFT_CONTRAST=0.04 * layers / 3)


@contextmanager
def archive_features(count: int) -> Iterator[None]:
    """Archive photos keep their `count` strongest features (the stored width changes with
    it, so the store's copy too; checked photos keep CANDIDATE_FEATURES)."""
    with patch.object(lf, "LOCAL_FEATURES", count), patch.object(store, "LOCAL_FEATURES",
                                                                 count):
        yield


def reedit_set(photos_dir: Path, work: Path, part: str, name: str, make=reedit_cases
               ) -> tuple[list[Path], Path, list, list[Path]]:
    """One part of the re-edit set on disk: its posted photos as Instagram posts them (a
    folder to index) and every case `make` makes of them (the re-edits; with
    helpers.form_cases, every form) as a file to check."""
    posted, never, seed = reedit_split(list(photos_dir.iterdir()), part)
    folder = work / f"export-{name}"
    folder.mkdir()
    for i, path in enumerate(posted):
        (folder / f"{i:03d}.jpg").write_bytes(instagramify(path.read_bytes()))
    cases = make(posted, never, seed)
    paths = []
    for n, (_, _, data) in enumerate(cases):
        suffix = "png" if data.startswith(b"\x89PNG") else "jpg"
        paths.append(work / f"{name}-case-{n:03d}.{suffix}")
        paths[-1].write_bytes(data)
    return posted, folder, cases, paths


def score(cases: list, results: list) -> dict[str, object]:
    """Re-edits found at rank 1 with their own archive photo, never-posted photos flagged."""
    found = flagged = 0
    by_edit: dict[str, list[int]] = {}
    inliers = []
    for (own, name, _), res in zip(cases, results, strict=True):
        if own is None:
            flagged += res.verdict != "new"
            continue
        hit = res.verdict != "new" and res.matches[0].photo.path.endswith(f"{own:03d}.jpg")
        found += hit
        by_edit.setdefault(name, []).append(int(hit))
        if res.matches and res.matches[0].inliers:
            inliers.append(res.matches[0].inliers)
    return {"found": found, "flagged": flagged,
            "by_edit": {k: f"{sum(v)}/{len(v)}" for k, v in by_edit.items()},
            "median_inliers_of_found": statistics.median(inliers) if inliers else 0}


def other_descriptors(features: lf.LocalFeatures, variant: int) -> lf.LocalFeatures:
    """Other plausible SIFT descriptors at the same points (orientation bins rolled, the
    4x4 cells flipped, transposed or shifted): distinct rows for a large synthetic index,
    1,024 variants of each photo before one repeats. Variant 0 is the photo's own."""
    if not 0 <= variant < 1024:
        raise ValueError(f"variant {variant}: only 1,024 are distinct")
    cells = features.descriptors.reshape(-1, 4, 4, 8)
    cells = np.roll(cells, variant % 8, axis=3)
    if variant // 8 % 2:
        cells = cells[:, :, ::-1]
    if variant // 16 % 2:
        cells = cells[:, ::-1]
    if variant // 32 % 2:
        cells = cells.transpose(0, 2, 1, 3)
    cells = np.roll(cells, (variant // 64 % 4, variant // 256 % 4), axis=(1, 2))
    return lf.LocalFeatures(features.points, np.ascontiguousarray(cells.reshape(-1, 128)),
                            features.size)


def distractor(real: list[lf.LocalFeatures], i: int) -> lf.LocalFeatures:
    """The i-th other archive photo of a large synthetic index: one real photo's
    descriptors, turned (other_descriptors), at another real photo's keypoints. Turned
    descriptors alone would keep their photo's geometry, and some turns (cells rotated
    with their orientation bins) are the same patches seen from another orientation,
    which SIFT also gives: that would be the same photo again, not another one."""
    n = len(real)
    a, b = i % n, (i % n + 1 + (i // n) % (n - 1)) % n
    turned = other_descriptors(real[a], 1 + i // n)
    k = min(len(turned), len(real[b]))
    return lf.LocalFeatures(real[b].points[:k], turned.descriptors[:k], real[b].size)


def quality(photos_dir: Path, work: Path,
            parts: tuple[str, ...] = ("tuning", "tuning-2", "held-back"),
            sides: tuple[int, ...] | None = None,
            layers: tuple[int, ...] = (),
            configs: tuple[tuple[int, int], ...] = ()) -> list[dict[str, object]]:
    """Per part: PDQ alone, then re-framed with archive features taken at each side, at
    the first side with SIFT's other layer counts, and at each (side, archive features)
    of `configs`."""
    sides = sides or (lf.ARCHIVE_FEATURE_SIDE,)
    library = (lf.SIFT_OCTAVE_LAYERS, lf.LOCAL_FEATURES)
    runs = [(side, *library) for side in sides] + [
        (sides[0], n, library[1]) for n in layers if n != library[0]] + [
        (side, library[0], count) for side, count in configs]

    def key(side: int, n: int, count: int) -> str:
        return (f"with_local_{side}px" + ("" if n == library[0] else f"_{n}layers")
                + ("" if count == library[1] else f"_{count}features"))

    # Imported here, not at the top: scripts/bench_check.py runs check_cost with an older
    # dupecheck, whose store the test engine may not fit. Weight-free evidence: the
    # embedding is off in section 1.
    import tiny_engine

    rows = []
    weights = tiny_engine.write_weights(work / "tiny.npy")
    engine = load_engine(tiny_engine.TINY, weights)
    for part in parts:
        posted, folder, cases, paths = reedit_set(photos_dir, work, part, part)
        row: dict[str, object] = {"part": part, "posted": len(posted), "re_edits":
                                  sum(1 for c in cases if c[0] is not None),
                                  "never_posted": sum(1 for c in cases if c[0] is None)}
        for side, n, count in [(None, *library), *runs]:
            idx = work / f"idx-{part}-{side}-{n}-{count}"
            with (archive_side(side or lf.ARCHIVE_FEATURE_SIDE), sift_layers(n),
                  archive_features(count)):
                build_index([folder], idx, tiny_engine.TINY, weights,
                            local_features=side is not None)
                results = check_photos(paths, open_index(idx), tiny_engine.TINY, engine,
                                       1.0, 1)
            outcome = score(cases, results)
            if side is None:
                del outcome["median_inliers_of_found"]
                row["pdq_alone"] = outcome
            else:
                row[key(side, n, count)] = outcome
        row["with_local"] = row[key(*runs[0])]
        rows.append(row)
    heads = ["part", "re-edits", "PDQ alone"]
    for side, n, count in runs:
        heads += [f"re-framed, archive {side} px x {count}, {n} layers", "flagged"]
    table("1. re-edits found at rank 1 (embedding off), never-posted photos flagged "
          f"(checked photos' features at {lf.CANDIDATE_MAX_SIDE} px; SIFT layers per octave "
          "for archive and checked photos alike)",
          heads + ["never posted"],
          [[r["part"], r["re_edits"], r["pdq_alone"]["found"]]
           + [v for c in runs for v in (r[key(*c)]["found"], r[key(*c)]["flagged"])]
           + [r["never_posted"]] for r in rows])
    print(f"   per edit (held-back, archive {sides[0]} px):", rows[-1]["with_local"]["by_edit"])
    return rows


def forms_quality(photos_dir: Path, work: Path,
                  parts: tuple[str, ...] = ("tuning", "tuning-2", "held-back")
                  ) -> list[dict[str, object]]:
    """Per part: each form of the posted photos found at rank 1 with the right archive
    photo, and each form of the never-posted photos flagged (embedding off), with the
    evidence that found them."""
    import tiny_engine

    weights = tiny_engine.write_weights(work / "tiny-forms.npy")
    engine = load_engine(tiny_engine.TINY, weights)
    rows = []
    for part in parts:
        _, folder, cases, paths = reedit_set(photos_dir, work, part, f"forms-{part}",
                                             form_cases)
        idx = work / f"forms-idx-{part}"
        build_index([folder], idx, tiny_engine.TINY, weights)
        start = time.perf_counter()
        with second_looks_timed() as looks:
            results = check_photos(paths, open_index(idx), tiny_engine.TINY, engine, 1.0, 5)
        seconds = time.perf_counter() - start
        by_form: dict[str, dict[str, object]] = {}
        for (own, name, _), res in zip(cases, results, strict=True):
            entry = by_form.setdefault(name, {"found": 0, "posted": 0, "flagged": 0,
                                              "never": 0, "evidence": {}, "missed": []})
            if own is None:
                entry["never"] += 1
                entry["flagged"] += res.verdict != "new"
                continue
            entry["posted"] += 1
            top = res.matches[0] if res.matches else None
            hit = (res.verdict != "new" and top is not None and top.evidence is not None
                   and top.photo.path.endswith(f"{own:03d}.jpg"))
            entry["found"] += hit
            if hit:
                ev = top.evidence + (" mirrored" if top.transform and top.transform.mirrored
                                     else "")
                entry["evidence"][ev] = entry["evidence"].get(ev, 0) + 1
            else:
                entry["missed"].append({"case": own, "inliers": top.inliers if top else None,
                                        "verdict": res.verdict})
        rows.append({"part": part, "seconds": seconds, "checks": len(paths),
                     "by_form": by_form, "second_looks_ms": looks})
        table(f"1c. forms of the {part} part found at rank 1 (embedding off), never-posted "
              f"photos flagged ({len(paths)} checks in {seconds:.0f} s)",
              ["form", "found", "by", "flagged"],
              [[name, f"{e['found']}/{e['posted']}",
                ", ".join(f"{k} {v}" for k, v in sorted(e["evidence"].items())),
                f"{e['flagged']}/{e['never']}"] for name, e in by_form.items()])
        if looks:
            print(f"   second looks (the archive photo read, decoded, its region's and the "
                  f"checked photo's features taken, verified): {len(looks)} of "
                  f"{len(paths)} checks, median {statistics.median(looks):.0f} ms, "
                  f"max {max(looks):.0f} ms")
    return rows


@contextmanager
def second_looks_timed() -> Iterator[list[float]]:
    """The wall time of each second look that ran (Searcher._second_look when it read an
    archive photo), in ms."""
    from dupecheck import search

    times: list[float] = []
    second_look = search.Searcher._second_look
    archive_photo = search.Searcher._archive_photo
    read: list[int] = []

    def counting(self, row):  # type: ignore[no-untyped-def]
        read.append(row)
        return archive_photo(self, row)

    def timed(self, *args):  # type: ignore[no-untyped-def]
        before, start = len(read), time.perf_counter()
        second_look(self, *args)
        if len(read) > before:
            times.append(1000 * (time.perf_counter() - start))

    with patch.multiple(search.Searcher, _second_look=timed, _archive_photo=counting):
        yield times


def shortlist_probes(probes: int) -> AbstractContextManager[object]:
    """The stored shortlist opened with `probes` inverted lists searched per descriptor."""
    return patch.object(lf, "SHORTLIST_PROBES", probes)


def quality_at_scale(photos_dir: Path, work: Path, rows: int = 10_000,
                     part: str = "held-back", probes: tuple[int, ...] = ()
                     ) -> dict[str, object]:
    """Section 1 again with the part's 40 posted photos among `rows` archive photos, so
    that the shortlist is the stored FAISS IVF-PQ one a large index has (a 40-photo index
    searches every descriptor exactly): does it still put the right photo in front of
    RANSAC? The other rows are real photos' descriptors turned into other plausible SIFT
    descriptors at another photo's keypoints (`distractor`), random PDQ hashes and
    embeddings. With `probes`, the large index is also searched probing that many lists."""
    import tiny_engine
    from dupecheck.engines.weights import file_sha256
    from dupecheck.store import IndexedPhoto, ModelEntry

    _, folder, cases, paths = reedit_set(photos_dir, work, part, f"scale-{part}")
    weights = tiny_engine.write_weights(work / "tiny-scale.npy")
    engine = load_engine(tiny_engine.TINY, weights)
    small = work / "scale-small"
    build_index([folder], small, tiny_engine.TINY, weights)
    base = open_index(small)
    assert base.local is not None
    own = [base.local.features(r) for r in range(len(base.photos))]
    real = [lf.extract(decode(instagramify(p.read_bytes()), p.name,
                              draft=tiny_engine.TINY.archive_draft_size).image)
            for p in sorted(photos_dir.iterdir())]
    extra = rows - len(own)
    others = [distractor(real, i) for i in range(extra)]
    rng = np.random.default_rng(0)  # the other rows' PDQ hashes and embeddings
    photos = list(base.photos) + [
        IndexedPhoto(f"media/posts/other/{i}.jpg", "post", None, None, None, f"{i:064x}")
        for i in range(extra)]
    pdq = np.concatenate([base.pdq, rng.integers(0, 256, (extra, 32), dtype=np.uint8)])
    name = tiny_engine.TINY.name
    emb = rng.normal(size=(extra, tiny_engine.TINY.dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    matrix = np.concatenate([np.asarray(base.embeddings(name)), emb])
    entry = ModelEntry(name, tiny_engine.TINY.dim, file_sha256(weights),
                       str(weights.resolve()), tiny_engine.TINY.preprocessing)
    desc, points, meta = lf.pack(own + others)
    start = time.perf_counter()
    shortlist = lf.build_shortlist(desc, meta)
    build_s = time.perf_counter() - start
    assert shortlist is not None, "not large enough for a stored shortlist"
    large = work / "scale-large"
    write_index(large, photos, pdq, {name: (entry, matrix)}, base.archives,
                LocalArrays(desc, points, meta, shortlist))
    outcome = {}
    runs = [(f"{len(own)} photos (exact shortlist)", small, lf.SHORTLIST_PROBES),
            (f"{rows:,} photos (stored IVF-PQ shortlist)", large, lf.SHORTLIST_PROBES)] + [
        (f"{rows:,} photos (stored IVF-PQ shortlist, {n} lists probed)", large, n)
        for n in probes if n != lf.SHORTLIST_PROBES]
    for label, idx, n in runs:
        with shortlist_probes(n):
            results = check_photos(paths, open_index(idx), tiny_engine.TINY, engine, 1.0, 1)
        outcome[label] = score(cases, results)
    table(f"1b. the {part} part among {rows:,} archive photos (embedding off; the shortlist "
          f"built in {build_s:.1f} s)", ["archive", "re-edits found at rank 1", "flagged",
                                         "median agreeing keypoints"],
          [[k, v["found"], v["flagged"], v["median_inliers_of_found"]]
           for k, v in outcome.items()])
    return {"part": part, "rows": rows, "shortlist_build_s": build_s, **outcome}


def export_like(photos_dir: Path, work: Path) -> Path:
    """The same photos as an export holds them: 1080 px wide at most, 4:5 when taller,
    re-encoded JPEG (what `index` really reads)."""
    folder = work / "export-like"
    folder.mkdir(exist_ok=True)
    for i, path in enumerate(sorted(photos_dir.iterdir())):
        (folder / f"{i:03d}.jpg").write_bytes(instagramify(path.read_bytes()))
    return folder


def index_cost(photos_dir: Path, work: Path, repeat: int) -> list[dict[str, object]]:
    export = export_like(photos_dir, work)
    return [_index_cost(export, work, repeat, "export (1080 px JPEGs)"),
            _index_cost(photos_dir, work, repeat, "camera originals (2048 px, HEIC)")]


_INDEX = ("import sys; from pathlib import Path; from dupecheck.engines import MODELS; "
          "from dupecheck.indexer import build_index; "
          "build_index([Path(sys.argv[1])], Path(sys.argv[2]), MODELS['resnet50'], "
          "Path(sys.argv[3]), engine='onnx', local_features=sys.argv[4] == '1')")


def _index_cost(photos_dir: Path, work: Path, repeat: int, label: str) -> dict[str, object]:
    """Each repeat indexes without and with local features back to back (the order
    alternating), each in a fresh process as `dupecheck index` runs (imports and the
    model's load included; the sources byte-compiled as pip installs them), so that the
    ratio of each pair shares its minute of this machine's drifting speed; the figure is
    the median of those ratios."""
    weights = work / "resnet50-random.safetensors"
    if not weights.exists():
        random_weights("resnet50", work)
    load_engine(MODELS["resnet50"], weights, "onnx")  # the ONNX export and its optimization
    byte_compile(REPO / "src")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    times: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for k in range(repeat):
        for local in ((False, True) if k % 2 == 0 else (True, False)):
            idx = work / f"cost-{photos_dir.name}-{local}-{k}"
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", _INDEX, str(photos_dir), str(idx),
                            str(weights), "1" if local else "0"], env=env, check=True)
            times[local].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[local].append(after.ru_utime - before.ru_utime
                              + after.ru_stime - before.ru_stime)
    index = open_index(work / f"cost-{photos_dir.name}-True-{repeat - 1}")
    n = len(index.photos)
    gen = index.root / index.generation
    local_bytes = sum((gen / name).stat().st_size for name in index.checksums.sha256
                      if name.startswith("local-"))
    without, with_ = statistics.median(times[False]), statistics.median(times[True])
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    ratio = statistics.median(ratios)
    # CPU seconds of each process too (both cores counted): `index` keeps both cores busy,
    # so this ratio is the cost in work, and it shows when a pair's wall time was a slow
    # minute of this VM rather than the features.
    cpu_ratios = [a / b for a, b in zip(cpu[True], cpu[False], strict=True)]
    result = {"folder": label, "photos": n, "without_s": without, "with_s": with_,
              "pair_ratios": ratios, "slower": ratio - 1,
              "cpu_without_s": statistics.median(cpu[False]),
              "cpu_with_s": statistics.median(cpu[True]),
              "cpu_pair_ratios": cpu_ratios, "cpu_ratio": statistics.median(cpu_ratios),
              "local_bytes_per_photo": local_bytes / n}
    table(f"2. `index` end to end, {n} photos, {label}, resnet50 onnx (fresh processes, "
          f"median of {repeat} back-to-back pairs)",
          ["local features", "seconds", "img/s", "CPU seconds"],
          [["off", f"{without:.1f}", f"{n / without:.1f}", f"{result['cpu_without_s']:.1f}"],
           ["on", f"{with_:.1f}", f"{n / with_:.1f}", f"{result['cpu_with_s']:.1f}"]])
    print(f"   on/off: {ratio:.2f}x ({result['slower']:+.0%}; the pairs: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); in CPU time {result['cpu_ratio']:.2f}x "
          f"(the pairs: {', '.join(f'{r:.2f}' for r in cpu_ratios)}); local features on "
          f"disk: {local_bytes / n / 1024:.1f} KB per photo")
    return result


def check_cost(photos_dir: Path, work: Path, runs: int, rows: int = 10_000,
               leave_out: tuple[str, ...] = ()) -> dict[str, object]:
    """`leave_out`: photos (file names) whose features the index does not hold, so that
    checking them is the worst case, a photo that is new: every look runs."""
    spec = MODELS["resnet50"]
    weights = work / "resnet50-random.safetensors"
    plain, local_idx = work / "check-plain", work / "check-local"
    synthetic_index(plain, spec, weights, rows)
    base = open_index(plain)
    # Real photos' features; beyond the first copy of each photo, every row's descriptors
    # are turned into other plausible SIFT descriptors (orientation bins rolled, the 4x4
    # cells flipped) so that rows are distinct, as in a real archive.
    real = [lf.extract(decode(p.read_bytes(), p.name, draft=512).image)
            for p in sorted(photos_dir.iterdir()) if p.name not in leave_out]
    feats = [other_descriptors(real[i % len(real)], i // len(real)) for i in range(rows)]
    desc, points, meta = lf.pack(feats)
    start = time.perf_counter()
    shortlist = lf.build_shortlist(desc, meta)
    build_s = time.perf_counter() - start
    write_index(local_idx, base.photos, base.pdq,
                {n: (e, np.asarray(base.embeddings(n))) for n, e in base.models.items()},
                base.archives, LocalArrays(desc, points, meta, shortlist))
    photo = next(p for p in sorted(photos_dir.iterdir()) if p.suffix.lower() == ".jpg")
    medians = {}
    rss = {}
    # Byte-compiled: else the modules only local features import would be compiled at
    # every check and counted against them.
    byte_compile(REPO / "src")
    for _name, idx in (("without", plain), ("with", local_idx)):
        env = {**os.environ, "DUPECHECK_INDEX": str(idx), "PYTHONPATH": str(REPO / "src")}
        cmd = ["check", str(photo), "--quiet", "--engine", "onnx", "--threshold", "1.0"]
        run_measured(cmd, env)
    times: dict[str, list[float]] = {"without": [], "with": []}
    peaks: dict[str, list[int]] = {"without": [], "with": []}
    for _ in range(runs):  # interleaved: this machine's speed drifts between minutes
        for name, idx in (("without", plain), ("with", local_idx)):
            env = {**os.environ, "DUPECHECK_INDEX": str(idx), "PYTHONPATH": str(REPO / "src")}
            wall, code, peak = run_measured(["check", str(photo), "--quiet", "--engine",
                                             "onnx", "--threshold", "1.0"], env)
            assert code in (0, 1), code
            times[name].append(wall)
            peaks[name].append(peak)
    for name in times:
        medians[name] = statistics.median(times[name])
        rss[name] = max(peaks[name])
    stored = shortlist.nbytes if shortlist is not None else 0  # none: exact, built on open
    per_photo = stored / rows
    result = {"rows": rows, "without_s": medians["without"], "with_s": medians["with"],
              "slower_ms": 1000 * (medians["with"] - medians["without"]),
              "ratio": medians["with"] / medians["without"],
              # Each run's wall time, in order, for pooling runs of the same code.
              "times_s": times,
              "pair_differences_ms": [1000 * (b - a) for a, b in
                                      zip(times["without"], times["with"], strict=True)],
              "peak_rss_mb": rss, "shortlist_bytes": int(stored),
              "shortlist_build_s": build_s,
              "shortlist_at_100k_mb_estimate": per_photo * 100_000 / 2**20}
    table(f"3. cold `check` of one JPEG, fresh process, {rows:,}-photo index ({runs} runs, "
          "interleaved)", ["local features", "median s", "peak RSS MB"],
          [["without", f"{medians['without']:.2f}", rss["without"]],
           ["with", f"{medians['with']:.2f}", rss["with"]]])
    print(f"   with - without: {result['slower_ms']:+.0f} ms ({result['ratio']:.2f}x; median of "
          f"the run-by-run differences "
          f"{statistics.median(result['pair_differences_ms']):+.0f} ms); shortlist (IVF-PQ) "
          f"{stored / 2**20:.0f} MB, built in {build_s:.1f} s; at 100,000 photos "
          f"~{result['shortlist_at_100k_mb_estimate']:.0f} MB (linear in photos)")
    return result


def cpu_per_photo(photos_dir: Path, work: Path) -> dict[str, float]:
    """CPU seconds per export-like photo: SIFT at each size, and ResNet-50 on ONNX."""
    export = work / "export-like"
    if not export.exists():
        export = export_like(photos_dir, work)
    spec = MODELS["resnet50"]
    weights = work / "resnet50-random.safetensors"
    if not weights.exists():
        random_weights("resnet50", work)
    images = [decode(p.read_bytes(), p.name, draft=spec.archive_draft_size).image
              for p in sorted(export.iterdir())]
    result: dict[str, float] = {}
    sides = sorted({lf.LOCAL_MAX_SIDE, lf.CANDIDATE_MAX_SIDE, lf.ARCHIVE_FEATURE_SIDE},
                   reverse=True)
    runs: dict[str, list[float]] = {}
    for _ in range(3):  # interleaved, medians: this machine's speed drifts
        for side, layers in [(s, lf.SIFT_OCTAVE_LAYERS) for s in sides] + [
                (lf.ARCHIVE_FEATURE_SIDE, 3)]:
            name = f"local_features_{side}px_cpu_ms" + (
                "" if layers == lf.SIFT_OCTAVE_LAYERS else f"_{layers}_layers")
            with sift_layers(layers):
                lf.extract(images[0], side)  # warm-up
                start = time.process_time()
                for img in images:
                    lf.extract(img, side)
            runs.setdefault(name, []).append(
                1000 * (time.process_time() - start) / len(images))
    result.update({name: statistics.median(v) for name, v in runs.items()})
    engine = load_engine(spec, weights, "onnx")
    pixels = np.stack([spec.to_input(img) for img in images[:spec.batch_size]])
    engine.embed_batch(pixels)
    start = time.process_time()
    for _ in range(3):
        engine.embed_batch(pixels)
    result["resnet50_onnx_cpu_ms"] = 1000 * (time.process_time() - start) / (3 * len(pixels))
    table("4. CPU per photo at `index` (export-like photos, both cores counted)",
          ["what", "CPU ms per photo"], [[k, f"{v:.1f}"] for k, v in result.items()])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--out", type=Path, default=REPO / "bench-reframed.json")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sides", default="",
                        help="comma list of archive feature sides compared in section 1 "
                             "(the first is the one reported as 'with re-framed')")
    parser.add_argument("--layers", default="",
                        help="comma list of SIFT layers per octave also run in section 1, "
                             "at the first side (the library's own is always run)")
    parser.add_argument("--configs", default="",
                        help="comma list of SIDE/FEATURES (archive feature side and "
                             "features kept per archive photo) also run in section 1")
    parser.add_argument("--parts", default="tuning,tuning-2,held-back",
                        help="comma list of the re-edit set's parts run in section 1")
    parser.add_argument("--forms-parts", default="tuning,tuning-2,held-back",
                        help="comma list of the parts whose forms section 1c checks")
    parser.add_argument("--scale-part", default="held-back",
                        help="the re-edit set's part run among 10,000 photos (section 1b)")
    parser.add_argument("--probes", default="",
                        help="comma list of inverted lists probed per descriptor also run "
                             "in section 1b")
    parser.add_argument("--skip", default="",
                        help="comma list of: quality,forms,scale,index,check,cpu")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work, doc = workspace("bench-reframed")
    try:
        if "quality" not in skip:
            doc["quality"] = quality(args.photos, work, sides=tuple(
                int(v) for v in args.sides.split(",") if v), layers=tuple(
                int(v) for v in args.layers.split(",") if v), configs=tuple(
                (int(c.split("/")[0]), int(c.split("/")[1]))
                for c in args.configs.split(",") if c), parts=tuple(
                p for p in args.parts.split(",") if p))
        if "forms" not in skip:
            doc["forms"] = forms_quality(args.photos, work, parts=tuple(
                p for p in args.forms_parts.split(",") if p))
        if "scale" not in skip:
            doc["quality_at_scale"] = quality_at_scale(
                args.photos, work, part=args.scale_part,
                probes=tuple(int(v) for v in args.probes.split(",") if v))
        if "index" not in skip:
            doc["index"] = index_cost(args.photos, work, args.repeat)
        if "check" not in skip:
            if not (work / "resnet50-random.safetensors").exists():
                random_weights("resnet50", work)
            doc["check"] = check_cost(args.photos, work, args.runs)
        if "cpu" not in skip:
            doc["cpu_per_photo"] = cpu_per_photo(args.photos, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return save(doc, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
