"""The command line: parse, call the library, print. Nothing here does the work.

Before the CLI's imports (Typer, Rich, then the library a command needs: ~0.2-0.3 s on one
core), a `check` is given a head start from its command line: see `_start_check`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Options of `check` (and the root) that take no value; every other option takes one.
_FLAGS = frozenset({"--add", "--json", "--quiet", "-q", "--debug", "--help", "--version"})
_PHOTOS_AHEAD = 2  # a cold check of one or two photos is what waits on start-up


def _check_arguments(argv: list[str]) -> list[str] | None:
    """The words after `check` that are not options or option values; None: not a check."""
    words: list[str] = []
    command = None
    skip = False
    for word in argv[1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            attached = "=" in word or (not word.startswith("--") and len(word) > 2)  # -k3
            skip = not attached and word not in _FLAGS and command is not None
        elif command is None:
            command = word
        else:
            words.append(word)
    return words if command == "check" else None


def ends_fast(argv: list[str]) -> bool:
    """Whether this command ends without the interpreter's teardown (app.main): a check."""
    return _check_arguments(argv) is not None


def _start_check(argv: list[str]) -> None:
    """A cold `check` waits on start-up, so two things start before the imports. numpy's
    OpenBLAS thread pool, sized when numpy is imported, only costs a check (its matrix
    work is small): ~35 ms of wall and ~120 ms of CPU taken from the other core here,
    ad-hoc; it gets one thread. And the photos named start decoding in a thread on the
    core the imports leave idle (imaging.decode_ahead; scripts/bench_check.py)."""
    words = _check_arguments(argv)
    if words is None:
        return
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    photos = [Path(w) for w in words if os.path.isfile(w)]
    if photos and len(words) <= _PHOTOS_AHEAD:
        from ..imaging import decode_ahead  # Pillow, not numpy: it starts within ~20 ms

        decode_ahead(photos)


_start_check(sys.argv)

from .app import app, main  # noqa: E402

__all__ = ["app", "ends_fast", "main"]
