"""2D-FAN-4, the 68-point landmark network of the ``face-alignment`` package: four stacked hourglasses
giving 68 heatmaps of 64 x 64 from a 256 x 256 face crop. Its points alone set every camera pose in
the ER-NeRF family.

The weights are the user's own file (``vdf models add 2DFAN4-11f355bf06.pth.tar``); module names
follow that file so it loads strictly. Processing is the package's, step for step: the crop centre
and scale from the S3FD box (centre raised by 0.12 of the box height, scale = (width + height) / 195),
its integer corners, the zero-padded region resized to 256 x 256 by OpenCV on 8-bit pixels, the last
hourglass's heatmaps, their argmax shifted a quarter pixel toward the larger neighbour, and the
inverse crop transform truncated to whole pixels. ``landmarks`` returns exactly those points;
``forward`` is the differentiable version (a soft argmax through the same crop) that the attack uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .as_computed import image_8bit, matched

POINTS = 68
CROP = 256
HEATMAP = 64
STACKS = 4
HOURGLASS_DEPTH = 4
FEATURES = 256
REFERENCE_SCALE = 195.0  # the S3FD box's width + height per unit of crop scale
CENTRE_RAISE = 0.12  # of the box height
SCALE_UNIT = 200.0  # crop side in pixels per unit of scale
SHARPNESS = 30.0  # soft-argmax temperature on heatmaps whose peak is about 1
SOFT_WINDOW = 2  # heatmap pixels either side of the argmax that the soft argmax averages over


class ConvBlock(nn.Module):
    """Pre-activation residual block whose three 3x3 convolutions give 1/2, 1/4 and 1/4 of the output."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        half, quarter = outputs // 2, outputs // 4
        self.bn1, self.conv1 = nn.BatchNorm2d(inputs), nn.Conv2d(inputs, half, 3, 1, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(half), nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3, self.conv3 = nn.BatchNorm2d(quarter), nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
        self.downsample = None
        if inputs != outputs:
            self.downsample = nn.Sequential(nn.BatchNorm2d(inputs), nn.ReLU(), nn.Conv2d(inputs, outputs, 1, bias=False))

    def forward(self, x):
        first = self.conv1(F.relu(self.bn1(x)))
        second = self.conv2(F.relu(self.bn2(first)))
        third = self.conv3(F.relu(self.bn3(second)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.cat([first, second, third], 1) + shortcut


class HourGlass(nn.Module):
    """Recursive encoder-decoder: level L keeps a full-resolution branch (b1_L) and recurses at half size."""

    def __init__(self, depth: int, features: int):
        super().__init__()
        self.depth = depth
        for level in range(depth, 0, -1):
            for branch in ("b1", "b2", "b3") + (("b2_plus",) if level == 1 else ()):
                self.add_module(f"{branch}_{level}", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        low = getattr(self, f"b2_{level}")(F.avg_pool2d(x, 2, 2))
        low = self._level(level - 1, low) if level > 1 else getattr(self, "b2_plus_1")(low)
        low = getattr(self, f"b3_{level}")(low)
        return getattr(self, f"b1_{level}")(x) + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x):
        return self._level(self.depth, x)


class FANNet(nn.Module):
    """Input N x 3 x 256 x 256 RGB in [0, 1]; output the last stack's N x 68 x 64 x 64 heatmaps."""

    def __init__(self, stacks: int = STACKS):
        super().__init__()
        self.stacks = stacks
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64)
        self.conv2, self.conv3, self.conv4 = ConvBlock(64, 128), ConvBlock(128, 128), ConvBlock(128, FEATURES)
        for i in range(stacks):
            self.add_module(f"m{i}", HourGlass(HOURGLASS_DEPTH, FEATURES))
            self.add_module(f"top_m_{i}", ConvBlock(FEATURES, FEATURES))
            self.add_module(f"conv_last{i}", nn.Conv2d(FEATURES, FEATURES, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(FEATURES))
            self.add_module(f"l{i}", nn.Conv2d(FEATURES, POINTS, 1))
            if i < stacks - 1:  # the feedback of one stack's features and heatmaps into the next
                self.add_module(f"bl{i}", nn.Conv2d(FEATURES, FEATURES, 1))
                self.add_module(f"al{i}", nn.Conv2d(POINTS, FEATURES, 1))

    def forward(self, x):
        x = F.avg_pool2d(self.conv2(F.relu(self.bn1(self.conv1(x)))), 2, 2)
        previous = self.conv4(self.conv3(x))
        for i in range(self.stacks):
            features = getattr(self, f"top_m_{i}")(getattr(self, f"m{i}")(previous))
            features = F.relu(getattr(self, f"bn_end{i}")(getattr(self, f"conv_last{i}")(features)))
            heatmaps = getattr(self, f"l{i}")(features)
            if i < self.stacks - 1:
                previous = previous + getattr(self, f"bl{i}")(features) + getattr(self, f"al{i}")(heatmaps)
        return heatmaps


@dataclass(frozen=True)
class CropGeometry:
    """Where face-alignment cuts FAN's input from a detector box: centre, scale, integer corners."""

    centre: tuple[float, float]
    scale: float
    left: int
    top: int
    right: int
    bottom: int

    @classmethod
    def of(cls, box) -> "CropGeometry":
        x1, y1, x2, y2 = (float(v) for v in box)
        centre = (x2 - (x2 - x1) / 2.0, y2 - (y2 - y1) / 2.0 - (y2 - y1) * CENTRE_RAISE)
        scale = (x2 - x1 + y2 - y1) / REFERENCE_SCALE
        left, top = _crop_to_image((1.0, 1.0), centre, scale)
        right, bottom = _crop_to_image((float(CROP), float(CROP)), centre, scale)
        return cls(centre, scale, left, top, right, bottom)

    def to_image(self, points: torch.Tensor) -> torch.Tensor:
        """Heatmap coordinates (... x 2) to image pixels, continuously (the package truncates after)."""
        side = SCALE_UNIT * self.scale
        centre = points.new_tensor(self.centre)
        return points * (side / HEATMAP) + centre - side / 2


def _crop_to_image(point: tuple[float, float], centre: tuple[float, float], scale: float) -> tuple[int, int]:
    """The package's corner arithmetic (a float32 3x3 transform, inverted, truncated): kept bit for bit
    because one pixel of difference shifts the whole crop."""
    side = SCALE_UNIT * scale
    transform = torch.eye(3)
    transform[0, 0] = transform[1, 1] = CROP / side
    transform[0, 2] = CROP * (-centre[0] / side + 0.5)
    transform[1, 2] = CROP * (-centre[1] / side + 0.5)
    corner = torch.inverse(transform) @ torch.tensor([point[0], point[1], 1.0])
    x, y = corner[:2].int().tolist()
    return x, y


def _region(image: torch.Tensor | np.ndarray, crop: CropGeometry):
    """The crop's rectangle of one image (C x H x W tensor or H x W x C array), zero outside the image."""
    tensor = isinstance(image, torch.Tensor)
    height, width = image.shape[-2:] if tensor else image.shape[:2]
    left, top = max(0, -crop.left), max(0, -crop.top)
    right, bottom = max(0, crop.right - width), max(0, crop.bottom - height)
    if tensor:
        padded = F.pad(image, (left, right, top, bottom))
        return padded[:, crop.top + top:crop.bottom + top, crop.left + left:crop.right + left]
    padded = np.pad(image, ((top, bottom), (left, right), (0, 0)))
    return padded[crop.top + top:crop.bottom + top, crop.left + left:crop.right + left]


def exact_peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """face-alignment's point per heatmap (N x 68 x 2, heatmap pixels): the argmax, moved a quarter pixel
    toward the larger neighbour on each axis away from the border, minus half a pixel."""
    count, points, height, width = heatmaps.shape
    flat = heatmaps.flatten(2)
    index = flat.argmax(-1)
    x, y = index % width, index // width
    inside = (x > 0) & (x < width - 1) & (y > 0) & (y < height - 1)
    xs, ys = x.clamp(1, width - 2), y.clamp(1, height - 2)

    def at(row, col):
        return flat.gather(-1, (row * width + col)[..., None])[..., 0]

    shift = torch.stack([torch.sign(at(y, xs + 1) - at(y, xs - 1)), torch.sign(at(ys + 1, x) - at(ys - 1, x))], -1)
    peaks = torch.stack([x, y], -1).float() + 1 + torch.where(inside[..., None], 0.25 * shift, 0.0)
    return peaks - 0.5


def soft_peaks(heatmaps: torch.Tensor) -> torch.Tensor:
    """A differentiable stand-in for ``exact_peaks``: the softmax-weighted mean position, plus half a pixel,
    over a small window around the argmax (so it stays near the exact point however flat the map)."""
    count, points, height, width = heatmaps.shape
    index = heatmaps.detach().flatten(2).argmax(-1)
    xs = torch.arange(width, device=heatmaps.device, dtype=heatmaps.dtype)
    ys = torch.arange(height, device=heatmaps.device, dtype=heatmaps.dtype)
    near_x = ((xs - (index % width)[..., None]).abs() <= SOFT_WINDOW)[..., None, :]
    near_y = ((ys - (index // width)[..., None]).abs() <= SOFT_WINDOW)[..., :, None]
    logits = (heatmaps * SHARPNESS).masked_fill(~(near_x & near_y), float("-inf"))
    weights = F.softmax(logits.flatten(2), -1).view(count, points, height, width)
    return torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], -1) + 0.5


class FAN2D(nn.Module):
    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.name = "fan2d"
        self.net = FANNet()
        self.net.load_state_dict(state)

    def crops(self, frames: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, list[CropGeometry]]:
        """FAN's inputs (R x 3 x 256 x 256 in [0, 1]) for boxes (R x 4) of frames[index]: OpenCV's 8-bit
        values forward, the float bilinear resize's gradient backward."""
        geometry = [CropGeometry.of(box) for box in boxes.detach().double().cpu()]
        if not geometry:
            return frames.new_zeros(0, 3, CROP, CROP), geometry
        out = []
        for crop, i in zip(geometry, index.tolist()):
            region = _region(frames[i] * 255, crop)
            resized = F.interpolate(region[None], size=(CROP, CROP), mode="bilinear", align_corners=False)[0]
            exact = cv2.resize(np.ascontiguousarray(_region(image_8bit(frames[i]), crop)), (CROP, CROP),
                               interpolation=cv2.INTER_LINEAR)
            out.append(matched(resized, torch.from_numpy(exact).permute(2, 0, 1)))
        return torch.stack(out) / 255, geometry

    @staticmethod
    def _to_image(peaks: torch.Tensor, geometry: list[CropGeometry]) -> torch.Tensor:
        return torch.stack([crop.to_image(p) for crop, p in zip(geometry, peaks)]) if geometry else \
            peaks.new_zeros(0, POINTS, 2)

    def forward(self, frames: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Differentiable landmarks (R x 68 x 2, image pixels) in the crops of ``boxes``."""
        crops, geometry = self.crops(frames, boxes, index)
        return self._to_image(soft_peaks(self.net(crops)), geometry)

    @torch.no_grad()
    def landmarks(self, frames: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The landmarks face-alignment returns (R x 68 x 2, whole pixels) for boxes of frames[index]."""
        crops, geometry = self.crops(frames, boxes, index)
        peaks = exact_peaks(self.net(crops).float().cpu()).double()
        return self._to_image(peaks, geometry).trunc().to(frames)
