"""What the embedding decides, on a trained network (EfficientNet-Lite0's ImageNet weights,
which the test extra installs): calibrate's threshold, `similar`, `stats`, `dupes`, the int8
gate, the phone copy's encoding and the map's motif names. Random weights put every photo
within 0.999 of every other, where none of these decisions means anything.

The archive: every other JPEG of tests/photos as Instagram posts it (15); the others (14)
were never posted. Re-edits are calibrate.REEDITS made from the originals (helpers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dupecheck.engines import MODELS, embed_images, load_engine
from dupecheck.imaging import crop_variants, decode
from dupecheck.search import check_photos
from dupecheck.store import open_index
from helpers import PHOTOS, instagramify, reedit_cases

pytestmark = pytest.mark.slow
SPEC = MODELS["efficientnet-lite0"]
NAME = SPEC.name


@pytest.fixture(scope="module")
def archive(tmp_path_factory, lite0_weights):
    """(index folder, posted, never posted, calibration document): indexed and
    calibrated through the CLI, as a person would (calibrate keeps its threshold)."""
    from typer.testing import CliRunner

    from dupecheck.cli import app

    work = tmp_path_factory.mktemp("real")
    photos = sorted(PHOTOS.glob("jpg__*"))
    posted, never = photos[::2], photos[1::2]
    export = work / "export"
    export.mkdir()
    for i, path in enumerate(posted):
        (export / f"{i:03d}.jpg").write_bytes(instagramify(path.read_bytes()))
    idx = work / "idx"
    run = CliRunner().invoke
    result = run(app, ["index", str(export), "--index", str(idx), "--model", NAME, "--quiet"])
    assert result.exit_code == 0, result.output
    result = run(app, ["calibrate", "--index", str(idx), "--sample", "8", "--json"])
    assert result.exit_code == 0, result.output
    return idx, posted, never, json.loads(result.stdout)


@pytest.fixture(scope="module")
def cases(archive):
    _, posted, never, _ = archive
    return reedit_cases(posted, never, seed=5, per_posted=2, per_never=2)


@pytest.fixture(scope="module")
def checked(archive, cases, lite0_weights, tmp_path_factory):
    """Every case checked as the phone checks offline (exact, PDQ and the embedding: no
    local features), at the kept threshold and with the embedding off."""
    from dupecheck.indexer import build_index

    idx, _, _, doc = archive
    folder = tmp_path_factory.mktemp("cases")
    paths = []
    for n, (_, _, data) in enumerate(cases):
        paths.append(folder / f"case-{n:03d}.jpg")
        paths[-1].write_bytes(data)
    build_index([idx.parent / "export"], folder / "idx", SPEC, lite0_weights,
                local_features=False)
    index = open_index(folder / "idx")
    engine = load_engine(SPEC, lite0_weights)
    threshold = doc["saved"][NAME]
    return (check_photos(paths, index, SPEC, engine, threshold, 5),
            check_photos(paths, index, SPEC, engine, 1.0, 5))


def _own(match, own: int) -> bool:
    return match.photo.path.endswith(f"{own:03d}.jpg")


def test_calibrate_keeps_a_threshold_that_finds_reedits_and_flags_no_new_photo(archive, cases,
                                                                               lite0_weights):
    """Recall by the embedding alone at the recommended threshold: >= 90% of the re-edits
    (measured: 28 of 30), and not one never-posted photo's edit over it."""
    idx, _, _, doc = archive
    recommended = doc["models"][0]["recommended"]
    assert doc["saved"][NAME] == recommended == open_index(idx).models[NAME].threshold
    # far below random weights' 0.999; 8 photos alone reach 99% precision at 0.50 here,
    # where 2 of 28 never-posted edits score 0.50-0.54: the model's floor holds
    assert SPEC.min_threshold <= recommended < 0.9
    matrix = np.asarray(open_index(idx).embeddings(NAME))
    engine = load_engine(SPEC, lite0_weights)
    found = flagged = posted = 0
    for own, _, data in cases:
        image = decode(data, "case.jpg").image
        variants = [v for _, v in crop_variants(image)]
        vectors = embed_images(engine, np.stack([SPEC.to_input(v) for v in variants]))
        best = (matrix @ vectors.T).max(axis=1)
        if own is None:
            flagged += best.max() >= recommended
        else:
            posted += 1
            found += best.argmax() == own and best[own] >= recommended
    assert flagged == 0
    assert found >= 0.9 * posted, (found, posted)


def test_similar_finds_reedits_that_pdq_misses_where_re_framed_cannot_run(checked, cases):
    """On the phone offline (no local features) the embedding is what finds a re-edit."""
    on, off = checked
    only_similar = [i for i, ((own, _, _), a, b) in enumerate(zip(cases, on, off, strict=True))
                    if own is not None and a.verdict == "similar" and _own(a.matches[0], own)
                    and b.verdict == "new"]
    assert len(only_similar) >= 10, only_similar
    never_flagged = [r.verdict for (own, _, _), r in zip(cases, on, strict=True)
                     if own is None and r.verdict != "new"]
    assert never_flagged == []


def test_check_uses_the_kept_threshold(archive, cases, tmp_path, cli):
    idx, _, _, doc = archive
    photo = tmp_path / "x.jpg"
    photo.write_bytes(cases[0][2])
    result = cli("check", photo, "--index", idx, "--json", code=1)
    assert json.loads(result.stdout)["threshold"] == doc["saved"][NAME]


@pytest.fixture(scope="module")
def archive_with_reposts(tmp_path_factory, lite0_weights):
    """An archive that holds three of its photos twice: once as posted, once re-edited
    (an off-centre crop and a grade, which PDQ does not see as the same)."""
    import random

    from dupecheck.calibrate import reedit
    from dupecheck.indexer import build_index

    work = tmp_path_factory.mktemp("reposts")
    photos = sorted(PHOTOS.glob("jpg__*"))[:12]
    export = work / "export"
    export.mkdir()
    rng = random.Random(7)
    for i, path in enumerate(photos):
        (export / f"{i:03d}.jpg").write_bytes(instagramify(path.read_bytes()))
    for i in (1, 4, 8):
        image = decode(photos[i].read_bytes(), photos[i].name).image
        (export / f"{i:03d}-again.jpg").write_bytes(instagramify(reedit(image, "crop + grade",
                                                                        rng)))
    build_index([export], work / "idx", SPEC, lite0_weights)
    return work / "idx"


def test_dupes_finds_the_archives_own_reposts_by_similar(archive_with_reposts):
    from dupecheck.analysis import find_duplicates

    index = open_index(archive_with_reposts)
    groups = find_duplicates(index, NAME, SPEC.default_threshold, reframed=False)
    names = sorted(sorted(Path(p.path).stem for p in g.photos) for g in groups)
    expected = [["001", "001-again"], ["004", "004-again"], ["008", "008-again"]]
    # measured: 004 and 008 (0.73, 0.76); 001's crop keeps too little of it (0.55)
    assert len(names) >= 2 and all(n in expected for n in names), names
    assert {g.evidence for g in groups} == {"similar"}


def test_stats_shows_reposts_apart_from_other_photos(archive_with_reposts, tmp_path, cli):
    """The seed's analysis: nearest-neighbour cosines of the re-posted photos over the
    threshold, every pair of different photos under it; the plot is written."""
    from dupecheck.analysis import similarity_stats

    index = open_index(archive_with_reposts)
    stats = similarity_stats(index, NAME, SPEC.default_threshold)
    reposted = [i for i, p in enumerate(index.photos) if Path(p.path).stem[:3] in
                ("004", "008")]
    others = [i for i, p in enumerate(index.photos) if Path(p.path).stem[:3] not in
              ("001", "004", "008")]
    assert (stats.nearest[reposted] >= SPEC.default_threshold).all()
    assert stats.nearest[others].max() < 0.5
    assert np.median(stats.pairs) < 0.3 and np.percentile(stats.pairs, 95) < 0.5
    plot = tmp_path / "stats.png"
    result = cli("stats", "--index", archive_with_reposts, "--plot", plot, "--json")
    doc = json.loads(result.stdout)["models"][0]
    assert doc["above_threshold"]["nearest_neighbour"] == 4 and plot.stat().st_size > 10_000


def test_the_int8_gate_decides_on_the_trained_network(tmp_path, lite0_weights, cli):
    """Kept or refused by its documented rule (every photo >= 0.99 cosine to fp32, 99% keep
    their nearest neighbour), with its figures; when kept, check runs the int8 model."""
    export = tmp_path / "export"
    export.mkdir()
    for path in sorted(PHOTOS.glob("jpg__*")):
        (export / path.name).write_bytes(instagramify(path.read_bytes()))
    result = cli("index", export, "--index", tmp_path / "idx", "--model", NAME,
                 "--precision", "int8", "--json")
    doc = json.loads(result.stdout)
    fidelity = doc["int8_fidelity"]
    # measured: refused, min cosine 0.82 (ResNet-50's random weights kept 0.99)
    assert fidelity["photos"] >= 16 and 0.0 < fidelity["min_cosine"] <= 1.0
    rule = fidelity["min_cosine"] >= 0.99 and fidelity["top1_agreement"] >= 0.99
    assert fidelity["passed"] == rule and doc["precision"] == ("int8" if rule else "fp32")
    entry = open_index(tmp_path / "idx").models[NAME]
    assert entry.precision == doc["precision"]


def test_the_phone_copy_is_encoded_on_trained_embeddings_and_ranks_as_the_cli(
        archive, cases, lite0_weights, tmp_path):
    """The copy's rows: every query's top row (re-edits and never-posted photos) the CLI's,
    and its bytes a photo (measured: int8-pca)."""
    from dupecheck.offline import PcaRows, build_copy, read_copy

    idx, _, _, doc = archive
    index = open_index(idx)
    copy = build_copy(index, SPEC, doc["saved"][NAME], {}, tmp_path / "copy.bin")
    header, sections = read_copy(copy.path.read_bytes())
    assert copy.encoding == header["embeddings_encoding"] == "int8-pca"
    dim, n, k = SPEC.dim, len(index), header["components"]
    rows = PcaRows(np.frombuffer(sections["mean"], "<f4"),
                   np.frombuffer(sections["basis"], "<f2").reshape(k, dim),
                   np.frombuffer(sections["coefficients"], "<f2").reshape(n, k),
                   np.frombuffer(sections["embeddings"], np.int8).reshape(n, dim),
                   np.frombuffer(sections["scales"], "<f4")).rows()
    matrix = np.asarray(index.embeddings(NAME))
    engine = load_engine(SPEC, lite0_weights)
    queries = embed_images(engine, np.stack([SPEC.to_input(decode(d, "q.jpg").image)
                                             for _, _, d in cases]))
    exact, phone = queries @ matrix.T, queries @ rows.T
    assert (exact.argmax(axis=1) == phone.argmax(axis=1)).all()
    assert np.abs(exact - phone).max() < 5e-3
    assert len(sections["embeddings"]) == n * dim  # one byte a dimension


def test_a_flower_photos_motif_names_a_flower(archive, lite0_weights):
    from dupecheck.engines.vocabulary import load_vocabulary
    from dupecheck.photomap import build_map

    idx, posted, _, _ = archive
    index = open_index(idx)
    daisy = posted.index(PHOTOS / "jpg__Canon_EOS_20D_(1).jpg")
    row = next(i for i, p in enumerate(index.photos) if p.path.endswith(f"{daisy:03d}.jpg"))
    archive_map = build_map(index, NAME, seed=0,
                            vocabulary=load_vocabulary(SPEC, lite0_weights))
    motif = next(m for m in archive_map.motifs if row in m.rows)
    # 15 photos make few, mixed motifs: the flower is among its motif's words
    assert "daisy" in motif.labels, motif


def test_the_phone_gets_lite0_for_its_offline_check(archive, lite0_weights, tmp_path):
    """An index of efficientnet-lite0 embeddings gives the phone that model (18.8 MB of
    weights, not ResNet-50's 98) and the copy its preprocessing."""
    from fastapi.testclient import TestClient

    from dupecheck.engines.onnx_engine import onnx_cache_path
    from dupecheck.engines.weights import file_sha256
    from dupecheck.offline import read_copy
    from dupecheck.service import ServiceState, create_app
    from dupecheck.tokens import TokenStore

    idx = archive[0]
    tokens = TokenStore(tmp_path / "config")
    token = {"Authorization": f"Bearer {tokens.create('phone')}"}
    state = ServiceState(idx, SPEC, load_engine(SPEC, lite0_weights, "onnx"),
                         file_sha256(lite0_weights), tokens)
    client = TestClient(create_app(state, hosts=("testserver",)))
    model = client.get("/api/offline/model", headers=token)
    assert model.status_code == 200
    assert model.content == onnx_cache_path(SPEC, file_sha256(lite0_weights)).read_bytes()
    assert len(model.content) < 25_000_000
    header, _ = read_copy(client.get("/api/offline", headers=token).content)
    assert header["input"] == {"resize": 256, "crop": 224, "mean": list(SPEC.mean),
                               "std": list(SPEC.std)}
    assert header["threshold"] == archive[3]["saved"][NAME]
