"""added.py and `add`, `check --add`, `remove`: photos posted since the export."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import tiny_engine
from dupecheck.cli import app
from dupecheck.store import open_index
from helpers import LAYOUT_DIRS, instagramify, jpeg_bytes, post, synthetic_photo, write_tree

TINY = tiny_engine.TINY
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def export_files(seeds) -> dict[str, object]:
    meta = LAYOUT_DIRS["D"]
    files: dict[str, object] = {f"{meta}/posts_1.json": [
        post(f"media/posts/1/{s}.jpg", 1700000000 + s, f"photo {s}") for s in seeds]}
    files.update({f"media/posts/1/{s}.jpg": jpeg_bytes(synthetic_photo(s)) for s in seeds})
    return files


@pytest.fixture
def indexed(tmp_path, tiny_weights):
    src = write_tree(tmp_path / "export", export_files((1, 2, 3)))
    idx = tmp_path / "idx"
    result = invoke("index", str(src), "--index", str(idx), "--model", TINY.name,
                    "--weights", str(tiny_weights))
    assert result.exit_code == 0, result.output
    return idx


def photo(tmp_path: Path, name: str, seed: int) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(synthetic_photo(seed)))
    return path


def reencoded(src: Path, dst: Path) -> Path:
    img = Image.open(src).convert("RGB").resize((560, 420))
    dst.write_bytes(jpeg_bytes(img, quality=72))
    return dst


def check_json(idx: Path, *paths: Path, extra: tuple[str, ...] = ()):
    result = invoke("check", *map(str, paths), "--index", str(idx), "-t", "1.0", "--json",
                    *extra)
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def test_add_then_check_finds_it_exact_and_re_encoded(indexed, tmp_path):
    new = photo(tmp_path, "IMG_9001.jpg", 50)
    result, doc = check_json(indexed, new)
    assert result.exit_code == 0 and doc["results"][0]["verdict"] == "new"
    added = invoke("add", str(new), "--index", str(indexed), "--caption", "sunset",
                   "--date", "2025-12-01", "--json")
    assert added.exit_code == 0, added.output
    summary = json.loads(added.stdout)
    assert [a["path"] for a in summary["added"]] == [str(new.resolve())]
    assert summary["photos"] == 4
    result, doc = check_json(indexed, new, reencoded(new, tmp_path / "again.jpg"))
    assert result.exit_code == 1
    same, again = doc["results"]
    assert same["verdict"] == "exact" and same["matches"][0]["kind"] == "added"
    assert same["matches"][0]["taken_at"] == "2025-12-01"
    assert same["matches"][0]["caption"] == "sunset"
    assert again["verdict"] == "near-identical" and again["matches"][0]["kind"] == "added"
    info = json.loads(invoke("info", "--index", str(indexed), "--json").stdout)
    assert info["kinds"]["added"] == 1 and info["photos"] == 4
    # The same bytes twice: not added again.
    twice = json.loads(invoke("add", str(new), "--index", str(indexed), "--json").stdout)
    assert twice["added"] == [] and twice["already"] == [str(new)]


def test_check_add_adds_only_the_new_ones(indexed, tmp_path):
    posted = tmp_path / "posted.jpg"
    posted.write_bytes((tmp_path / "export/media/posts/1/2.jpg").read_bytes())
    fresh = [photo(tmp_path, f"fresh-{s}.jpg", s) for s in (60, 61)]
    result, doc = check_json(indexed, posted, *fresh, extra=("--add",))
    assert result.exit_code == 1
    assert [r["verdict"] for r in doc["results"]] == ["exact", "new", "new"]
    index = open_index(indexed)
    assert len(index) == 5
    assert sorted(p.path for p in index.photos if p.kind == "added") == sorted(
        str(p.resolve()) for p in fresh)
    result, doc = check_json(indexed, *fresh)
    assert result.exit_code == 1 and [r["verdict"] for r in doc["results"]] == ["exact"] * 2


def test_folders_are_recursed_and_non_photos_skipped_with_a_line_each(indexed, tmp_path):
    folder = tmp_path / "edits"
    photo(folder, "a/b/one.jpg", 70)
    png = folder / "c" / "two.dat"  # a PNG with a misleading name: the bytes decide
    png.parent.mkdir(parents=True)
    buf = io.BytesIO()
    synthetic_photo(71).save(buf, "PNG")
    png.write_bytes(buf.getvalue())
    (folder / "notes.txt").write_text("not a photo")
    (folder / "c" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 40)
    result = invoke("add", str(folder), "--index", str(indexed), "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["added"]) == 2
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2
    assert any("notes.txt: not a photo" in line for line in skipped)
    assert any("clip.mp4: not a photo" in line for line in skipped)
    checked = invoke("check", str(folder), "--index", str(indexed), "-t", "1.0", "--json")
    assert checked.exit_code == 1
    assert [r["verdict"] for r in json.loads(checked.stdout)["results"]] == ["exact", "exact"]


def test_a_newer_export_replaces_the_added_photos_it_holds_and_keeps_the_others(
        indexed, tmp_path, tiny_weights):
    held = photo(tmp_path, "posted-since.jpg", 80)
    not_held = photo(tmp_path, "posted-elsewhere.jpg", 81)
    assert invoke("add", str(held), str(not_held), "--index", str(indexed)).exit_code == 0
    files = export_files((1, 2, 3))
    # The newer export holds the first as Instagram re-encoded it (other bytes).
    files[f"{LAYOUT_DIRS['D']}/posts_1.json"].append(  # type: ignore[union-attr]
        post("media/posts/2/80.jpg", 1760000000, "posted since"))
    files["media/posts/2/80.jpg"] = instagramify(held.read_bytes())
    newer = write_tree(tmp_path / "export-2", files)
    result = invoke("index", str(newer), "--index", str(indexed), "--model", TINY.name,
                    "--weights", str(tiny_weights), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["added_replaced"] == 1
    assert summary["added_kept"] == [str(not_held.resolve())]
    index = open_index(indexed)
    kinds = {p.path: (p.kind, p.caption) for p in index.photos}
    assert kinds["media/posts/2/80.jpg"] == ("post", "posted since")
    assert kinds[str(not_held.resolve())][0] == "added"
    assert str(held.resolve()) not in kinds and len(index) == 5
    # And again: the kept one survives every later re-index too.
    again = json.loads(invoke("index", str(newer), "--index", str(indexed), "--model",
                              TINY.name, "--weights", str(tiny_weights), "--json").stdout)
    assert again["added_kept"] == [str(not_held.resolve())] and again["embedded"] == 0


def test_a_re_framed_added_photo_is_replaced_by_the_export(real_photos, tmp_path,
                                                          tiny_weights):
    source = real_photos / "jpg__Canon_EOS_30D_(4).jpg"
    export = tmp_path / "export"
    export.mkdir()
    (export / "a.jpg").write_bytes(jpeg_bytes(synthetic_photo(1)))
    idx = tmp_path / "idx"
    assert invoke("index", str(export), "--index", str(idx), "--model", TINY.name,
                  "--weights", str(tiny_weights)).exit_code == 0
    img = Image.open(source).convert("RGB")
    w, h = img.size
    mine = tmp_path / "my-crop.jpg"  # what the person posted and added: a crop
    mine.write_bytes(jpeg_bytes(img.crop((w // 4, h // 5, w, h)).rotate(2.5)))
    assert invoke("add", str(mine), "--index", str(idx)).exit_code == 0
    (export / "b.jpg").write_bytes(instagramify(source.read_bytes()))  # the export has it
    summary = json.loads(invoke("index", str(export), "--index", str(idx), "--model",
                                TINY.name, "--weights", str(tiny_weights), "--json").stdout)
    assert summary["added_replaced"] == 1 and summary["added_kept"] == []


def test_remove_takes_out_added_photos_and_refuses_an_export_photo(indexed, tmp_path):
    new = photo(tmp_path, "oops.jpg", 90)
    other = photo(tmp_path, "keep.jpg", 91)
    assert invoke("add", str(new), str(other), "--index", str(indexed)).exit_code == 0
    refused = invoke("remove", "media/posts/1/2.jpg", "--index", str(indexed))
    assert refused.exit_code == 2 and "only added photos can be removed" in refused.stderr
    unknown = invoke("remove", "nope.jpg", "--index", str(indexed))
    assert unknown.exit_code == 2 and "no such photo in the index" in unknown.stderr
    assert len(open_index(indexed)) == 5
    by_path = invoke("remove", str(new.resolve()), "--index", str(indexed), "--json")
    assert by_path.exit_code == 0 and json.loads(by_path.stdout)["photos"] == 4
    by_file = invoke("remove", str(other), "--index", str(indexed))  # the file itself
    assert by_file.exit_code == 0
    index = open_index(indexed)
    assert len(index) == 3 and all(p.kind != "added" for p in index.photos)
    assert not any((indexed / "added").iterdir())  # the copies go with them
    result, doc = check_json(indexed, new)
    assert result.exit_code == 0 and doc["results"][0]["verdict"] == "new"


def test_sigkill_during_add_leaves_the_previous_index_whole(indexed, tmp_path, tiny_weights):
    new = photo(tmp_path, "late.jpg", 95)
    marker = tmp_path / "paused"
    env = {**os.environ, "TINY_PAUSE_AT": "write", "TINY_PAUSE_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tiny_cli.py")),
                             "add", str(new), "--index", str(indexed), "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    index = open_index(indexed)
    assert len(index) == 3 and all(p.kind == "post" for p in index.photos)
    assert invoke("add", str(new), "--index", str(indexed)).exit_code == 0
    assert len(open_index(indexed)) == 4


def test_add_needs_an_index_and_a_good_date(tmp_path, indexed):
    new = photo(tmp_path, "x.jpg", 96)
    missing = invoke("add", str(new), "--index", str(tmp_path / "none"))
    assert missing.exit_code == 3 and "no index here yet" in missing.stderr
    bad = invoke("add", str(new), "--index", str(indexed), "--date", "yesterday")
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.stderr
    unreadable = tmp_path / "broken.jpg"
    unreadable.write_bytes(b"\xff\xd8\xff\xe0 broken")
    result = invoke("add", str(unreadable), "--index", str(indexed))
    assert result.exit_code == 2 and "broken.jpg" in result.stderr


def test_a_changed_copy_of_an_added_photo_is_never_used(indexed, tmp_path):
    from dupecheck.added import stored_copy
    from dupecheck.evidence import sha256_bytes

    new = photo(tmp_path, "kept.jpg", 97)
    assert invoke("add", str(new), "--index", str(indexed)).exit_code == 0
    sha = sha256_bytes(new.read_bytes())
    assert stored_copy(indexed, sha) == new.read_bytes()
    (indexed / "added" / sha).write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    assert stored_copy(indexed, sha) is None


def test_an_added_photo_whose_copy_is_gone_stays_found_when_the_index_must_take_it_again(
        indexed, tmp_path, tiny_weights, monkeypatch):
    """Local features of a new extraction must be taken again from every photo; an added
    photo's copy in added/ is damaged: the photo stays (a line says so), and `check` still
    finds it exact, not new."""
    from dupecheck import store
    from dupecheck.evidence import sha256_bytes

    new = photo(tmp_path, "kept.jpg", 97)
    assert invoke("add", str(new), "--index", str(indexed)).exit_code == 0
    sha = sha256_bytes(new.read_bytes())
    (indexed / "added" / sha).write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    monkeypatch.setattr(store, "LOCAL_VERSION", store.LOCAL_VERSION + 1)
    result = invoke("index", str(tmp_path / "export"), "--index", str(indexed), "--model",
                    TINY.name, "--weights", str(tiny_weights))
    assert "kept.jpg" in result.output and "stays in the index" in result.output, result.output
    index = open_index(indexed)
    assert index.local is not None and sha in [p.sha256 for p in index.photos]
    result, doc = check_json(indexed, new)
    assert result.exit_code == 1 and doc["results"][0]["verdict"] == "exact"
