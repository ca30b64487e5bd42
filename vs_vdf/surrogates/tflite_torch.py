"""Run a `.tflite` face model as a frozen, differentiable PyTorch module.

The attack needs gradients through the exact networks MediaPipe ships, so instead of an interpreter
we translate the flatbuffer op by op. Weights become buffers (frozen); the input stays
differentiable. Tensors are indexed NCHW inside, as torch's operators expect, but kept in
channels-last memory order whatever the caller's layout: on the CPU, max pooling in the NCHW order
is up to 10x slower, and a channels-last input keeps every layer in that order. The module takes and
returns tensors exactly like the `.tflite` file (NHWC, same shapes and value range), with any batch
size. Only the operators these models use are covered; anything else is refused at load time with
its name.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import tflite

from ..errors import VdfError
from .tf_padding import conv2d_same, pad_same

_OP_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.FLOAT16: np.float16,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.INT64: np.int64,
    tflite.TensorType.UINT8: np.uint8,
}
_SAME = tflite.Padding.SAME


class UnsupportedModelError(VdfError, ValueError):
    """The `.tflite` file uses an operator or layout this executor does not translate."""


def _nhwc_axis_to_nchw(axis: int) -> int:
    return (0, 2, 3, 1)[axis]


def _to_nchw(array: np.ndarray) -> np.ndarray:
    """A constant in NHWC (any rank <= 4, broadcast from the right) as a 4-D NCHW array."""
    while array.ndim < 4:
        array = array[None]
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))


def _activation(kind: int):
    A = tflite.ActivationFunctionType
    if kind == A.NONE:
        return None
    if kind == A.RELU:
        return F.relu
    if kind == A.RELU6:
        return lambda x: x.clamp(0.0, 6.0)
    if kind == A.RELU_N1_TO_1:
        return lambda x: x.clamp(-1.0, 1.0)
    if kind == A.TANH:
        return torch.tanh
    raise UnsupportedModelError(f"fused activation {kind} is not supported")


class _Op(nn.Module):
    """One translated operator; ``fused`` is applied to its result when the file asks for it."""

    fused = None

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        return self.fused(y) if self.fused is not None else y


class _Conv(_Op):
    def __init__(self, weight, bias, stride, dilation, same, groups, fused):
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(weight.copy()))
        self.register_buffer("bias", torch.from_numpy(bias.copy()) if bias is not None else None)
        self.stride, self.dilation, self.same, self.groups = stride, dilation, same, groups
        self.fused = _activation(fused)

    def forward(self, x):
        if self.same:
            return self.finish(conv2d_same(x, self.weight, self.bias, self.stride, self.dilation, self.groups))
        return self.finish(F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups))


class _TransposeConvBias(_Op):
    """MediaPipe's custom `Convolution2DTransposeBias` (SAME or VALID, given strides)."""

    def __init__(self, weight_ohwi, bias, stride, same):
        super().__init__()
        self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(weight_ohwi.transpose(3, 0, 1, 2))))
        self.register_buffer("bias", torch.from_numpy(bias.copy()))
        self.stride, self.same = stride, same

    def forward(self, x):
        kernel = self.weight.shape[2:]
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        if self.same:
            out_h, out_w = x.shape[2] * self.stride[0], x.shape[3] * self.stride[1]
            top = max((x.shape[2] - 1) * self.stride[0] + kernel[0] - out_h, 0) // 2
            left = max((x.shape[3] - 1) * self.stride[1] + kernel[1] - out_w, 0) // 2
            y = y[:, :, top:top + out_h, left:left + out_w]
        return y


class _Pool(_Op):
    def __init__(self, kind, kernel, stride, same, fused):
        super().__init__()
        self.kind, self.kernel, self.stride, self.same = kind, kernel, stride, same
        self.fused = _activation(fused)

    def forward(self, x):
        if self.kind == "max":
            if self.same:
                x = pad_same(x, self.kernel, self.stride, value=-math.inf)
            return self.finish(F.max_pool2d(x, self.kernel, self.stride))
        if not self.same:
            return self.finish(F.avg_pool2d(x, self.kernel, self.stride))
        # TFLite averages over the real pixels only: divide the padded sum by the count of real ones.
        ones = torch.ones_like(x[:1, :1])
        summed = F.avg_pool2d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride, divisor_override=1)
        count = F.avg_pool2d(pad_same(ones, self.kernel, self.stride), self.kernel, self.stride, divisor_override=1)
        return self.finish(summed / count)


class _Binary(_Op):
    """ADD or MUL; either operand may be a constant baked in at load time."""

    def __init__(self, kind, constant, constant_first, fused):
        super().__init__()
        self.kind, self.constant_first = kind, constant_first
        self.register_buffer("constant", constant)
        self.fused = _activation(fused)

    def forward(self, *args):
        if self.constant is not None:
            args = (self.constant, args[0]) if self.constant_first else (args[0], self.constant)
        a, b = args
        return self.finish(a + b if self.kind == "add" else a * b)


class _PRelu(_Op):
    def __init__(self, alpha):
        super().__init__()
        # One slope per channel (FaceMesh's) runs as F.prelu, one kernel each way: half the time of a where.
        per_channel = alpha.ndim == 4 and alpha.numel() == alpha.shape[1]
        self.register_buffer("alpha", alpha.flatten() if per_channel else alpha)

    def forward(self, x):
        if self.alpha.ndim == 1:
            return F.prelu(x, self.alpha)
        return torch.where(x >= 0, x, x * self.alpha)


class _Elementwise(_Op):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _Pad(_Op):
    def __init__(self, paddings_nhwc):
        super().__init__()
        (nb, na), (hb, ha), (wb, wa), (cb, ca) = paddings_nhwc.tolist()
        self.pad = (wb, wa, hb, ha, cb, ca, nb, na)

    def forward(self, x):
        return F.pad(x, self.pad)


class _Reshape(_Op):
    """Reshape in NHWC order (the file's semantics), whatever layout the tensors have inside."""

    def __init__(self, in_rank, out_shape):
        super().__init__()
        self.in_rank, self.out_shape = in_rank, tuple(int(d) for d in out_shape[1:])

    def forward(self, x):
        if self.in_rank == 4:
            x = x.permute(0, 2, 3, 1)
        y = x.reshape(x.shape[0], *self.out_shape)
        return y.permute(0, 3, 1, 2) if y.ndim == 4 else y


class _Concat(_Op):
    def __init__(self, axis, rank, fused):
        super().__init__()
        axis = axis % rank
        self.axis = _nhwc_axis_to_nchw(axis) if rank == 4 else axis
        self.fused = _activation(fused)

    def forward(self, *xs):
        return self.finish(torch.cat(xs, dim=self.axis))


class _Mean(_Op):
    def __init__(self, axes, rank, keep_dims):
        super().__init__()
        self.rank, self.keep_dims = rank, keep_dims
        axes = [a % rank for a in axes]
        self.axes = tuple(_nhwc_axis_to_nchw(a) for a in axes) if rank == 4 and keep_dims else tuple(axes)

    def forward(self, x):
        if self.rank == 4 and not self.keep_dims:
            x = x.permute(0, 2, 3, 1)
        return x.mean(dim=self.axes, keepdim=self.keep_dims)


class _ResizeBilinear(_Op):
    def __init__(self, size, align_corners, half_pixel_centers):
        super().__init__()
        if not (align_corners or half_pixel_centers):
            raise UnsupportedModelError("RESIZE_BILINEAR without align_corners or half_pixel_centers")
        self.size, self.align_corners = tuple(int(s) for s in size), bool(align_corners)

    def forward(self, x):
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=self.align_corners)


class TFLiteModule(nn.Module):
    """The translated network. ``forward(x)`` takes the `.tflite` input (NHWC) and returns its
    outputs in the file's order (a single tensor when there is one output)."""

    def __init__(self, path: Path | str):
        super().__init__()
        self.source = Path(path)
        model = tflite.Model.GetRootAsModel(self.source.read_bytes(), 0)
        if model.SubgraphsLength() != 1:
            raise UnsupportedModelError(f"{self.source.name}: expected one subgraph")
        graph = model.Subgraphs(0)
        self._model, self._graph = model, graph
        self._constants: dict[int, np.ndarray] = {}
        for index in range(graph.TensorsLength()):
            value = self._buffer_of(index)
            if value is not None:
                self._constants[index] = value
        (self.input_index,) = [graph.Inputs(i) for i in range(graph.InputsLength())]
        self.input_shape = tuple(int(d) for d in graph.Tensors(self.input_index).ShapeAsNumpy())
        self.output_indices = [graph.Outputs(i) for i in range(graph.OutputsLength())]
        self.output_shapes = [tuple(int(d) for d in graph.Tensors(i).ShapeAsNumpy()) for i in self.output_indices]
        self.ops = nn.ModuleList()
        self.wiring: list[tuple[list[int], int]] = []
        for op_index in range(graph.OperatorsLength()):
            self._translate(graph.Operators(op_index))
        del self._model, self._graph, self._constants

    # ----------------------------------------------------------------- loading
    def _rank(self, index: int) -> int:
        return len(self._graph.Tensors(index).ShapeAsNumpy())

    def _buffer_of(self, index: int) -> np.ndarray | None:
        tensor = self._graph.Tensors(index)
        raw = self._model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(raw, int) or raw.size == 0:
            return None
        dtype = _NUMPY_TYPES.get(tensor.Type())
        if dtype is None:
            raise UnsupportedModelError(f"{self.source.name}: tensor type {tensor.Type()} is not supported")
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
        return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)

    def _const(self, index: int) -> np.ndarray | None:
        value = self._constants.get(index)
        return None if value is None else value.astype(np.float32) if value.dtype == np.float16 else value

    def _options(self, op, options_class):
        table = op.BuiltinOptions()
        options = options_class()
        options.Init(table.Bytes, table.Pos)
        return options

    def _const_operand(self, value: np.ndarray, other_rank: int) -> torch.Tensor:
        value = value.astype(np.float32)
        return torch.from_numpy((_to_nchw(value) if other_rank == 4 else value).copy())

    def _translate(self, op) -> None:  # noqa: C901 - one branch per operator is the clearest form
        code = self._model.OperatorCodes(op.OpcodeIndex())
        name = _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if name == "CUSTOM":
            name = code.CustomCode().decode()
        inputs = [op.Inputs(i) for i in range(op.InputsLength())]
        (output,) = [op.Outputs(i) for i in range(op.OutputsLength())]
        dynamic = [i for i in inputs if i >= 0 and i not in self._constants]

        if name == "DEQUANTIZE":
            self._constants[output] = self._const(inputs[0])
            return
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            is_depthwise = name == "DEPTHWISE_CONV_2D"
            opts = self._options(op, tflite.DepthwiseConv2DOptions if is_depthwise else tflite.Conv2DOptions)
            weight = self._const(inputs[1])
            bias = self._const(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
            if is_depthwise:  # [1, kh, kw, C*mult] -> [C*mult, 1, kh, kw]
                weight = weight.transpose(3, 0, 1, 2)
                groups = self._graph.Tensors(inputs[0]).ShapeAsNumpy()[3]
            else:  # OHWI -> OIHW
                weight = weight.transpose(0, 3, 1, 2)
                groups = 1
            module = _Conv(np.ascontiguousarray(weight), bias, (opts.StrideH(), opts.StrideW()),
                           (opts.DilationHFactor(), opts.DilationWFactor()), opts.Padding() == _SAME,
                           int(groups), opts.FusedActivationFunction())
        elif name == "Convolution2DTransposeBias":
            padding, stride_w, stride_h = struct.unpack("<3i", bytes(op.CustomOptionsAsNumpy()[:12]))
            module = _TransposeConvBias(self._const(inputs[1]), self._const(inputs[2]),
                                        (stride_h, stride_w), padding == 1)
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            opts = self._options(op, tflite.Pool2DOptions)
            module = _Pool("max" if name == "MAX_POOL_2D" else "avg", (opts.FilterHeight(), opts.FilterWidth()),
                           (opts.StrideH(), opts.StrideW()), opts.Padding() == _SAME, opts.FusedActivationFunction())
        elif name in ("ADD", "MUL"):
            opts = self._options(op, tflite.AddOptions if name == "ADD" else tflite.MulOptions)
            constant, first = None, False
            if len(dynamic) == 1:
                const_index = inputs[0] if inputs[0] not in dynamic else inputs[1]
                first = const_index == inputs[0]
                constant = self._const_operand(self._const(const_index), self._rank(dynamic[0]))
            module = _Binary(name.lower(), constant, first, opts.FusedActivationFunction())
        elif name == "PRELU":
            module = _PRelu(self._const_operand(self._const(inputs[1]), self._rank(inputs[0])))
        elif name == "RELU":
            module = _Elementwise(F.relu)
        elif name == "RELU6":
            module = _Elementwise(lambda x: x.clamp(0.0, 6.0))
        elif name == "LOGISTIC":
            module = _Elementwise(torch.sigmoid)
        elif name == "HARD_SWISH":
            module = _Elementwise(lambda x: x * (x + 3.0).clamp(0.0, 6.0) / 6.0)
        elif name == "PAD":
            module = _Pad(self._const(inputs[1]))
        elif name == "RESHAPE":
            module = _Reshape(self._rank(inputs[0]), self._graph.Tensors(output).ShapeAsNumpy())
        elif name == "CONCATENATION":
            opts = self._options(op, tflite.ConcatenationOptions)
            module = _Concat(opts.Axis(), self._rank(inputs[0]), opts.FusedActivationFunction())
        elif name == "MEAN":
            opts = self._options(op, tflite.ReducerOptions)
            module = _Mean(self._const(inputs[1]).reshape(-1).tolist(), self._rank(inputs[0]), opts.KeepDims())
        elif name == "RESIZE_BILINEAR":
            opts = self._options(op, tflite.ResizeBilinearOptions)
            module = _ResizeBilinear(self._const(inputs[1]), opts.AlignCorners(), opts.HalfPixelCenters())
        else:
            raise UnsupportedModelError(f"{self.source.name}: operator {name} is not supported")
        self.ops.append(module)
        self.wiring.append((dynamic, output))

    # ----------------------------------------------------------------- running
    def forward(self, x: torch.Tensor):
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ValueError(f"{self.source.name}: expected N x {' x '.join(map(str, self.input_shape[1:]))} "
                             f"(NHWC) input, got {tuple(x.shape)}")
        values = {self.input_index: x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)}
        for module, (sources, target) in zip(self.ops, self.wiring):
            values[target] = module(*(values[s] for s in sources))
        outputs = [values[i].permute(0, 2, 3, 1) if values[i].ndim == 4 else values[i] for i in self.output_indices]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
