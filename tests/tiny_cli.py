"""`dupecheck` with the tiny test engine registered, for tests that need a real process
(SIGKILL at random moments). TINY_ENGINE_DELAY slows each batch to widen the window.

TINY_PAUSE_AT=write|pointer|collect stops the publish step at one moment (while the
generation's files are written, just before CURRENT is swapped, just after it), touching
the file TINY_PAUSE_MARKER first, so that a test can SIGKILL exactly there."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny_engine  # noqa: E402

delay = float(os.environ.get("TINY_ENGINE_DELAY", "0"))
if delay:
    _real = tiny_engine.TinyEngine.embed_batch

    def _slow(self, pixels):
        time.sleep(delay)
        return _real(self, pixels)

    tiny_engine.TinyEngine.embed_batch = _slow

pause_at = os.environ.get("TINY_PAUSE_AT")
if pause_at:
    from dupecheck import store

    def _pause() -> None:
        Path(os.environ["TINY_PAUSE_MARKER"]).write_text(pause_at)
        time.sleep(120)

    _write_synced = store._write_synced
    _collect = store._collect_garbage

    def _paused_write(path, write):
        if pause_at == "pointer" and path.name.startswith(f".{store.CURRENT_FILE}."):
            digest = _write_synced(path, write)
            _pause()  # CURRENT's replacement is written and synced, not yet swapped in
            return digest
        if pause_at == "write" and path.name == store.PDQ_FILE:
            _pause()  # photos.json written, the rest of the generation not yet
        return _write_synced(path, write)

    def _paused_collect(root, keep):
        if pause_at == "collect":
            _pause()  # CURRENT swapped: the new generation is published
        return _collect(root, keep)

    store._write_synced = _paused_write
    store._collect_garbage = _paused_collect

from dupecheck.cli import main  # noqa: E402

main()
