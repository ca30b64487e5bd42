"""What happens to a protected frame before an attacker's model sees it, as transforms the
optimisation samples from (expectation over transformation).

Every transform returns a frame of the input size, so landmarks stay in the clean frame's
coordinates: a rescale goes to the new size and back, which loses exactly the detail a model working
at that size would miss. The codec is the real encoder with a straight-through gradient; JPEG is
kornia's differentiable JPEG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import codec


KINDS = ("identity", "scale", "size", "jpeg", "blur", "h264")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown transform {kind!r}; known: {', '.join(KINDS)}")


def quantise(frames: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels with a straight-through gradient: what a saved frame holds."""
    return frames + ((frames.clamp(0, 1) * 255).round() / 255 - frames).detach()


def rescale(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample to ``size`` (H, W) and back, bilinear with anti-aliasing when shrinking."""
    original = frames.shape[-2:]
    resized = F.interpolate(frames, size=size, mode="bilinear", align_corners=False,
                            antialias=size[0] < original[0] or size[1] < original[1])
    return F.interpolate(resized, size=original, mode="bilinear", align_corners=False,
                         antialias=original[0] < size[0] or original[1] < size[1])


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
            from kornia.enhance import jpeg_codec_differentiable

            quality = frames.new_full((frames.shape[0],), self.value)
            return _padded_to_16(frames, lambda x: jpeg_codec_differentiable(x.clamp(0, 1), quality))
        if self.kind == "blur":
            from kornia.filters import gaussian_blur2d

            radius = max(1, int(3 * self.value + 0.5))
            return gaussian_blur2d(frames, (2 * radius + 1,) * 2, (self.value, self.value), border_type="replicate")
        return frames + (codec.roundtrip(frames, self.value, intra=True) - frames).detach()  # h264

    def __str__(self) -> str:
        return self.kind if self.kind == "identity" else f"{self.kind}:{self.value:g}"


def _padded_to_16(frames: torch.Tensor, function) -> torch.Tensor:
    """kornia's JPEG needs sides that are multiples of 16: pad by replication, apply, crop back."""
    height, width = frames.shape[-2:]
    pad_h, pad_w = -height % 16, -width % 16
    padded = F.pad(frames, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else frames
    return function(padded)[..., :height, :width]


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
