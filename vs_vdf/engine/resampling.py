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


@functools.lru_cache(maxsize=64)
def round_trip_bands(source: int, size: int) -> torch.Tensor:
    """Resampling ``source`` samples to ``size`` and back (bilinear, anti-aliased where it shrinks, as
    ``F.interpolate`` does it; its anti-aliasing leaves an enlargement as it is) as the diagonals of its
    matrix: (2r + 1) x source float64 weights, row k holding what sample i takes from sample i + k - r. The
    matrix is banded (r is a few samples), so applying the diagonals (``apply_bands``) costs a few passes over
    the image where ``F.interpolate`` through the intermediate size, and its backward, cost several times as
    much on the CPU."""
    matrix = axis_matrix(size, source, antialias=True) @ axis_matrix(source, size, antialias=True)
    rows, columns = matrix.nonzero(as_tuple=True)
    radius = int((columns - rows).abs().max()) if rows.numel() else 0
    bands = torch.zeros(2 * radius + 1, source, dtype=torch.float64)
    bands[columns - rows + radius, rows] = matrix[rows, columns]
    return bands


def apply_bands(frames: torch.Tensor, bands: torch.Tensor, dim: int) -> torch.Tensor:
    """``frames`` resampled along ``dim`` (-1: width, -2: height) by the diagonals of ``round_trip_bands``."""
    radius, length = bands.shape[0] // 2, frames.shape[dim]
    padded = F.pad(frames, (radius, radius) if dim == -1 else (0, 0, radius, radius))
    weights = bands.to(frames).view(bands.shape[0], *([length, 1] if dim == -2 else [length]))
    result = weights[0] * padded.narrow(dim, 0, length)
    for k in range(1, bands.shape[0]):
        result = torch.addcmul(result, weights[k], padded.narrow(dim, k, length))
    return result
