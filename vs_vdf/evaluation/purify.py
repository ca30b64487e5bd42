"""Purifications an attacker may apply to a protected video before using it. Each takes frames
(N x 3 x H x W in [0, 1]) and the frame rate, and returns frames of the same shape."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch

from ..engine.codec import roundtrip
from ..engine.transforms import Transform


def _jpeg(quality: int) -> Callable:
    def apply(frames: torch.Tensor, fps) -> torch.Tensor:
        import cv2

        out = []
        for image in (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
            ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
            out.append(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(frames.dtype) / 255
    return apply


def _median(frames: torch.Tensor, fps) -> torch.Tensor:
    from kornia.filters import median_blur

    return median_blur(frames, (3, 3))


def _bit_depth(bits: int) -> Callable:
    levels = 2 ** bits - 1

    def apply(frames: torch.Tensor, fps) -> torch.Tensor:
        return (frames.clamp(0, 1) * levels).round() / levels
    return apply


def bm3d(frames: torch.Tensor, fps=None, sigma: float = 10) -> torch.Tensor:
    """BM3D (basic estimate then final Wiener step, in the opponent colour space) through the
    VapourSynth ``bm3d`` plugin; ``sigma`` in 8-bit units."""
    import vapoursynth as vs

    count, _, height, width = frames.shape
    core = vs.core
    if not hasattr(core, "bm3d"):
        raise RuntimeError("the VapourSynth bm3d plugin is not installed (pip install vapoursynth-bm3d)")
    blank = core.std.BlankClip(width=width, height=height, format=vs.RGBS, length=count)
    data = frames.clamp(0, 1).float().numpy()

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for plane in range(3):
            np.copyto(np.asarray(out[plane]), data[n, plane])
        return out

    clip = blank.std.ModifyFrame(blank, fill)
    opp = core.bm3d.RGB2OPP(clip, sample=1)
    basic = core.bm3d.Basic(opp, sigma=sigma, matrix=100)
    final = core.bm3d.Final(basic, opp, sigma=sigma, matrix=100)
    rgb = core.bm3d.OPP2RGB(final, sample=1)
    out = np.stack([np.stack([np.asarray(f[p]) for p in range(3)]) for f in rgb.frames()])
    return torch.from_numpy(out).clamp(0, 1).to(frames.dtype)


PURIFIERS: dict[str, Callable[[torch.Tensor, Fraction], torch.Tensor]] = {
    "jpeg_75": _jpeg(75),
    "jpeg_50": _jpeg(50),
    "h264_crf23": lambda f, fps: roundtrip(f, 23, fps=fps),
    "h264_crf28": lambda f, fps: roundtrip(f, 28, fps=fps),
    "resize_0.5": lambda f, fps: Transform("scale", 0.5)(f),
    "resize_2": lambda f, fps: Transform("scale", 2.0)(f),
    "blur_1": lambda f, fps: Transform("blur", 1.0)(f),
    "median_3": _median,
    "bitdepth_5": _bit_depth(5),
    "bm3d_10": bm3d,
    "x265_low": lambda f, fps: roundtrip(f, None, "libx265", bitrate=300_000, fps=fps),
}
