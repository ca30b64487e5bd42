"""A differentiable JPEG round trip (baseline JPEG as libjpeg codes it: BT.601 full-range YCbCr, 4:2:0
chroma, 8 x 8 DCT, the standard's quantisation tables scaled by quality) for the optimisation's
robustness transform.

kornia ships one, but on the CPU its chroma subsampling (a Gaussian anti-aliasing filter on one channel)
sends oneDNN down a path where a 3-tap filter's backward takes 8 ms: a round trip of a 288 x 368 frame cost
55 ms forward and backward, more than the landmark models of a step. Here the 2 x 2 chroma average (what
libjpeg's encoder does) is an average pool and every transform a small matrix product.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

BLOCK = 8

# The example tables of the JPEG standard (ITU-T T.81, Annex K), luma and chroma, at quality 50.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56), (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99))
CHROMA_TABLE = ((17, 18, 24, 47) + (99,) * 4, (18, 21, 26, 66) + (99,) * 4,
                (24, 26, 56) + (99,) * 5, (47, 66) + (99,) * 6) + ((99,) * 8,) * 4

# Full-range BT.601, as JPEG files (JFIF) hold colour; rows give Y, Cb, Cr from R, G, B in [0, 255].
TO_YCBCR = torch.tensor(((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312)),
                        dtype=torch.float64)
FROM_YCBCR = torch.linalg.inv(TO_YCBCR)


def quality_scale(quality: float) -> float:
    """libjpeg's factor (in percent) on the tables for a quality in [1, 100]."""
    quality = min(max(quality, 1.0), 100.0)
    return 5000 / quality if quality < 50 else 200 - 2 * quality


def tables(quality: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The luma and chroma quantisation tables (8 x 8) libjpeg writes for ``quality``."""
    scale = quality_scale(quality)

    def scaled(table) -> torch.Tensor:
        return ((torch.tensor(table, dtype=torch.float64) * scale + 50) // 100).clamp(1, 255)

    return scaled(LUMA_TABLE), scaled(CHROMA_TABLE)


@functools.lru_cache(maxsize=8)
def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 2-D orthonormal 8 x 8 DCT-II on flattened blocks (64 x 64): coefficients = block @ M. One product
    over every block of a frame, instead of two 8 x 8 products per block."""
    k = torch.arange(BLOCK, dtype=torch.float64)
    matrix = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / (2 * BLOCK)) * math.sqrt(2 / BLOCK)
    matrix[0] /= math.sqrt(2)
    return torch.kron(matrix, matrix).T.contiguous().to(device, dtype)


def rounded(values: torch.Tensor) -> torch.Tensor:
    """Rounding with a gradient: the rounded value plus the cube of what rounding took off (Shin and Song,
    2017), so the gradient is small near a level and passes between levels."""
    nearest = torch.round(values)
    return nearest + (values - nearest).pow(3)


def _coded(planes: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Planes (N x C x H x W, H and W multiples of 8, centred on 0) through DCT, quantisation and back."""
    n, c, height, width = planes.shape
    dct = _dct_matrix(planes.dtype, planes.device)
    shape = (n, c, height // BLOCK, BLOCK, width // BLOCK, BLOCK)
    blocks = planes.reshape(shape).transpose(3, 4).reshape(-1, BLOCK * BLOCK)
    step = table.to(planes).flatten()
    restored = (rounded(blocks @ dct / step) * step) @ dct.T
    return restored.reshape(n, c, height // BLOCK, width // BLOCK, BLOCK, BLOCK).transpose(3, 4).reshape(planes.shape)


def roundtrip(frames: torch.Tensor, quality: float) -> torch.Tensor:
    """RGB frames (N x 3 x H x W in [0, 1]) as a JPEG at ``quality`` would decode them; differentiable.
    The sides are padded to multiples of 16 by repeating the edge, as the encoder does, and cropped back."""
    height, width = frames.shape[-2:]
    padded = F.pad(frames, (0, -width % 16, 0, -height % 16), mode="replicate")
    ycbcr = torch.einsum("oc,nchw->nohw", TO_YCBCR.to(padded), padded * 255)
    luma_table, chroma_table = tables(quality)
    luma = _coded(ycbcr[:, :1] - 128, luma_table) + 128
    chroma = _coded(F.avg_pool2d(ycbcr[:, 1:], 2), chroma_table)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    rgb = torch.einsum("oc,nchw->nohw", FROM_YCBCR.to(padded), torch.cat([luma, chroma], 1)) / 255
    return rgb[..., :height, :width].clamp(0, 1)
