"""Embedding models: a registry of specs, and engines that run them.

Heavy libraries (torch, torchvision, open_clip) are imported only inside the
`torch_*` modules, when a model is actually built.
"""

from .base import Engine, embed_images, load_engine
from .registry import (
    DEFAULT_MODEL,
    MODELS,
    ModelSpec,
    WeightsSource,
    get_model_spec,
    register_model,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "Engine",
    "ModelSpec",
    "WeightsSource",
    "embed_images",
    "get_model_spec",
    "load_engine",
    "register_model",
]
