"""BiSeNet face parser (ResNet-18 context path, 19 CelebAMask-HQ classes), the VDF reference target.

Its weights cannot be fetched from a registry: users bring the checkpoint their attackers' tools
download (``79999_iter.pth``), added with ``vdf models add`` (or passed as ``--checkpoint``). The module
names below follow that checkpoint's layout so it loads strictly; ``user_files`` reads it with
``weights_only=True`` so a checkpoint cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import user_files
from .as_computed import image_8bit, matched
from .user_files import CheckpointError  # noqa: F401  (raised by load_checkpoint)

CLASSES = 19
INPUT_SIZE = 512
FACE_CLASSES = tuple(range(1, 14))  # skin, brows, eyes, glasses, ears, earring, nose, mouth, lips
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    def __init__(self, inputs: int, outputs: int, kernel: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(outputs)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample = None
        if inputs != outputs or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x):
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


def _stage(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs))


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1, self.layer2 = _stage(64, 64, 1), _stage(64, 128, 2)
        self.layer3, self.layer4 = _stage(128, 256, 2), _stage(256, 512, 2)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.conv = ConvBNReLU(inputs, outputs)
        self.conv_atten = nn.Conv2d(outputs, outputs, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(outputs)

    def forward(self, x):
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * attention


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16, self.arm32 = AttentionRefinement(256, 128), AttentionRefinement(512, 128)
        self.conv_head32, self.conv_head16 = ConvBNReLU(128, 128), ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        up32 = self.arm32(feat32) + F.interpolate(context, size=feat32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(up32, size=feat16.shape[2:], mode="nearest"))
        up16 = self.arm16(feat16) + up32
        up16 = self.conv_head16(F.interpolate(up16, size=feat8.shape[2:], mode="nearest"))
        return feat8, up16, up32


class FeatureFusion(nn.Module):
    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.convblk = ConvBNReLU(inputs, outputs, 1, 1, 0)
        self.conv1 = nn.Conv2d(outputs, outputs // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(outputs // 4, outputs, 1, bias=False)

    def forward(self, spatial, context):
        feat = self.convblk(torch.cat([spatial, context], 1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * attention + feat


class Head(nn.Module):
    def __init__(self, inputs: int, middle: int, classes: int):
        super().__init__()
        self.conv = ConvBNReLU(inputs, middle)
        self.conv_out = nn.Conv2d(middle, classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Input N x 3 x 512 x 512 ImageNet-normalised RGB; output N x 19 x 512 x 512 class logits.
    The auxiliary heads exist only so the training checkpoint loads strictly."""

    def __init__(self, classes: int = CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Head(256, 256, classes)
        self.conv_out16, self.conv_out32 = Head(128, 64, classes), Head(128, 64, classes)

    def forward(self, x):
        feat8, context8, _ = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)


def load_checkpoint(path: Path | str | None) -> BiSeNet:
    """A BiSeNet from ``path``, or from the file added with ``vdf models add`` when ``path`` is None."""
    net = BiSeNet()
    net.load_state_dict(user_files.load_state("bisenet") if path is None else user_files.checked_state(path, "bisenet")[1])
    return net  # surrogates.load freezes it with every other model


def face_mask(labels: torch.Tensor) -> torch.Tensor:
    """Where a label map (N x H x W class indices) shows the face: FACE_CLASSES."""
    return (labels >= FACE_CLASSES[0]) & (labels <= FACE_CLASSES[-1])


class FaceParser(nn.Module):
    def __init__(self, checkpoint: Path | str | None):
        super().__init__()
        self.name = "bisenet"
        self.net = load_checkpoint(checkpoint)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Differentiable class probabilities (N x 19 x 512 x 512) of frames resized to 512 x 512 as the
        attackers' script does (Pillow's bilinear resize of the 8-bit frame, antialiased when shrinking)."""
        pixels = F.interpolate(frames * 255, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                               antialias=True)
        exact = torch.stack([torch.from_numpy(np.array(
            Image.fromarray(image_8bit(frame)).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))).permute(2, 0, 1)
            for frame in frames])
        return F.softmax(self.net((matched(pixels, exact) / 255 - self.mean) / self.std), 1)

    @torch.no_grad()
    def labels(self, frames: torch.Tensor) -> torch.Tensor:
        """The attackers' label map (N x H x W class indices): the argmax at 512 x 512, resized back to the
        frame's size with nearest neighbour (OpenCV's rule: source pixel floor(x * 512 / W))."""
        parsed = self(frames).argmax(1, keepdim=True).float()
        return F.interpolate(parsed, size=frames.shape[-2:], mode="nearest")[:, 0].long()
