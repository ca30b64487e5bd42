"""What happens to a protected frame before an attacker's model sees it, as transforms the
optimisation samples from (expectation over transformation).

Every transform returns a frame of the input size, so landmarks stay in the clean frame's
coordinates: a rescale goes to the new size and back, which loses exactly the detail a model working
at that size would miss. The codec is the real encoder with a straight-through gradient; JPEG is a
differentiable model of libjpeg's round trip (``jpeg.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import codec, jpeg
from .metrics import gaussian_filter, gaussian_kernel
from .resampling import apply_bands, round_trip_bands


KINDS = ("identity", "scale", "size", "jpeg", "blur", "h264")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown transform {kind!r}; known: {', '.join(KINDS)}")


def quantise(frames: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels with a straight-through gradient: what a saved frame holds."""
    return frames + ((frames.clamp(0, 1) * 255).round() / 255 - frames).detach()


def rescale(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample to ``size`` (H, W) and back, bilinear with anti-aliasing when shrinking (``F.interpolate``'s
    values), as one banded matrix per axis: a 288 x 360 frame's round trip through twice its size took 2.2
    against 16.5 ms forward and backward."""
    height, width = frames.shape[-2:]
    across = apply_bands(frames, round_trip_bands(width, size[1]), -1)
    return apply_bands(across, round_trip_bands(height, size[0]), -2)


@dataclass(frozen=True)
class Transform:
    """One robustness transform: ``kind`` is identity, scale, size, jpeg, blur or h264; ``value`` its
    parameter (scale factor, square side in pixels, JPEG quality, blur sigma, CRF)."""

    kind: str
    value: float = 0.0

    def __post_init__(self):
        _check_kind(self.kind)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[-2:]
        if self.kind == "identity":
            return frames
        if self.kind == "scale":
            return rescale(frames, (max(8, round(height * self.value)), max(8, round(width * self.value))))
        if self.kind == "size":
            return rescale(frames, (int(self.value), int(self.value)))
        if self.kind == "jpeg":
            return jpeg.roundtrip(frames.clamp(0, 1), self.value)
        if self.kind == "blur":
            radius = max(1, int(3 * self.value + 0.5))
            kernel = gaussian_kernel(2 * radius + 1, self.value, frames)
            return gaussian_filter(F.pad(frames, (radius,) * 4, mode="replicate"), kernel)
        return frames + (codec.roundtrip(frames, self.value, intra=True) - frames).detach()  # h264

    def __str__(self) -> str:
        return self.kind if self.kind == "identity" else f"{self.kind}:{self.value:g}"


@dataclass(frozen=True)
class Family:
    """A kind of transform and the range its parameter is drawn from (uniformly; one value if equal)."""

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[float, ...] = ()

    def __post_init__(self):
        _check_kind(self.kind)

    def sample(self, generator: torch.Generator) -> Transform:
        if self.choices:
            return Transform(self.kind, self.choices[int(torch.randint(len(self.choices), (1,), generator=generator))])
        u = float(torch.rand((), generator=generator))
        return Transform(self.kind, self.low + (self.high - self.low) * u)


def sample(families: tuple[Family, ...], generator: torch.Generator) -> Transform:
    """One transform: a family chosen uniformly, then its parameter."""
    return families[int(torch.randint(len(families), (1,), generator=generator))].sample(generator)


ROBUSTNESS = (
    Family("identity"),
    Family("scale", choices=(0.5, 0.75, 1.5, 2.0)),
    Family("size", choices=(512,)),
    Family("jpeg", 50, 95),
    Family("blur", 0.5, 1.5),
    Family("h264", 18, 28),
)
