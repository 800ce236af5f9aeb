"""`dupecheck` with the tiny test engine registered, for tests that need a real process
(SIGKILL at random moments). TINY_ENGINE_DELAY slows each batch to widen the window."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tiny_engine  # noqa: E402

delay = float(os.environ.get("TINY_ENGINE_DELAY", "0"))
if delay:
    _real = tiny_engine.TinyEngine.embed_batch

    def _slow(self, pixels):
        time.sleep(delay)
        return _real(self, pixels)

    tiny_engine.TinyEngine.embed_batch = _slow

from dupecheck.cli import main  # noqa: E402

main()
