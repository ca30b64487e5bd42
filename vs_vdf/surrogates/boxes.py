"""Box overlap and greedy non-maximum suppression (xyxy boxes, pixels)."""

from __future__ import annotations

import torch


def area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)


def intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    return (bottom_right - top_left).clamp(min=0).prod(-1)


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union, A x B."""
    inter = intersection(a, b)
    return inter / (area(a)[:, None] + area(b)[None] - inter + 1e-9)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Squares of the long side around the same centres (MTCNN's convention between stages)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).amax(-1, keepdim=True) / 2
    return torch.cat([centre - half, centre + half], -1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Indices kept by greedy suppression, best first; ``mode="min"`` divides by the smaller area."""
    order = scores.argsort(descending=True)
    keep = []
    while order.numel():
        top = order[0]
        keep.append(top)
        rest = order[1:]
        inter = intersection(boxes[top:top + 1], boxes[rest])[0]
        if mode == "min":
            overlap = inter / torch.minimum(area(boxes[top:top + 1]), area(boxes[rest])).clamp(min=1e-9)
        else:
            overlap = inter / (area(boxes[top:top + 1]) + area(boxes[rest]) - inter + 1e-9)
        order = rest[overlap <= threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long, device=boxes.device)


def first_or_nan(found: list, attribute: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Per frame, the best (first) face's ``attribute`` from per-frame detection results, NaN where
    a frame has none: N x ``shape``."""
    nan = like.new_full(shape, float("nan"))
    return torch.stack([getattr(f, attribute)[0].to(like) if len(f) else nan for f in found])
