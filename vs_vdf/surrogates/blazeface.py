"""BlazeFace detectors: letterboxed input, anchor decoding, weighted non-maximum suppression.

The network output is decoded exactly as MediaPipe's graph does (anchor centres, raw / input size,
sigmoid of the clipped logit, weighted NMS at IoU 0.3); boxes and the six keypoints (right eye,
left eye, nose tip, mouth, right ear tragion, left ear tragion) come back in image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .boxes import iou
from .crop import crop, crop_to_image, letterbox_roi
from .tflite_torch import TFLiteModule

# name -> (input size, [(grid size, anchors per cell), ...], score threshold)
VARIANTS = {
    "blazeface_short": (128, [(16, 2), (8, 6)], 0.5),
    "blazeface_full": (192, [(48, 1)], 0.6),
    "blazeface_back": (256, [(16, 2), (8, 6)], 0.5),
}
NMS_IOU = 0.3


def make_anchors(layout: list[tuple[int, int]]) -> torch.Tensor:
    centres = []
    for grid, per_cell in layout:
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        cell = torch.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], -1).reshape(-1, 1, 2)
        centres.append(cell.expand(-1, per_cell, 2).reshape(-1, 2))
    return torch.cat(centres)


@dataclass
class Detections:
    """Faces found in one frame, best first: boxes xyxy (F x 4), keypoints (F x 6 x 2), scores (F)."""

    boxes: torch.Tensor
    keypoints: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return self.scores.shape[0]


def weighted_nms(boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor, threshold: float) -> Detections:
    """MediaPipe's blending suppression: overlapping candidates are averaged, weighted by score."""
    order = scores.argsort(descending=True)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    kept_boxes, kept_points, kept_scores = [], [], []
    remaining = torch.ones_like(scores, dtype=torch.bool)
    while remaining.any():
        top = int(remaining.nonzero()[0])
        overlap = iou(boxes[top:top + 1], boxes)[0]
        group = remaining & (overlap > threshold)
        group[top] = True
        weight = scores[group] / scores[group].sum()
        kept_boxes.append((boxes[group] * weight[:, None]).sum(0))
        kept_points.append((keypoints[group] * weight[:, None, None]).sum(0))
        kept_scores.append(scores[top])
        remaining &= ~group
    if not kept_scores:
        return Detections(boxes.new_zeros(0, 4), keypoints.new_zeros(0, 6, 2), scores.new_zeros(0))
    return Detections(torch.stack(kept_boxes), torch.stack(kept_points), torch.stack(kept_scores))


class BlazeFace(nn.Module):
    def __init__(self, name: str, path):
        super().__init__()
        self.name = name
        self.size, layout, self.threshold = VARIANTS[name]
        self.net = TFLiteModule(path)
        self.register_buffer("anchors", make_anchors(layout))

    def raw(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Differentiable: (regressors N x A x 16, logits N x A, letterbox ROIs) for frames N x 3 x H x W in [0, 1]."""
        rois = letterbox_roi(frames.shape[2], frames.shape[3], frames.shape[0], frames.device)
        pixels = crop(frames, rois, (self.size, self.size)).permute(0, 2, 3, 1) * 2 - 1
        regressors, logits = self.net(pixels)
        return regressors, logits[..., 0], rois

    def scores(self, frames: torch.Tensor) -> torch.Tensor:
        """Differentiable per-anchor face probability (N x A), as MediaPipe scores it."""
        return torch.sigmoid(self.raw(frames)[1].clamp(-100, 100))

    def decode(self, regressors: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (N x A x 4, xyxy) and keypoints (N x A x 6 x 2) in image pixels; differentiable."""
        raw = regressors / self.size
        centre = self.anchors + raw[..., :2]
        half = raw[..., 2:4] / 2
        corners = torch.stack([centre - half, centre + half], -2)  # N x A x 2 x 2
        points = self.anchors[:, None] + raw[..., 4:16].reshape(*raw.shape[:-1], 6, 2)
        both = torch.cat([corners, points], -2) * self.size  # pixels of the letterboxed input
        n, a = both.shape[:2]
        image = crop_to_image(both.reshape(n, a * 8, 2), rois, (self.size, self.size)).reshape(n, a, 8, 2)
        return image[:, :, :2].reshape(n, a, 4), image[:, :, 2:]

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[Detections]:
        regressors, logits, rois = self.raw(frames)
        scores = torch.sigmoid(logits.clamp(-100, 100))
        boxes, keypoints = self.decode(regressors, rois)
        found = []
        for i in range(frames.shape[0]):
            keep = scores[i] >= self.threshold
            found.append(weighted_nms(boxes[i][keep], keypoints[i][keep], scores[i][keep], NMS_IOU))
        return found
