"""Save randomly initialised weights for a registered model.

For machines that cannot download the real weights: the README's example and the tests.
Embedding scores from random weights mean nothing; exact and PDQ evidence still do.

    python scripts/make_random_weights.py resnet50 .cache/resnet50-random.safetensors
    python scripts/make_random_weights.py mobileclip-s2 .cache/mobileclip-random.safetensors

resnet50 needs no PyTorch: torchvision's initialisation (Kaiming-normal convolutions,
batch norms at identity, a uniform classifier) drawn with numpy, written as safetensors,
which `--weights` takes as it takes torchvision's own file. mobileclip-s2 builds open_clip's
model, so it needs the mobileclip extra.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # torchvision's ResNet-50: width, blocks


def resnet50_state(seed: int) -> dict[str, np.ndarray]:
    """A state dict with torchvision's ResNet-50 names, shapes and initialisation."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        std = np.sqrt(2.0 / (out * k * k))  # kaiming_normal_, fan_out, relu
        state[f"{name}.weight"] = rng.normal(0, std, (out, inp, k, k)).astype(np.float32)

    def bn(name: str, channels: int) -> None:
        state[f"{name}.weight"] = np.ones(channels, np.float32)
        state[f"{name}.bias"] = np.zeros(channels, np.float32)
        state[f"{name}.running_mean"] = np.zeros(channels, np.float32)
        state[f"{name}.running_var"] = np.ones(channels, np.float32)
        state[f"{name}.num_batches_tracked"] = np.array(0, np.int64)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    channels = 64
    for stage, (width, blocks) in enumerate(STAGES, 1):
        for block in range(blocks):
            name = f"layer{stage}.{block}"
            conv(f"{name}.conv1", width, channels, 1)
            bn(f"{name}.bn1", width)
            conv(f"{name}.conv2", width, width, 3)
            bn(f"{name}.bn2", width)
            conv(f"{name}.conv3", width * 4, width, 1)
            bn(f"{name}.bn3", width * 4)
            if block == 0:
                conv(f"{name}.downsample.0", width * 4, channels, 1)
                bn(f"{name}.downsample.1", width * 4)
            channels = width * 4
    bound = 1 / np.sqrt(2048)
    state["fc.weight"] = rng.uniform(-bound, bound, (1000, 2048)).astype(np.float32)
    state["fc.bias"] = rng.uniform(-bound, bound, 1000).astype(np.float32)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["resnet50", "mobileclip-s2"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    if args.model == "resnet50":
        from safetensors.numpy import save_file

        save_file(resnet50_state(args.seed), str(tmp))
    else:
        import open_clip
        import torch
        from safetensors.torch import save_file as save_torch

        torch.manual_seed(args.seed)
        model = open_clip.create_model("MobileCLIP-S2", pretrained=None)
        save_torch({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(args.out)
    print(f"wrote random {args.model} weights to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
