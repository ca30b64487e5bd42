"""face-api 68-point landmarks (iBUG layout) on a square crop around a detected face."""

from __future__ import annotations

import torch
from torch import nn

from .crop import crop, crop_to_image, square_roi
from .faceapi68 import INPUT_SIZE, FaceLandmark68Net

# face-api's own detectors return looser boxes than BlazeFace; this margin gives the net a similar framing.
BOX_SCALE = 1.1


class FaceAPI68(nn.Module):
    def __init__(self, name: str, manifest_path, tiny: bool):
        super().__init__()
        self.name = name
        self.net = FaceLandmark68Net(manifest_path, tiny)

    def forward(self, frames: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable 68 landmarks (R x 68 x 2, image pixels) for xyxy face boxes (R x 4)."""
        rois = square_roi(boxes, BOX_SCALE)
        pixels = crop(frames, rois, (INPUT_SIZE, INPUT_SIZE), image_index).permute(0, 2, 3, 1) * 255
        points = self.net(pixels).reshape(-1, 68, 2) * INPUT_SIZE
        return crop_to_image(points, rois, (INPUT_SIZE, INPUT_SIZE))
