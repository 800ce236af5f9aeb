"""Options shared by every command, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from platformdirs import user_data_dir

from ..defaults import DEFAULT_MODEL, MODEL_NAMES


def default_index_dir() -> Path:
    return Path(user_data_dir("dupecheck")) / "index"


IndexDir = Annotated[Path, typer.Option(
    "--index", envvar="DUPECHECK_INDEX", default_factory=default_index_dir,
    show_default="the user data dir", file_okay=False,
    help="Index directory.")]
def _model_names() -> str:
    names = [f"{n} (default)" if n == DEFAULT_MODEL else n for n in MODEL_NAMES]
    return ", ".join(names[:-1]) + " or " + names[-1]


ModelName = Annotated[str | None, typer.Option(
    "--model", "-m", help=f"Embedding model: {_model_names()}.")]
WeightsPath = Annotated[Path | None, typer.Option(
    "--weights", envvar="DUPECHECK_WEIGHTS", dir_okay=False,
    help="Local checkpoint instead of the library cache (torchvision state dict for "
         "resnet50, open_clip checkpoint for mobileclip-s2, the efficientnet-lite0 "
         "package's .pth).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
EngineName = Annotated[str, typer.Option(
    "--engine", help="auto (ONNX Runtime on a CPU-only machine, torch with CUDA or MPS), "
    "onnx or torch.")]
Threshold = Annotated[float | None, typer.Option(
    "--threshold", "-t", help="Cosine for 'similar', in (0, 1]; 1.0 turns it off. "
    "Default: the index's calibrated value, else the model's.")]
