"""MediaPipe selfie segmentation: a person-vs-background probability map at frame size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .tflite_torch import TFLiteModule

THRESHOLD = 0.5  # a pixel is the person above this probability, as MediaPipe's mask is read


class SelfieSegmentation(nn.Module):
    def __init__(self, name: str, path):
        super().__init__()
        self.name = name
        self.net = TFLiteModule(path)
        self.size = self.net.input_shape[1:3]
        self.threshold = THRESHOLD

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Differentiable person probability (N x H x W) for frames N x 3 x H x W in [0, 1]; the
        whole frame is resized to the network input, as MediaPipe's graph does."""
        pixels = F.interpolate(frames, size=self.size, mode="bilinear", align_corners=False)
        probability = self.net(pixels.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return F.interpolate(probability, size=frames.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
