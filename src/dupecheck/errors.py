"""The error hierarchy. Every error carries the file it is about and the reason;
the CLI turns it into one line on stderr and the documented exit code."""

from __future__ import annotations

from pathlib import Path

# Exit codes, in one place. Where several apply, the highest wins.
EXIT_OK = 0
EXIT_POSTED = 1
EXIT_USAGE = 2
EXIT_UNUSABLE = 3


class DupecheckError(Exception):
    """Base class: a problem a user can act on, never a bug."""

    exit_code = EXIT_USAGE

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = str(path) if path is not None else None

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class UsageError(DupecheckError):
    """Bad options or arguments."""


class ArchiveError(DupecheckError):
    """An archive, or a file inside it, cannot be read."""


class ImageError(DupecheckError):
    """A file is not a photo dupecheck can decode."""


class IndexUnusable(DupecheckError):
    """No index, a corrupt one, or one built differently from what was asked."""

    exit_code = EXIT_UNUSABLE


class WeightsUnavailable(DupecheckError):
    """Model weights are missing, unreadable, or not the ones the index was built with."""

    exit_code = EXIT_UNUSABLE


class ExtraMissing(DupecheckError):
    """A feature needs an optional part of dupecheck that is not installed (PyTorch)."""

    exit_code = EXIT_UNUSABLE


# The optional parts, and what each brings (pip install 'dupecheck[NAME]').
EXTRAS = {
    "mobileclip": "PyTorch and open_clip, for MobileCLIP-S2's one-time export to ONNX",
    "torch": "PyTorch, for --engine torch (CUDA or Apple MPS)",
}


def needs_extra(extra: str, what: str) -> ExtraMissing:
    return ExtraMissing(f"{what} needs {EXTRAS[extra]}: pip install 'dupecheck[{extra}]'")
