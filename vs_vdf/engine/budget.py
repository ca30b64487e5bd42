"""Where the perturbation may go: a per-pixel budget in [0, 1] from the clean frame.

Two factors. The head region (around the clean face box, enlarged to cover hair, ears and chin,
with soft edges) is where every attacked model looks, so perturbing the background buys nothing.
Texture masking: the eye tolerates changes in busy areas far more than on smooth skin or sky, so the
budget follows the local contrast of the clean frame, with a floor that keeps some room everywhere
in the head region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HEAD_SCALE = 1.9  # side of the head region over the face box's long side
HEAD_SHIFT_UP = 0.15  # hair sits above the box: shift the region up by this fraction of its side
TEXTURE_FLOOR = 0.4
TEXTURE_FULL = 0.06  # local standard deviation (of [0, 1] luma) that earns the full budget


ELONGATION = 1.15  # the region's vertical radius over its horizontal one
FULL_INSIDE, ZERO_BEYOND = 0.8, 1.2  # the mask is 1 inside this share of the radius and fades to 0 at that one


def head_ellipse(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres (N x 2) and horizontal and vertical radii (N each) of the head regions of xyxy face boxes."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).amax(-1) * HEAD_SCALE
    centre = torch.stack([centre[:, 0], centre[:, 1] - HEAD_SHIFT_UP * side], -1)
    return centre, side / 2, side / 2 * ELONGATION


def head_extent(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (N x 2) and sizes (N x 2, width and height) of the rectangles outside which the head
    region of each box is zero."""
    centre, radius_x, radius_y = head_ellipse(boxes)
    return centre, torch.stack([radius_x, radius_y], -1) * 2 * ZERO_BEYOND


def head_region(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Soft elliptical masks (N x 1 x H x W) around xyxy face boxes (N x 4); NaN boxes give zeros."""
    centre, radius_x, radius_y = head_ellipse(boxes)
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    dx = (xs[None, None, :] - centre[:, 0, None, None]) / radius_x[:, None, None]
    dy = (ys[None, :, None] - centre[:, 1, None, None]) / radius_y[:, None, None]
    radius = (dx.pow(2) + dy.pow(2)).sqrt()
    mask = ((ZERO_BEYOND - radius) / (ZERO_BEYOND - FULL_INSIDE)).clamp(0, 1)
    return torch.nan_to_num(mask, nan=0.0)[:, None]


def texture(frames: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Texture masking weight (N x 1 x H x W) from the local contrast of the luma."""
    luma = (frames * frames.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    pad = window // 2
    mean = F.avg_pool2d(F.pad(luma, (pad,) * 4, mode="replicate"), window, 1)
    square = F.avg_pool2d(F.pad(luma.pow(2), (pad,) * 4, mode="replicate"), window, 1)
    deviation = (square - mean.pow(2)).clamp(min=0).sqrt()
    return TEXTURE_FLOOR + (1 - TEXTURE_FLOOR) * (deviation / TEXTURE_FULL).clamp(max=1)


def budget(frames: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per-pixel share of epsilon (N x 1 x H x W) for clean frames and their face boxes."""
    return head_region(boxes, *frames.shape[-2:]) * texture(frames)
