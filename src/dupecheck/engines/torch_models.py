"""ResNet-50 (torchvision) and MobileCLIP-S2 (open_clip) on PyTorch.

Weights always come from a local file through `load_state_dict`: no pickle is
executed (safetensors, or torch.load with weights_only=True).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsUnavailable
from .registry import ModelSpec


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or a torch checkpoint, never unpickling code."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailable(f"not a loadable checkpoint ({reason[:200]})", path) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise WeightsUnavailable("checkpoint holds no state dict", path)
    if all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_into(model: torch.nn.Module, path: Path, spec: ModelSpec) -> None:
    state = load_state_dict(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsUnavailable(f"not a {spec.name} checkpoint ({first[:200]})", path) from exc


class TorchEngine:
    """Eager PyTorch on whatever device is best (CUDA, MPS, else the CPU)."""

    def __init__(self, spec: ModelSpec, module: torch.nn.Module, channels_last: bool) -> None:
        self.spec = spec
        self.device = ("cuda" if torch.cuda.is_available()
                       else "mps" if torch.backends.mps.is_available() else "cpu")
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.channels_last = channels_last
        self.module = module.eval().to(self.device)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def embed_batch(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.module(x).float()
        out = torch.nn.functional.normalize(out, dim=1)
        return out.cpu().numpy()


def build_module(spec: ModelSpec, weights: Path | None) -> torch.nn.Module:
    """The spec's torch module, weights loaded, in eval mode."""
    import importlib

    module_name, _, func_name = (spec.module or "").partition(":")
    factory = getattr(importlib.import_module(module_name), func_name)
    return factory(weights, spec).eval()


def build_torch_engine(spec: ModelSpec, weights: Path) -> TorchEngine:
    return TorchEngine(spec, build_module(spec, weights), channels_last=spec.channels_last)


ONNX_OPSET = 17


def export_onnx(spec: ModelSpec, weights: Path, dest: Path) -> Path:
    """Export the spec's module (dynamic batch) to ONNX, written atomically."""
    module = build_module(spec, weights)
    example = torch.zeros(2, 3, spec.crop, spec.crop)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(tmp), input_names=["pixels"],
                          output_names=["embedding"], opset_version=ONNX_OPSET,
                          dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                          dynamo=False)
    os.replace(tmp, dest)
    return dest


def resnet50_module(weights: Path | None, spec: ModelSpec) -> torch.nn.Module:
    """torchvision's ResNet-50 with its classifier removed: (N, 2048) pooled features."""
    import torchvision

    model = torchvision.models.resnet50(weights=None)
    if weights is not None:
        _load_into(model, weights, spec)
    model.fc = torch.nn.Identity()
    return model


def efficientnet_lite0_module(weights: Path | None, spec: ModelSpec) -> torch.nn.Module:
    """EfficientNet-Lite0 with its classifier removed: (N, 1280) pooled features, the same
    graph as engines/lite_onnx.py (for the torch engine on CUDA or MPS)."""
    from .lite_onnx import BN_EPS, HEAD_WIDTH, STEM_WIDTH, lite0_blocks, same_pads

    nn = torch.nn
    side = spec.crop

    def conv(cin: int, cout: int, k: int, stride: int, size: int, groups: int = 1):
        before, after, out = same_pads(size, k, stride)
        return (nn.Sequential(nn.ZeroPad2d((before, after, before, after)),
                              nn.Conv2d(cin, cout, k, stride, groups=groups, bias=False)),
                out)

    class Block(nn.Module):
        def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int,
                     size: int) -> None:
            super().__init__()
            width = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv, _ = conv(cin, width, 1, 1, size)
                self._bn0 = nn.BatchNorm2d(width, eps=BN_EPS)
            self._depthwise_conv, self.out_size = conv(width, width, k, stride, size, width)
            self._bn1 = nn.BatchNorm2d(width, eps=BN_EPS)
            self._project_conv, _ = conv(width, cout, 1, 1, self.out_size)
            self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x
            if self.expand:
                y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
            y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
            y = self._bn2(self._project_conv(y))
            return y + x if self.residual else y

    class Lite0(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem, size = conv(3, STEM_WIDTH, 3, 2, side)
            self._bn0 = nn.BatchNorm2d(STEM_WIDTH, eps=BN_EPS)
            blocks = []
            for args in lite0_blocks():
                blocks.append(Block(*args, size))
                size = blocks[-1].out_size
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, _ = conv(lite0_blocks()[-1][4], HEAD_WIDTH, 1, 1, size)
            self._bn1 = nn.BatchNorm2d(HEAD_WIDTH, eps=BN_EPS)
            self._fc = nn.Linear(HEAD_WIDTH, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = nn.functional.relu6(self._bn1(self._conv_head(x)))
            return x.mean(dim=(2, 3))

    model = Lite0()
    if weights is not None:
        # the checkpoint names a convolution's weight `<name>.weight`; here it sits behind
        # its padding, at `<name>.1.weight`
        state = load_state_dict(weights)
        renamed = {}
        for key, value in state.items():
            head, _, leaf = key.rpartition(".")
            if head.endswith("_conv") or head.endswith("_conv_stem") or \
                    head.endswith("_conv_head"):
                key = f"{head}.1.{leaf}"
            renamed[key] = value
        try:
            model.load_state_dict(renamed, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise WeightsUnavailable(f"not a {spec.name} checkpoint ({first[:200]})",
                                     weights) from exc
    return model


def mobileclip_s2_module(weights: Path | None, spec: ModelSpec,
                         reparameterize: bool = True) -> torch.nn.Module:
    """open_clip's MobileCLIP-S2 image tower, reparameterised (train-time branches fused:
    same outputs, faster)."""
    import open_clip
    from timm.utils.model import reparameterize_model

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # open_clip warns that it built the model without weights
    try:
        model = open_clip.create_model("MobileCLIP-S2", pretrained=None)
    finally:
        quiet.setLevel(level)
    if weights is not None:
        _load_into(model, weights, spec)
    visual = model.visual
    visual.eval()
    return reparameterize_model(visual) if reparameterize else visual


def mobileclip_s2_vocabulary(weights: Path, spec: ModelSpec):  # -> Vocabulary
    """Everyday photo subjects, each read by MobileCLIP-S2's own text tower as "a photo of
    ...": CLIP's zero-shot labels, L2-normalised like the image embeddings."""
    import open_clip

    from .vocabulary import PHOTO_SUBJECTS, SUBJECT_PROMPT, Vocabulary

    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        model = open_clip.create_model("MobileCLIP-S2", pretrained=None)
    finally:
        quiet.setLevel(level)
    _load_into(model, weights, spec)
    tokenizer = open_clip.get_tokenizer("MobileCLIP-S2")
    with torch.inference_mode():
        text = model.eval().encode_text(tokenizer([SUBJECT_PROMPT.format(s)
                                                   for s in PHOTO_SUBJECTS]))
        text = torch.nn.functional.normalize(text.float(), dim=1)
    return Vocabulary(tuple(PHOTO_SUBJECTS), np.ascontiguousarray(text.numpy(), np.float32))
