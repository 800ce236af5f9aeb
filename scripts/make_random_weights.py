"""Save randomly initialised weights for a registered model, in the file format its real
weights come in (torchvision state dict for resnet50, safetensors for mobileclip-s2).

For machines that cannot download the real weights: the README's example and the tests.
Embedding scores from random weights mean nothing; exact and PDQ evidence still do.

    python scripts/make_random_weights.py resnet50 .cache/resnet50-random.pth
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["resnet50", "mobileclip-s2"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    if args.model == "resnet50":
        import torchvision

        torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp)
    else:
        import open_clip
        from safetensors.torch import save_file

        model = open_clip.create_model("MobileCLIP-S2", pretrained=None)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(args.out)
    print(f"wrote random {args.model} weights to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
