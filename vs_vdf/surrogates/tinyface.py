"""face-api.js's TinyFaceDetector, a held-out detector of another family (tiny-YOLOv2 with separable
convolutions, 13 x 13 cells, five anchors): the protection never optimises against it, so what it sees
on protected frames measures transfer to detectors vs-vdf has not attacked.

Processing is face-api's for a tensor input at its default options: the frame padded with zeros at
the bottom or right to a square, resized to 416 x 416 with TensorFlow's legacy bilinear rule (source
pixel = destination x in / out, no half-pixel offset), the mean RGB (117.001, 114.697, 97.404)
subtracted and divided by 255; a face is a cell-anchor whose sigmoid score is above 0.5, boxes kept
by non-maximum suppression at IoU 0.4.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import nms
from .s3fd import Faces
from .tfjs import load_weights

INPUT = 416
MEAN_RGB = (117.001, 114.697, 97.404)
ANCHORS = ((1.603231, 2.094468), (6.041143, 7.080126), (2.882459, 3.518061), (4.266906, 5.178857),
           (9.041765, 10.66308))
THRESHOLD = 0.5
IOU = 0.4
SEPARABLE = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _legacy_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow's resizeBilinear without align_corners or half-pixel centres (N x C x H x W)."""
    def weights(length: int):
        position = torch.arange(size, device=images.device, dtype=images.dtype) * (length / size)
        low = position.floor().long().clamp(max=length - 1)
        return low, (low + 1).clamp(max=length - 1), position - low

    top, bottom, dy = weights(images.shape[-2])
    left, right, dx = weights(images.shape[-1])
    rows = images[..., top, :] + (images[..., bottom, :] - images[..., top, :]) * dy[:, None]
    return rows[..., left] + (rows[..., right] - rows[..., left]) * dx


def _same_pool(x: torch.Tensor, stride: int) -> torch.Tensor:
    """2 x 2 max pooling with TensorFlow's SAME padding (extra row / column at the end)."""
    extra_w = max((-(-x.shape[-1] // stride) - 1) * stride + 2 - x.shape[-1], 0)
    extra_h = max((-(-x.shape[-2] // stride) - 1) * stride + 2 - x.shape[-2], 0)
    return F.max_pool2d(F.pad(x, (0, extra_w, 0, extra_h), value=float("-inf")), 2, stride)


class TinyFaceDetector(nn.Module):
    threshold = THRESHOLD

    def __init__(self, manifest: Path):
        super().__init__()
        self.name = "tinyface"
        weights = {key: torch.from_numpy(value) for key, value in load_weights(manifest).items()}
        self.register_buffer("conv0_w", weights["conv0/filters"].permute(3, 2, 0, 1).contiguous())
        self.register_buffer("conv0_b", weights["conv0/bias"])
        for name in SEPARABLE:
            self.register_buffer(f"{name}_dw", weights[f"{name}/depthwise_filter"].permute(2, 3, 0, 1).contiguous())
            self.register_buffer(f"{name}_pw", weights[f"{name}/pointwise_filter"].permute(3, 2, 0, 1).contiguous())
            self.register_buffer(f"{name}_b", weights[f"{name}/bias"])
        self.register_buffer("conv8_w", weights["conv8/filters"].permute(3, 2, 0, 1).contiguous())
        self.register_buffer("conv8_b", weights["conv8/bias"])
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1))
        self.register_buffer("anchors", torch.tensor(ANCHORS))

    def raw(self, frames: torch.Tensor) -> torch.Tensor:
        """Per frame, cell and anchor the five outputs (N x 13 x 13 x 5 x 5: x, y, w, h, score logits)."""
        height, width = frames.shape[-2:]
        side = max(height, width)
        square = F.pad(frames * 255, (0, side - width, 0, side - height))
        x = (_legacy_resize(square, INPUT) - self.mean) / 255
        x = F.leaky_relu(F.conv2d(x, self.conv0_w, self.conv0_b), 0.1)
        for name in SEPARABLE:
            x = _same_pool(x, 2)
            x = F.conv2d(F.pad(x, (1, 1, 1, 1)), getattr(self, f"{name}_dw"), groups=x.shape[1])
            x = F.leaky_relu(F.conv2d(x, getattr(self, f"{name}_pw"), getattr(self, f"{name}_b")), 0.1)
        x = F.conv2d(_same_pool(x, 1), self.conv8_w, self.conv8_b)
        cells = x.shape[-1]
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], cells, cells, len(ANCHORS), 5)

    def scores(self, frames: torch.Tensor) -> torch.Tensor:
        """Every cell-anchor's face score (N x 845)."""
        return self.raw(frames)[..., 4].sigmoid().flatten(1)

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[Faces]:
        height, width = frames.shape[-2:]
        scale = INPUT / max(height, width)
        # The boxes are relative to the resized image before padding (face-api's correction factors).
        shown_w, shown_h = round(width * scale), round(height * scale)
        out = self.raw(frames)
        cells = out.shape[1]
        grid_y, grid_x = torch.meshgrid(torch.arange(cells, device=out.device), torch.arange(cells, device=out.device),
                                        indexing="ij")
        found = []
        for one in out:
            score = one[..., 4].sigmoid()
            row, col, anchor = (score > THRESHOLD).nonzero(as_tuple=True)
            t = one[row, col, anchor]
            centre_x = (grid_x[row, col] + t[:, 0].sigmoid()) / cells * (INPUT / shown_w)
            centre_y = (grid_y[row, col] + t[:, 1].sigmoid()) / cells * (INPUT / shown_h)
            box_w = t[:, 2].exp() * self.anchors[anchor, 0] / cells * (INPUT / shown_w)
            box_h = t[:, 3].exp() * self.anchors[anchor, 1] / cells * (INPUT / shown_h)
            relative = torch.stack([centre_x - box_w / 2, centre_y - box_h / 2, centre_x + box_w / 2,
                                    centre_y + box_h / 2], 1)
            keep = nms(relative, score[row, col, anchor], IOU)
            found.append(Faces(relative[keep] * relative.new_tensor([width, height, width, height]),
                               score[row, col, anchor][keep]))
        return found
