"""Differentiable rotated crops, and the inverse mapping from crop coordinates back to the image.

Coordinates are continuous pixels: pixel i covers [i, i+1), so its centre is i + 0.5. A region of
interest (ROI) is ``(cx, cy, width, height, angle)`` in image pixels; ``angle`` (radians) is the
direction of the crop's x axis in the image, measured with y pointing down.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop(images: torch.Tensor, rois: torch.Tensor, size: tuple[int, int], image_index: torch.Tensor | None = None,
         padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``rois`` (R x 5) of ``images`` (N x C x H x W) into R x C x size[0] x size[1] crops,
    bilinearly, so gradients flow to the pixels."""
    if image_index is None:
        image_index = torch.arange(rois.shape[0], device=rois.device)
    height, width = images.shape[-2:]
    cx, cy, w, h, angle = rois.unbind(-1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([cos * w / width, -sin * h / width, 2 * cx / width - 1], -1),
        torch.stack([sin * w / height, cos * h / height, 2 * cy / height - 1], -1),
    ], -2)
    grid = F.affine_grid(theta.to(images.dtype), [rois.shape[0], images.shape[1], *size], align_corners=False)
    return F.grid_sample(images[image_index], grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def crop_to_image(points: torch.Tensor, rois: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Map points (R x P x 2, pixels of a crop of ``size``) back to image pixels."""
    cx, cy, w, h, angle = (v[:, None] for v in rois.unbind(-1))
    u = (points[..., 0] / size[1] - 0.5) * w
    v = (points[..., 1] / size[0] - 0.5) * h
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([cx + u * cos - v * sin, cy + u * sin + v * cos], -1)


def square_roi(boxes: torch.Tensor, scale: float = 1.0, angle: torch.Tensor | None = None) -> torch.Tensor:
    """ROI around xyxy boxes (R x 4): a square of the long side times ``scale``."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(-1) * scale
    angle = torch.zeros_like(side) if angle is None else angle
    return torch.stack([centre[:, 0], centre[:, 1], side, side, angle], -1)


def letterbox_roi(height: int, width: int, count: int, device=None) -> torch.Tensor:
    """ROI that fits a whole frame into a square, padding the short side (MediaPipe's keep-aspect resize)."""
    side = float(max(height, width))
    roi = torch.tensor([width / 2, height / 2, side, side, 0.0], device=device)
    return roi.expand(count, 5)
