"""calibrate.py and the calibrate / compare commands, and --not remembered."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import tiny_engine
from dupecheck.calibrate import EDITS, calibrate, precision_recall
from dupecheck.cli import app
from dupecheck.engines import load_engine
from dupecheck.indexer import build_index
from dupecheck.store import open_index
from helpers import LAYOUT_DIRS, jpeg_bytes, post, synthetic_photo, write_tree

TINY = tiny_engine.TINY
runner = CliRunner()


@pytest.fixture
def indexed(tmp_path, tiny_weights):
    meta = LAYOUT_DIRS["C"]
    seeds = range(1, 9)
    files: dict[str, object] = {f"{meta}/posts_1.json": [
        post(f"media/posts/1/{s}.jpg", 1500000000 + s, f"photo {s}") for s in seeds]}
    files.update({f"media/posts/1/{s}.jpg": jpeg_bytes(synthetic_photo(s, (900, 700)))
                  for s in seeds})
    src = write_tree(tmp_path / "export", files)
    idx = tmp_path / "idx"
    build_index([src], idx, TINY, tiny_weights)
    return idx


def test_precision_recall_table():
    rows = precision_recall(np.array([0.9, 0.95, 0.99]), np.array([0.5, 0.92]),
                            np.array([0.5, 0.91, 0.93, 0.999]))
    assert [(r.threshold, round(r.precision, 3), round(r.recall, 3)) for r in rows] == [
        (0.5, 0.6, 1.0), (0.91, 0.667, 0.667), (0.93, 1.0, 0.667), (0.999, 1.0, 0.0)]


@pytest.mark.slow
def test_calibration_is_deterministic_and_sound(indexed, tiny_weights):
    index = open_index(indexed)
    engine = load_engine(TINY, tiny_weights)
    first = calibrate(index, TINY, engine, sample=4, seed=3, precision=0.9)
    again = calibrate(index, TINY, engine, sample=4, seed=3, precision=0.9)
    assert first.positives == again.positives and first.negatives == again.negatives
    assert first.sampled == 4 and len(first.positives) == 4 * len(EDITS)
    assert set(first.by_edit) == set(EDITS) and all(len(v) == 4 for v in first.by_edit.values())
    recalls = [r.recall for r in first.table]
    assert recalls == sorted(recalls, reverse=True)  # recall only falls as t rises
    assert first.recommended is not None
    row = next(r for r in first.table if r.threshold == first.recommended)
    assert row.precision >= 0.9
    lower = [r for r in first.table if r.threshold < first.recommended]
    assert all(r.precision < 0.9 or r.recall == 0 for r in lower)  # it is the lowest
    other = calibrate(index, TINY, engine, sample=4, seed=4, precision=0.9)
    assert other.positives != first.positives


def test_calibrate_save_is_used_by_check_and_explicit_threshold_wins(indexed, tmp_path):
    result = runner.invoke(app, ["calibrate", "--index", str(indexed), "--sample", "3",
                                 "--precision", "0.9", "--save", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    saved = doc["saved"]["tiny-test"]
    assert saved == doc["models"][0]["recommended"]
    assert open_index(indexed).models["tiny-test"].threshold == saved
    photo = tmp_path / "x.jpg"
    photo.write_bytes(jpeg_bytes(synthetic_photo(77)))
    checked = json.loads(runner.invoke(app, ["check", str(photo), "--index", str(indexed),
                                             "--json"]).stdout)
    assert checked["threshold"] == saved
    explicit = json.loads(runner.invoke(app, ["check", str(photo), "--index", str(indexed),
                                              "--json", "-t", "0.5"]).stdout)
    assert explicit["threshold"] == 0.5
    text = runner.invoke(app, ["calibrate", "--index", str(indexed), "--sample", "2"])
    assert "mean similarity of the edited copy" in " ".join(text.stdout.split())
    assert "brightness" in text.stdout


def test_calibrate_keeps_its_recommendation_unless_told_not_to(indexed):
    def entry():
        return open_index(indexed).models["tiny-test"]

    assert entry().threshold is None
    doc = json.loads(runner.invoke(app, ["calibrate", "--index", str(indexed), "--sample", "3",
                                         "--precision", "0.9", "--no-save", "--json"]).stdout)
    assert doc["saved"] == {} and entry().threshold is None
    doc = json.loads(runner.invoke(app, ["calibrate", "--index", str(indexed), "--sample", "3",
                                         "--precision", "0.9", "--json"]).stdout)
    assert doc["saved"]["tiny-test"] == doc["models"][0]["recommended"] == entry().threshold


def test_compare_two_photos_without_an_index(tmp_path, tiny_weights):
    a = tmp_path / "a.jpg"
    a.write_bytes(jpeg_bytes(synthetic_photo(5, (900, 600))))
    b = tmp_path / "b.jpg"
    b.write_bytes(jpeg_bytes(synthetic_photo(5, (900, 600)).resize((450, 300)), quality=70))
    c = tmp_path / "c.jpg"
    c.write_bytes(jpeg_bytes(synthetic_photo(6)))
    args = ["--model", "tiny-test", "--weights", str(tiny_weights), "--json"]
    same = runner.invoke(app, ["compare", str(a), str(a), *args])
    assert same.exit_code == 1 and json.loads(same.stdout)["verdict"] == "exact"
    near = runner.invoke(app, ["compare", str(a), str(b), *args])
    doc = json.loads(near.stdout)
    assert near.exit_code == 1 and doc["verdict"] == "near-identical"
    assert doc["pdq_distance"] <= 31 and not doc["same_bytes"]
    assert set(doc["cosines"]) == {"tiny-test"}
    other = runner.invoke(app, ["compare", str(a), str(c), *args, "-t", "1.0"])
    assert other.exit_code == 0 and json.loads(other.stdout)["verdict"] == "new"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert runner.invoke(app, ["compare", str(a), str(bad), *args]).exit_code == 2


def test_not_a_match_is_remembered_by_content(indexed, tmp_path):
    src = tmp_path / "export/media/posts/1/3.jpg"
    candidate = tmp_path / "renamed-copy.jpg"
    candidate.write_bytes(src.read_bytes())
    base = ["check", str(candidate), "--index", str(indexed), "-t", "1.0", "--json"]
    first = runner.invoke(app, base)
    assert first.exit_code == 1
    assert json.loads(first.stdout)["results"][0]["matches"][0]["path"] == "media/posts/1/3.jpg"
    marked = runner.invoke(app, [*base, "--not", "media/posts/1/3.jpg"])
    assert marked.exit_code == 0, marked.output
    result = json.loads(marked.stdout)["results"][0]
    assert result["verdict"] == "new" and result["skipped"] == ["media/posts/1/3.jpg"]
    assert all(m["path"] != "media/posts/1/3.jpg" for m in result["matches"])
    later = runner.invoke(app, base)  # remembered, without --not
    assert later.exit_code == 0
    table = runner.invoke(app, base[:-1])
    assert "marked not a match" in " ".join(table.stdout.split())
    unknown = runner.invoke(app, [*base, "--not", "media/nope.jpg"])
    assert unknown.exit_code == 2 and "no such photo in the index" in unknown.stderr
    # Re-indexed from scratch, the archive photo moved to another path: still remembered.
    meta = tmp_path / "export" / LAYOUT_DIRS["C"] / "posts_1.json"
    posts = json.loads(meta.read_text())
    for entry in posts:
        for media in entry["media"]:
            media["uri"] = media["uri"].replace("posts/1/3.jpg", "posts/9/moved.jpg")
    meta.write_text(json.dumps(posts))
    (tmp_path / "export/media/posts/9").mkdir(parents=True)
    src.rename(tmp_path / "export/media/posts/9/moved.jpg")
    weights = json.loads(runner.invoke(app, ["info", "--index", str(indexed), "--json"])
                         .stdout)["models"][TINY.name]["weights_path"]
    again = runner.invoke(app, ["index", str(tmp_path / "export"), "--index", str(indexed),
                                "--model", TINY.name, "--weights", weights, "--rebuild"])
    assert again.exit_code == 0, again.output
    after = runner.invoke(app, base)
    assert after.exit_code == 0, after.output
    result = json.loads(after.stdout)["results"][0]
    assert result["verdict"] == "new" and result["skipped"] == ["media/posts/9/moved.jpg"]


def test_a_changed_not_matches_file_is_refused_and_an_old_one_is_read_once(indexed, tmp_path):
    """An edit by anything but dupecheck (here: a pair for a posted photo written in) must
    not turn a posted photo `new`: check stops, naming the file (exit 3)."""
    from dupecheck.evidence import sha256_bytes
    from dupecheck.store import NOT_MATCHES_FILE, NotMatches

    src = tmp_path / "export/media/posts/1/2.jpg"
    base = ["check", str(src), "--index", str(indexed), "-t", "1.0", "--json", "--quiet"]
    assert runner.invoke(app, base).exit_code == 1
    path = indexed / NOT_MATCHES_FILE
    index_sha = {p.path: p.sha256 for p in open_index(indexed).photos}["media/posts/1/2.jpg"]
    candidate_sha = sha256_bytes(src.read_bytes())
    NotMatches(indexed).add("0" * 64, {"1" * 64})  # a genuine mark of another pair
    doc = json.loads(path.read_text())
    doc["pairs"][candidate_sha] = [index_sha]  # written in by hand
    path.write_text(json.dumps(doc))
    r = runner.invoke(app, base)
    assert r.exit_code == 3 and NOT_MATCHES_FILE in r.stderr and "changed" in r.stderr
    # A file written before the checksum (1.x): read, and rewritten with it.
    path.write_text(json.dumps({candidate_sha: [index_sha]}))
    r = runner.invoke(app, base)
    assert r.exit_code == 0 and json.loads(r.stdout)["results"][0]["verdict"] == "new"
    assert json.loads(path.read_text())["version"] == NotMatches.VERSION
    assert NotMatches(indexed).load() == {candidate_sha: {index_sha}}
