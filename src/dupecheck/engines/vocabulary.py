"""Words for embeddings: what a model itself says a photo shows.

Used to name the motifs of `dupecheck map`. ResNet-50's are the ImageNet classes of the
classifier its embedding drops; MobileCLIP-S2's are everyday photo subjects read by its
own text tower (zero-shot). Either way the names come from the model and may be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .registry import ModelSpec

# Zero-shot subjects for CLIP-like models: what people photograph and post.
PHOTO_SUBJECTS = (
    "a beach", "the sea", "a lake", "mountains", "a forest", "a field", "flowers", "a tree",
    "a sunset", "the sky", "clouds", "snow", "a desert", "a river", "a waterfall",
    "a city street", "buildings", "a skyline", "a bridge", "a church", "a house",
    "an interior", "a cafe", "a restaurant", "a market", "a train", "a car", "a bicycle",
    "a boat", "a plane", "a road", "a portrait", "a selfie", "a group of friends",
    "a wedding", "a party", "a concert", "a baby", "a child", "a couple", "a dog", "a cat",
    "a bird", "a horse", "wildlife", "food", "a cake", "coffee", "drinks", "fruit",
    "a plate of food", "fashion", "shoes", "a mirror selfie", "a gym", "sport", "football",
    "a swimming pool", "a garden", "a park", "art", "a painting", "a sculpture",
    "a museum", "text", "a screenshot", "a book", "a desk", "a computer", "a phone",
    "a night scene", "fireworks", "Christmas", "a festival", "a stage", "a hotel room",
    "an airport", "a window view", "architecture", "street art", "a car interior",
    "a landscape", "a close-up", "a pattern", "a black and white photo",
)
SUBJECT_PROMPT = "a photo of {}"


@dataclass(frozen=True)
class Vocabulary:
    """Labels and their directions in the model's embedding space: score = E @ W.T + b."""

    labels: tuple[str, ...]
    matrix: np.ndarray  # (L, dim) float32
    bias: np.ndarray | None = None  # (L,) float32

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        scores = np.asarray(embeddings, np.float32) @ self.matrix.T
        return scores if self.bias is None else scores + self.bias

    def top_label(self, embeddings: np.ndarray) -> np.ndarray:
        """Each row's best label (index into `labels`)."""
        return self.scores(embeddings).argmax(axis=1)


def load_vocabulary(spec: ModelSpec, weights: Path) -> Vocabulary | None:
    """The model's vocabulary from its own weights file; None for a model that has none."""
    if spec.vocabulary is None:
        return None
    from .base import resolve

    return resolve(spec.vocabulary, spec, f"{spec.name}'s motif names")(weights, spec)
