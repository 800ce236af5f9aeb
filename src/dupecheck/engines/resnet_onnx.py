"""torchvision's ResNet-50, classifier removed, written as an ONNX graph from its weights.

No PyTorch: the checkpoint is read as numpy arrays (checkpoint.py), each batch norm is
folded into the convolution before it (in float64, then float32), and the graph is the
one torchvision's module computes (ResNet v1.5: the stride on the 3x3 convolution):
conv 7x7/2, max pool 3x3/2, four stages of bottlenecks, global average pool, (N, 2048).
Its embeddings equal those of the torch export (tests/test_engines.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import WeightsUnavailable
from .checkpoint import read_state_dict, write_graph
from .registry import ModelSpec

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride
EXPANSION = 4
BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which torchvision's ResNet keeps
ONNX_OPSET = 17


class _Graph:
    """Nodes and initializers, named as torchvision names the layers."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list = []
        self.initializers: list = []

    def tensor(self, prefix: str, name: str) -> np.ndarray:
        key = f"{prefix}{name}"
        if key not in self.state:
            raise KeyError(key)
        return np.asarray(self.state[key], np.float64)

    def conv_bn(self, x: str, conv: str, bn: str, stride: int, pad: int,
                relu: bool) -> str:
        from onnx import helper, numpy_helper

        weight = self.tensor(conv, ".weight")
        gamma, beta = self.tensor(bn, ".weight"), self.tensor(bn, ".bias")
        mean, var = self.tensor(bn, ".running_mean"), self.tensor(bn, ".running_var")
        scale = gamma / np.sqrt(var + BN_EPS)
        folded_w = (weight * scale[:, None, None, None]).astype(np.float32)
        folded_b = (beta - mean * scale).astype(np.float32)
        self.initializers += [numpy_helper.from_array(folded_w, f"{conv}.w"),
                              numpy_helper.from_array(folded_b, f"{conv}.b")]
        k = weight.shape[-1]
        out = f"{conv}.out"
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{conv}.w", f"{conv}.b"], [out], name=conv, kernel_shape=[k, k],
            strides=[stride, stride], pads=[pad] * 4))
        if not relu:
            return out
        self.nodes.append(helper.make_node("Relu", [out], [f"{conv}.relu"]))
        return f"{conv}.relu"

    def bottleneck(self, x: str, name: str, stride: int, downsample: bool) -> str:
        from onnx import helper

        y = self.conv_bn(x, f"{name}.conv1", f"{name}.bn1", 1, 0, relu=True)
        y = self.conv_bn(y, f"{name}.conv2", f"{name}.bn2", stride, 1, relu=True)
        y = self.conv_bn(y, f"{name}.conv3", f"{name}.bn3", 1, 0, relu=False)
        shortcut = x
        if downsample:
            shortcut = self.conv_bn(x, f"{name}.downsample.0", f"{name}.downsample.1", stride,
                                    0, relu=False)
        self.nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.sum"]))
        self.nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"]))
        return f"{name}.out"


def resnet50_graph(state: dict[str, np.ndarray], side: int):  # -> onnx.ModelProto
    """The ONNX model: input `pixels` (N, 3, side, side) float32, output `embedding`
    (N, 2048). The side is fixed, as torch's export fixes it: with H and W unknown, ONNX
    Runtime plans every convolution at run time (7% slower a batch on the 2-core VM)."""
    from onnx import TensorProto, helper

    g = _Graph(state)
    x = g.conv_bn("pixels", "conv1", "bn1", 2, 3, relu=True)
    g.nodes.append(helper.make_node("MaxPool", [x], ["maxpool"], kernel_shape=[3, 3],
                                    strides=[2, 2], pads=[1, 1, 1, 1]))
    x, channels = "maxpool", 64
    for stage, (width, blocks, stride) in enumerate(STAGES, 1):
        for block in range(blocks):
            first = block == 0
            downsample = first and (stride != 1 or channels != width * EXPANSION)
            x = g.bottleneck(x, f"layer{stage}.{block}", stride if first else 1, downsample)
            channels = width * EXPANSION
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1))
    graph = helper.make_graph(
        g.nodes, "resnet50",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT,
                                               ["batch", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 2048])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="dupecheck")
    model.ir_version = min(model.ir_version, 8)  # readable by every ONNX Runtime >= 1.14
    return model


def build_resnet50_onnx(weights: Path, spec: ModelSpec, dest: Path) -> Path:
    """Read the checkpoint, write its ONNX graph to `dest` atomically."""
    return write_graph(weights, spec, dest, resnet50_graph)


def imagenet_labels() -> tuple[str, ...]:
    """ImageNet-1k's class names in torchvision's order (its `categories` meta)."""
    text = resources.files("dupecheck.engines").joinpath("imagenet_classes.txt").read_text(
        encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def classifier_vocabulary(weights: Path, spec: ModelSpec, key: str):  # -> Vocabulary
    """ImageNet's 1000 classes, scored by the classifier the embedding drops (`key`), read
    from the same checkpoint. The index holds L2-normalised features, so the score is the
    class direction's dot product, without the bias (a feature's length is not kept)."""
    from .vocabulary import Vocabulary

    labels = imagenet_labels()
    matrix = read_state_dict(weights).get(key)
    if matrix is None or matrix.shape != (len(labels), spec.dim):
        shape = None if matrix is None else tuple(matrix.shape)
        raise WeightsUnavailable(f"not a {spec.name} checkpoint ({key} is {shape})", weights)
    return Vocabulary(labels, np.ascontiguousarray(matrix, np.float32))


def resnet50_vocabulary(weights: Path, spec: ModelSpec):  # -> Vocabulary
    """Its `fc`: ImageNet's classes in torchvision's order."""
    return classifier_vocabulary(weights, spec, "fc.weight")
