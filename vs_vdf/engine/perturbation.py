"""The perturbation's parameters and how they turn a clean frame into a protected one.

``DualDomain`` (vs-vdf): a frequency branch edits the amplitude and phase of each frame's spectrum
(shared by the three colour channels, so the change lives mostly in luma, which 4:2:0 video keeps at
full resolution); a spatial branch adds a free offset per pixel and channel to that change, and its
attention masks at several coarse scales decide where the change is let through. The result is bounded
by epsilon times the perceptual budget, so it never exceeds epsilon in L-infinity.

``Reference``: the VDF release's parameterisation: amplitude scaled by
(1 + tanh P0) and phase offset by (1 + tanh P1) of the ImageNet-normalised frame's FFT, the difference
squashed to eps * tanh(10 d), one full-resolution sigmoid mask.

Both return the change to add to the clean pixels they were given (a canvas, or a whole frame).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..surrogates.bisenet import IMAGENET_MEAN, IMAGENET_STD
from .resampling import axis_matrix


class DualDomain(nn.Module):
    MASK_STRIDES = (4, 8, 16)
    MASK_START = 2.0  # sigmoid(2) = 0.88: the attention starts mostly open and learns where to close

    def __init__(self, count: int, height: int, width: int, epsilon: float, joint: bool = False, pixels: bool = True):
        super().__init__()
        self.epsilon = epsilon
        spectrum = (height, width // 2 + 1)
        self.amplitude = nn.Parameter(torch.zeros(count, 1, *spectrum))
        self.phase = nn.Parameter(torch.zeros(count, 1, *spectrum))
        share = self.MASK_START / len(self.MASK_STRIDES)
        # The frequency edit can only filter the clean frame (one factor per frequency, for every channel), so
        # it cannot put a pattern where the frame has little of it; the offsets can. On frames 24-35 of each
        # sample (`balanced`, seeds 0-3) the frames passed their check in 326 instead of 434 steps (franck) and
        # 776 instead of 1152 (Wolfgang), every seed fewer; one offset shared by the channels (luma-like) gave
        # 18-35% fewer on seeds 0-1, three 20-51%. ``pixels=False`` leaves them out (a preset's ``pixel_offsets``).
        self.pixels = nn.Parameter(torch.zeros(count, 3, height, width)) if pixels else None
        self.masks = nn.ParameterList(
            nn.Parameter(torch.full((count, 1, math.ceil(height / s), math.ceil(width / s)), share))
            for s in self.MASK_STRIDES)
        # Joint mode: one set of frequency parameters shared by the group, plus per-frame residuals.
        self.shared = nn.ParameterDict({
            "amplitude": nn.Parameter(torch.zeros(1, 1, *spectrum)),
            "phase": nn.Parameter(torch.zeros(1, 1, *spectrum)),
        }) if joint else None
        self._clean: torch.Tensor | None = None
        self._clean_spectrum: torch.Tensor | None = None

    def _frequency(self, name: str) -> torch.Tensor:
        own = getattr(self, name)
        return own + self.shared[name] if self.shared is not None else own

    def attention(self, size: tuple[int, int]) -> torch.Tensor:
        """The masks enlarged to ``size`` (bilinear) and summed, through the sigmoid. Enlarged as two small
        matrix products rather than by ``F.interpolate``, whose backward on the CPU cost 2.6x as much
        (7.2 against 2.8 ms a step on a 360 x 539 canvas)."""
        logits = 0
        for mask in self.masks:
            rows, columns = (axis_matrix(mask.shape[2 + axis], size[axis], dtype=mask.dtype, device=mask.device)
                             for axis in (0, 1))
            logits = logits + rows @ mask @ columns.T
        return torch.sigmoid(logits)

    def forward(self, clean: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        difference = self._filtered(clean)
        if self.pixels is not None:
            difference = difference + self.epsilon * self.pixels
        return self.epsilon * budget * self.attention(clean.shape[-2:]) * torch.tanh(difference / self.epsilon)

    def _spectrum(self, clean: torch.Tensor) -> torch.Tensor:
        """The clean frames' spectrum, kept while the same frames come back (every step on one frame)."""
        if self._clean is not clean:
            self._clean, self._clean_spectrum = clean, torch.fft.rfft2(clean)
        return self._clean_spectrum

    @torch.no_grad()
    def inherit(self, previous: "DualDomain", factor: float) -> None:
        """Start from ``previous`` (one frame): frequency parameters and pixel offsets scaled by ``factor``,
        attention masks copied (the canvas follows the face, so the offsets stay on the same part of it). No
        noise: noise of 0.01 cost franck 1.17x the steps (220 against 188 over 24 frames)."""
        for name in ("amplitude", "phase"):
            getattr(self, name).copy_((previous._frequency(name) * factor).expand_as(getattr(self, name)))
        if self.pixels is not None:
            self.pixels.copy_((previous.pixels * factor).expand_as(self.pixels))
        for mine, theirs in zip(self.masks, previous.masks):
            mine.copy_(theirs.expand_as(mine))

    # The pixel offsets are fitted through tanh's inverse: a change at its bound would need an infinite
    # offset, and one far into tanh's tail would learn nothing, so the fit stops this close to the bound.
    CARRY_SATURATION = 0.99

    @torch.no_grad()
    def carry(self, previous: "DualDomain", change: torch.Tensor, grid: torch.Tensor, clean: torch.Tensor,
              budget: torch.Tensor, factor: float) -> None:
        """Start one frame from its predecessor's ``change`` (1 x 3 x h x w) moved with the face: ``grid``
        (``Canvas.follow``) says where each of this canvas's pixels was on the predecessor's. The attention
        masks move along it, the frequency parameters are taken as they are (the filter they make follows
        the content by itself), and the pixel offsets are set so that this frame's change (``clean`` and
        ``budget``: its canvas and budget) starts as ``factor`` times the moved change wherever its own
        budget allows it. Without pixel offsets, the parameters are taken as ``inherit`` takes them."""
        self.inherit(previous, factor)
        if self.pixels is None:
            return
        grid = grid.to(change)
        for mask in self.masks:
            coarse = F.interpolate(grid.permute(0, 3, 1, 2), size=mask.shape[-2:], mode="bilinear",
                                   align_corners=False, antialias=True).permute(0, 2, 3, 1)
            mask.copy_(F.grid_sample(mask, coarse.expand(mask.shape[0], -1, -1, -1), mode="bilinear",
                                     padding_mode="border", align_corners=False))
        moved = F.grid_sample(change, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        size = clean.shape[-2:]
        bound = self.epsilon * budget * self.attention(size)
        share = (factor * moved / bound.clamp(min=1e-6)).clamp(-self.CARRY_SATURATION, self.CARRY_SATURATION)
        self.pixels.copy_(torch.atanh(share) - self._filtered(clean) / self.epsilon)

    def _filtered(self, clean: torch.Tensor) -> torch.Tensor:
        """What the frequency edit adds to ``clean``. Scaling the amplitude and turning the phase is one complex
        factor per frequency, shared by the channels: the clean spectrum times it, without taking each
        channel's spectrum apart."""
        edit = torch.polar(1 + torch.tanh(self._frequency("amplitude")),
                           math.pi * torch.tanh(self._frequency("phase")))
        return torch.fft.irfft2(self._spectrum(clean) * edit, s=clean.shape[-2:]) - clean


class Reference(nn.Module):
    def __init__(self, count: int, height: int, width: int, epsilon: float):
        super().__init__()
        self.epsilon = epsilon
        self.amplitude = nn.Parameter(torch.zeros(count, 1, height, width))
        self.phase = nn.Parameter(torch.zeros(count, 1, height, width))
        self.mask = nn.Parameter(torch.zeros(count, 1, height, width))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, clean: torch.Tensor, budget: torch.Tensor | None = None) -> torch.Tensor:
        spectrum = torch.fft.fft2((clean - self.mean) / self.std)
        edited = torch.polar(spectrum.abs() * (1 + torch.tanh(self.amplitude)),
                             spectrum.angle() + 1 + torch.tanh(self.phase))
        perturbed = torch.fft.ifft2(edited).real * self.std + self.mean
        return torch.sigmoid(self.mask) * self.epsilon * torch.tanh(10 * (perturbed - clean))

    @torch.no_grad()
    def inherit(self, previous: "Reference", factor: float) -> None:
        """The release's warm start: frequency parameters times ``factor``, the mask copied."""
        self.amplitude.copy_(previous.amplitude * factor)
        self.phase.copy_(previous.phase * factor)
        self.mask.copy_(previous.mask)
