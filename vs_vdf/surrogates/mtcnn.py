"""MTCNN (P-Net, R-Net, O-Net) from the facenet-pytorch weights, with its three-stage cascade.

Every stage's network output is differentiable with respect to the frame pixels (crops are taken
with a bilinear sampler); only the choice of which boxes go on to the next stage is not.
Thresholds and the image pyramid follow the usual defaults (minimum face 20 px, factor 0.709,
stage thresholds 0.6 / 0.7 / 0.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import nms, square
from .crop import crop

MIN_FACE = 20
FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), 1), self.conv4_2(x)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)  # the original flattening order
        x = self.prelu4(self.dense4(x))
        return F.softmax(self.dense5_1(x), 1), self.dense5_2(x)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return F.softmax(self.dense6_1(x), 1), self.dense6_2(x), self.dense6_3(x)


def _load(net: nn.Module, path: Path) -> nn.Module:
    """Weights only; ``surrogates.load`` puts the whole surrogate in eval mode and freezes it."""
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net


@dataclass
class Faces:
    """MTCNN result for one frame: boxes xyxy (F x 4), scores (F), 5 landmarks (F x 5 x 2), best first."""

    boxes: torch.Tensor
    scores: torch.Tensor
    points: torch.Tensor

    def __len__(self) -> int:
        return self.scores.shape[0]


def _normalise(frames: torch.Tensor) -> torch.Tensor:
    return (frames * 255 - 127.5) * 0.0078125


def _refine(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _box_rois(boxes: torch.Tensor) -> torch.Tensor:
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    return torch.stack([centre[:, 0], centre[:, 1], size[:, 0], size[:, 1], torch.zeros_like(size[:, 0])], -1)


class MTCNN(nn.Module):
    def __init__(self, pnet: Path, rnet: Path, onet: Path):
        super().__init__()
        self.name = "mtcnn"
        self.thresholds = THRESHOLDS  # P-, R- and O-Net face probability thresholds
        self.threshold = 1  # its measure is the number of faces found: below one face, none was
        self.pnet, self.rnet, self.onet = _load(PNet(), pnet), _load(RNet(), rnet), _load(ONet(), onet)

    @staticmethod
    def scales(height: int, width: int) -> list[float]:
        scale, side, found = 12 / MIN_FACE, min(height, width) * 12 / MIN_FACE, []
        while side >= 12:
            found.append(scale)
            scale, side = scale * FACTOR, side * FACTOR
        return found

    def pyramid(self, frames: torch.Tensor) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """Differentiable P-Net output per scale: (scale, face probability N x h x w, offsets N x 4 x h x w)."""
        height, width = frames.shape[-2:]
        x = _normalise(frames)
        out = []
        for scale in self.scales(height, width):
            resized = F.interpolate(x, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
            probability, offsets = self.pnet(resized)
            out.append((scale, probability[:, 1], offsets))
        return out

    def refine_net(self, frames: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor):
        """Differentiable R-Net on 24x24 crops of ``boxes``: (face probability, box offsets)."""
        probability, offsets = self.rnet(crop(_normalise(frames), _box_rois(boxes), (24, 24), image_index))
        return probability[:, 1], offsets

    def output_net(self, frames: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor):
        """Differentiable O-Net on 48x48 crops: (face probability, box offsets, 5 points in image pixels)."""
        probability, offsets, points = self.onet(crop(_normalise(frames), _box_rois(boxes), (48, 48), image_index))
        size = boxes[:, 2:] - boxes[:, :2]
        xy = torch.stack([points[:, :5], points[:, 5:]], -1) * size[:, None] + boxes[:, None, :2]
        return probability[:, 1], offsets, xy

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[Faces]:
        boxes, scores, index = [], [], []
        for scale, probability, offsets in self.pyramid(frames):
            for i in range(frames.shape[0]):
                ys, xs = (probability[i] >= self.thresholds[0]).nonzero(as_tuple=True)
                if ys.numel() == 0:
                    continue
                cells = torch.stack([xs, ys, xs, ys], -1).float()
                found = torch.floor((cells * 2 + cells.new_tensor([1.0, 1.0, 12.0, 12.0])) / scale)
                found = _refine(found, offsets[i, :, ys, xs].T)
                score = probability[i, ys, xs]
                keep = nms(found, score, 0.5)
                boxes.append(found[keep]), scores.append(score[keep]), index.append(torch.full_like(keep, i))
        results = []
        all_boxes = torch.cat(boxes) if boxes else frames.new_zeros(0, 4)
        all_scores = torch.cat(scores) if scores else frames.new_zeros(0)
        all_index = torch.cat(index) if index else torch.zeros(0, dtype=torch.long, device=frames.device)
        for i in range(frames.shape[0]):
            mine = all_index == i
            results.append(self._cascade(frames[i:i + 1], all_boxes[mine], all_scores[mine]))
        return results

    def _cascade(self, frames: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor) -> Faces:
        """R-Net and O-Net on the P-Net candidates of one frame (``frames`` is 1 x 3 x H x W: normalising
        the whole batch for every frame's crops cost the detection as much as the networks)."""
        empty = Faces(frames.new_zeros(0, 4), frames.new_zeros(0), frames.new_zeros(0, 5, 2))
        if boxes.numel() == 0:
            return empty
        boxes = square(boxes[nms(boxes, scores, 0.7)])
        at = torch.zeros(boxes.shape[0], dtype=torch.long, device=frames.device)
        probability, offsets = self.refine_net(frames, boxes, at)
        keep = probability >= self.thresholds[1]
        if not keep.any():
            return empty
        boxes, probability, offsets = boxes[keep], probability[keep], offsets[keep]
        keep = nms(boxes, probability, 0.7)
        boxes = square(_refine(boxes[keep], offsets[keep]))
        probability, offsets, points = self.output_net(frames, boxes, at[: boxes.shape[0]])
        keep = probability >= self.thresholds[2]
        if not keep.any():
            return empty
        boxes = _refine(boxes[keep], offsets[keep])
        probability, points = probability[keep], points[keep]
        keep = nms(boxes, probability, 0.7, mode="min")
        return Faces(boxes[keep], probability[keep], points[keep])
