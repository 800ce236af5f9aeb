"""Crashes and concurrency: SIGKILL at random moments, readers during writes, tampering."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tiny_engine
from dupecheck.cli import app
from dupecheck.errors import IndexUnusable
from dupecheck.indexer import build_index, staging_key
from dupecheck.store import IndexedPhoto, ModelEntry, Staging, open_index, write_index
from helpers import LAYOUT_DIRS, jpeg_bytes, post, synthetic_photo, write_tree

TINY = tiny_engine.TINY
TINY_CLI = Path(__file__).with_name("tiny_cli.py")


def export(root: Path, seeds: range) -> tuple[Path, set[str]]:
    meta = LAYOUT_DIRS["D"]
    files: dict[str, object] = {
        f"{meta}/posts_1.json": [post(f"media/posts/1/{s}.jpg", 1600000000 + s) for s in seeds]}
    files.update({f"media/posts/1/{s}.jpg": jpeg_bytes(synthetic_photo(s)) for s in seeds})
    return write_tree(root, files), {f"media/posts/1/{s}.jpg" for s in seeds}


def test_sigkill_at_random_moments_never_loses_or_mixes(tmp_path, tiny_weights):
    rng = random.Random(20261122)
    small, small_set = export(tmp_path / "small", range(0, 10))
    large, large_set = export(tmp_path / "large", range(5, 45))
    index = tmp_path / "index"
    build_index([small], index, TINY, tiny_weights)
    current = small_set
    env = {**os.environ, "TINY_ENGINE_DELAY": "0.15", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}
    key = staging_key(TINY, __import__("dupecheck.engines.weights", fromlist=["x"])
                      .file_sha256(tiny_weights))
    candidate = tmp_path / "cand.jpg"
    candidate.write_bytes(jpeg_bytes(synthetic_photo(7)))
    outcomes = {"previous": 0, "new": 0}
    resumed = 0  # trials whose killed run had staged finished batches
    for _trial in range(20):
        target, target_set = (large, large_set) if current == small_set else (small, small_set)
        proc = subprocess.Popen(
            [sys.executable, str(TINY_CLI), "index", str(target), "--index", str(index),
             "--model", "tiny-test", "--weights", str(tiny_weights), "--quiet"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 2.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The visible index is the previous one or the complete new one, never a mix.
        seen = open_index(index)
        paths = {p.path for p in seen.photos}
        assert paths in (current, target_set)
        assert seen.embeddings(TINY.name).shape == (len(paths), TINY.dim)
        outcomes["new" if paths == target_set and paths != current else "previous"] += 1
        current = paths
        # check works on whatever is there.
        result = CliRunner().invoke(app, ["check", str(candidate), "--index", str(index),
                                          "-q", "-t", "1.0"])
        assert result.exit_code in (0, 1), result.output
        # The next run completes and reuses what the killed one finished.
        staged = set(Staging(index, key).load()) if (index / "staging").exists() else set()
        summary = build_index([target], index, TINY, tiny_weights)
        assert {p.path for p in open_index(index).photos} == target_set
        target_shas = {p.sha256 for p in open_index(index).photos}
        assert summary.reused >= len(staged & target_shas)
        resumed += bool(staged & target_shas)
        current = target_set
    # The random kills landed before publishing, after it, and mid-embedding.
    assert outcomes["previous"] > 0 and outcomes["new"] > 0 and resumed > 0, (outcomes, resumed)



@pytest.mark.parametrize("stage, visible", [("write", "previous"), ("pointer", "previous"),
                                            ("collect", "new")])
def test_sigkill_in_the_publish_step_leaves_one_whole_index(tmp_path, tiny_weights, stage,
                                                            visible):
    """Kills aimed at write_index: while the generation is written, with CURRENT's
    replacement written but not swapped in, and just after the swap."""
    small, small_set = export(tmp_path / "small", range(0, 4))
    large, large_set = export(tmp_path / "large", range(2, 9))
    index = tmp_path / "index"
    build_index([small], index, TINY, tiny_weights)
    marker = tmp_path / "paused"
    env = {**os.environ, "TINY_PAUSE_AT": stage, "TINY_PAUSE_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(TINY_CLI), "index", str(large), "--index", str(index),
         "--model", "tiny-test", "--weights", str(tiny_weights), "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == stage  # the kill lands where it is aimed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    seen = open_index(index)
    expected = small_set if visible == "previous" else large_set
    assert {p.path for p in seen.photos} == expected
    assert seen.embeddings(TINY.name).shape == (len(expected), TINY.dim)
    # The next run publishes and leaves no half-written generation or pointer behind.
    build_index([large], index, TINY, tiny_weights)
    assert {p.path for p in open_index(index).photos} == large_set
    leftovers = [p.name for p in index.iterdir() if p.name.startswith(".")
                 and p.name != ".lock"]
    assert leftovers == []
    assert len([p for p in index.iterdir() if p.name.startswith("gen-")]) <= 2


def test_readers_during_writes_always_see_one_complete_index(tmp_path):
    root = tmp_path / "index"
    entry = ModelEntry(TINY.name, TINY.dim, "0" * 64, "/w", TINY.preprocessing)

    def generation(n: int) -> None:
        photos = [IndexedPhoto(f"p/{n}/{i}.jpg", "post", None, f"gen {n}", None, f"{i:064x}")
                  for i in range(n)]
        emb = np.full((n, TINY.dim), n, np.float32)
        pdq = np.full((n, 32), n % 256, np.uint8)
        write_index(root, photos, pdq, {TINY.name: (entry, emb)}, [])

    generation(5)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for k in range(40):
                generation(5 + k % 7)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not stop.is_set() or reads < 5:
        index = open_index(root)
        n = len(index)
        emb = np.asarray(index.embeddings(TINY.name))
        assert emb.shape == (n, TINY.dim) and (emb == n).all()  # rows of this generation
        assert all(p.caption == f"gen {n}" for p in index.photos)
        assert (index.pdq == n % 256).all()
        reads += 1
    thread.join()
    assert not errors and reads >= 5


def test_tampered_index_exits_3_through_the_cli(tmp_path, tiny_weights):
    src, _ = export(tmp_path / "e", range(3))
    index = tmp_path / "index"
    build_index([src], index, TINY, tiny_weights)
    gen = index / (index / "CURRENT").read_text().split()[0]
    manifest = gen / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"count": 3', '"count": 2'))
    result = CliRunner().invoke(app, ["check", str(src / "media/posts/1/0.jpg"),
                                      "--index", str(index)])
    assert result.exit_code == 3
    assert "manifest.json does not match" in result.stderr
    assert "Traceback" not in result.output


def test_a_second_writer_is_refused_while_one_runs(tmp_path, tiny_weights):
    from dupecheck.store import writer_lock

    src, _ = export(tmp_path / "e", range(2))
    with writer_lock(tmp_path / "index"):
        with pytest.raises(IndexUnusable, match="another `dupecheck index`"):
            build_index([src], tmp_path / "index", TINY, tiny_weights)
