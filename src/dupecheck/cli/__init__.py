"""The command line: parse, call the library, print. Nothing here does the work."""

from __future__ import annotations

from .app import app, main

__all__ = ["app", "main"]
