"""FaceMesh: 468 landmarks from a rotated crop around a detected (or tracked) face, as MediaPipe does it."""

from __future__ import annotations

import torch
from torch import nn

from .crop import crop, crop_to_image, square_roi
from .tflite_torch import TFLiteModule

SIZE = 192
ROI_SCALE = 1.5


def roi_from_detection(box: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """ROI (R x 5) from BlazeFace boxes (R x 4) and keypoints (R x 6 x 2): eyes level, long side x 1.5."""
    eyes = keypoints[:, 1] - keypoints[:, 0]
    angle = torch.atan2(eyes[:, 1], eyes[:, 0])
    return square_roi(box, ROI_SCALE, angle)


class FaceMesh(nn.Module):
    def __init__(self, name: str, path):
        super().__init__()
        self.name = name
        self.net = TFLiteModule(path)

    def forward(self, frames: torch.Tensor, rois: torch.Tensor, image_index: torch.Tensor | None = None):
        """Differentiable: landmarks (R x 468 x 3, image pixels; z in the same scale as x) and the
        face-presence logit (R; sigmoid > 0.5 means a face) for each ROI of frames (N x 3 x H x W in [0, 1]).
        The logit, not the probability, is returned: the probability saturates at 1 and has no gradient."""
        pixels = crop(frames, rois, (SIZE, SIZE), image_index, padding_mode="border").permute(0, 2, 3, 1)
        coords, presence = self.net(pixels)
        coords = coords.reshape(-1, 468, 3)
        xy = crop_to_image(coords[..., :2], rois, (SIZE, SIZE))
        z = coords[..., 2:] * rois[:, None, 2:3] / SIZE
        return torch.cat([xy, z], -1), presence.reshape(-1)
