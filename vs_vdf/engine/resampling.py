"""Bilinear resampling along one axis as a matrix: resampling an image is then two small products,
(rows @ image @ columns.T), which is exact, composes (a round trip is one matrix per axis) and has a cheap
backward on the CPU where ``F.interpolate``'s is slow."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=64)
def axis_matrix(source: int, size: int, antialias: bool = False, dtype: torch.dtype = torch.float64,
                device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """The matrix (size x source) that resamples a vector of ``source`` samples to ``size`` exactly as bilinear
    ``F.interpolate`` (align_corners=False, ``antialias``) does along one axis of an image (computed in
    float64, kept per dtype and device: callers share it and must not change it)."""
    # One impulse per image; two columns, since PyTorch resamples one-pixel-wide images differently.
    impulses = torch.eye(source, dtype=torch.float64)[:, None, :, None].expand(source, 1, source, 2)
    resampled = F.interpolate(impulses, size=(size, 2), mode="bilinear", align_corners=False, antialias=antialias)
    return resampled[:, 0, :, 0].T.to(device, dtype)
