"""face-api's 68-point landmark nets (full and tiny) in PyTorch, from their TF.js weights.

Both are stacks of "dense blocks" of depthwise-separable convolutions: each block's first conv halves
the resolution, every later conv sees the ReLU of the sum of all earlier outputs of the block. The
full net has four blocks of four convs, the tiny one three blocks of three.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .tf_padding import conv2d_same
from .tfjs import load_weights

INPUT_SIZE = 112
MEAN_RGB = (122.782, 117.001, 104.298)


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(array.copy())


class _SeparableConv(nn.Module):
    def __init__(self, weights: dict, prefix: str, stride: int):
        super().__init__()
        depthwise = weights[f"{prefix}/depthwise_filter"]  # kh, kw, C, 1
        pointwise = weights[f"{prefix}/pointwise_filter"]  # 1, 1, C, O
        self.register_buffer("depthwise", _tensor(depthwise.transpose(2, 3, 0, 1)))
        self.register_buffer("pointwise", _tensor(pointwise.transpose(3, 2, 0, 1)))
        self.register_buffer("bias", _tensor(weights[f"{prefix}/bias"]))
        self.stride = stride

    def forward(self, x):
        x = conv2d_same(x, self.depthwise, stride=(self.stride,) * 2, groups=x.shape[1])
        return F.conv2d(x, self.pointwise, self.bias)


class _PlainConv(nn.Module):
    def __init__(self, weights: dict, prefix: str, stride: int):
        super().__init__()
        self.register_buffer("weight", _tensor(weights[f"{prefix}/filters"].transpose(3, 2, 0, 1)))
        self.register_buffer("bias", _tensor(weights[f"{prefix}/bias"]))
        self.stride = stride

    def forward(self, x):
        return conv2d_same(x, self.weight, self.bias, (self.stride,) * 2)


class _DenseBlock(nn.Module):
    def __init__(self, weights: dict, prefix: str, convs: int, first: bool):
        super().__init__()
        head = _PlainConv(weights, f"{prefix}/conv0", 2) if first else _SeparableConv(weights, f"{prefix}/conv0", 2)
        self.convs = nn.ModuleList([head] + [_SeparableConv(weights, f"{prefix}/conv{i}", 1) for i in range(1, convs)])

    def forward(self, x):
        outputs = [F.relu(self.convs[0](x))]
        for conv in self.convs[1:]:
            outputs.append(conv(F.relu(sum(outputs))))
        return F.relu(sum(outputs))


class FaceLandmark68Net(nn.Module):
    """Input N x 112 x 112 x 3 RGB in 0..255 (a square face crop, as face-api feeds it);
    output N x 136: 68 (x, y) pairs in [0, 1] of the crop."""

    def __init__(self, manifest_path: Path, tiny: bool):
        super().__init__()
        weights = load_weights(manifest_path)
        blocks, convs = (3, 3) if tiny else (4, 4)
        self.blocks = nn.Sequential(*[_DenseBlock(weights, f"dense{i}", convs, first=i == 0) for i in range(blocks)])
        self.register_buffer("fc_weight", _tensor(weights["fc/weights"].T))
        self.register_buffer("fc_bias", _tensor(weights["fc/bias"]))
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"faceapi68: expected N x 112 x 112 x 3 input, got {tuple(x.shape)}")
        x = (x.permute(0, 3, 1, 2) - self.mean) / 255.0
        x = self.blocks(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)  # the 7x7 (tiny: 14x14) VALID average pool
        return F.linear(x, self.fc_weight, self.fc_bias)
