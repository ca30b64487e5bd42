"""The optimisation loop: protect one chunk of consecutive frames.

What a method does differently (settings, the loss of a step, when a frame is done) lives in
``methods.py``; this loop only runs it: the clean analysis, then each face frame optimised (starting
from its predecessor's parameters where the method inherits, or the whole chunk together with
``joint=True``), then a final check of every target. Frames whose clean version has no detectable face
are returned unchanged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import VdfError
from . import presets
from .methods import METHODS
from .metrics import grey_ssim
from .objectives import DEFAULT_TARGETS, Objectives, Reference

SSIM_FLOOR_WEIGHT = 100.0


class DeviceError(VdfError, ValueError):
    """The device asked for does not exist or cannot be used here."""


class Interrupted(VdfError):
    """The caller's interrupt event was set: the chunk was abandoned between two steps."""


@dataclass
class FrameStats:
    """What happened to one frame of the chunk."""

    index: int
    face: bool  # the clean frame had a face; frames without one are passed through
    steps: int = 0
    inherited: float = 0.0  # factor the previous frame's parameters were scaled by (0: fresh start)
    success: dict[str, bool] = field(default_factory=dict)  # per target, on every check variant
    measures: dict[str, float] = field(default_factory=dict)  # per target, worst case over the check variants
    losses: dict[str, float] = field(default_factory=dict)  # per target, at the last step taken
    seconds: float = 0.0

    @property
    def disrupted(self) -> bool:
        return bool(self.success) and all(self.success.values())


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present; anything else must name a usable device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} asked for, but CUDA is not available here")
    if resolved.type not in ("cpu", "cuda"):
        raise DeviceError(f"unsupported device {device!r}: use auto, cpu or cuda[:N]")
    return resolved


class Protector:
    """Configured once, then ``protect(frames)`` per chunk; the same chunk and options give the same output."""

    def __init__(self, preset: str = "balanced", *, targets: tuple[str, ...] | None = None,
                 epsilon: float | None = None, device: str | torch.device = "cpu", seed: int = 0, method: str = "vdf",
                 checkpoint: Path | str | None = None, joint: bool = False, max_steps: int | None = None,
                 interrupt: threading.Event | None = None, threads: int | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.preset = presets.get(preset)
        self.method, self.seed = METHODS[method], seed
        self.joint = joint and self.method.joint
        self.interrupt = interrupt  # set by another thread (a signal handler) to stop within one step
        # Torch CPU threads for each chunk (None: torch's default). Float results depend on it, so parallel
        # runs fix it; it is set in the thread that protects, since OpenMP keeps the count per thread.
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        self.device = resolve_device(device)
        self.settings = self.method.settings(self.preset)
        self.epsilon = epsilon if epsilon is not None else self.settings.epsilon
        if not 0 < self.epsilon <= 0.25:
            raise ValueError(f"epsilon {self.epsilon} is outside (0, 0.25]")
        self.max_steps = max_steps if max_steps is not None else self.settings.max_steps
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be 0 or more, got {self.max_steps}")
        if targets is None:
            targets = DEFAULT_TARGETS + (("bisenet",) if checkpoint is not None else ())
        self.objectives = Objectives(tuple(targets), self.device, checkpoint)
        self.targets = self.objectives.targets
        self.required = tuple(t for t in self.targets if t in presets.REQUIRED) or self.targets

    # -- the chunk -----------------------------------------------------------------------------

    def protect(self, frames: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, list[FrameStats]]:
        """Protect T x 3 x H x W frames in [0, 1]; returns the protected frames (on the input's device,
        8-bit levels) and one ``FrameStats`` per frame. ``seed`` overrides the configured seed."""
        if frames.ndim != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
            raise ValueError(f"frames must be a float T x 3 x H x W tensor, got {tuple(frames.shape)} {frames.dtype}")
        if frames.numel() and (frames.min() < 0 or frames.max() > 1):
            raise ValueError("frame values must lie in [0, 1]")
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        clean = frames.to(self.device, torch.float32)
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        ref = self.objectives.reference(clean)
        budgets = self.method.budget(clean, ref.boxes)
        stats = [FrameStats(i, bool(ref.face[i])) for i in range(clean.shape[0])]
        protected = clean.clone()
        if self.joint:
            self._protect_jointly(clean, budgets, ref, protected, stats, generator)
        else:
            self._protect_in_order(clean, budgets, ref, protected, stats, generator)
        for s in stats:
            if s.face:
                self._final_check(protected[s.index:s.index + 1], ref.select(slice(s.index, s.index + 1)), s)
        return protected.to(frames.device, frames.dtype), stats

    def _protect_in_order(self, clean, budgets, ref, protected, stats, generator) -> None:
        previous, previous_clean = None, None
        for s in stats:
            if not s.face:
                previous = None
                continue
            started = time.perf_counter()
            t = slice(s.index, s.index + 1)
            params = self._parameters(1, clean)
            if previous is not None and self.settings.inherit:
                similarity = float(grey_ssim(clean[t], previous_clean).clamp(min=0))
                s.inherited = similarity * self.settings.inherit
                params.inherit(previous, s.inherited, self.settings.inherit_noise, generator)
            first = previous is None
            s.steps, s.losses = self._optimise(params, clean[t], budgets[t], ref.select(t), generator, first)
            with torch.no_grad():
                protected[t] = params(clean[t], budgets[t])
            previous, previous_clean = params, clean[t]
            s.seconds = time.perf_counter() - started

    def _protect_jointly(self, clean, budgets, ref, protected, stats, generator) -> None:
        faces = torch.tensor([s.index for s in stats if s.face], dtype=torch.long, device=clean.device)
        if faces.numel() == 0:
            return
        started = time.perf_counter()
        params = self._parameters(faces.numel(), clean, joint=True)
        steps, losses = self._optimise(params, clean[faces], budgets[faces], ref.select(faces), generator, True)
        with torch.no_grad():
            protected[faces] = params(clean[faces], budgets[faces])
        share = (time.perf_counter() - started) / faces.numel()
        for s in stats:
            if s.face:
                s.steps, s.losses, s.seconds = steps, losses, share

    def _parameters(self, count: int, clean: torch.Tensor, joint: bool = False):
        height, width = clean.shape[-2:]
        return self.method.perturbation(count, height, width, self.epsilon, joint).to(self.device)

    # -- optimisation --------------------------------------------------------------------------

    def _optimise(self, params, clean: torch.Tensor, budget: torch.Tensor, ref: Reference,
                  generator: torch.Generator, first: bool) -> tuple[int, dict[str, float]]:
        """Adam on ``params`` until the check passes or the step limit; returns (steps, last losses)."""
        from kornia.metrics import ssim

        settings = self.settings
        check_every = settings.first_check_every if first else settings.check_every
        optimiser = torch.optim.Adam(params.parameters(), lr=settings.learning_rate)
        weights = self.preset.weights
        losses: dict[str, float] = {}
        for step in range(self.max_steps + 1):
            self._stop_if_interrupted()
            if step % check_every == 0 or step == self.max_steps:
                with torch.no_grad():
                    if self._passes(params(clean, budget), ref) or step == self.max_steps:
                        return step, losses
            protected = params(clean, budget)
            per_target = self.method.losses(self.objectives, protected, ref, step, generator, self.preset, self.required)
            attack = sum(weights[name] * value for name, value in per_target.items())
            similarity = ssim(protected, clean, 11, padding="valid").flatten(1).mean(1)
            fidelity = settings.fidelity_weight * (1 - similarity)
            if settings.ssim_floor is not None:
                fidelity = fidelity + SSIM_FLOOR_WEIGHT * torch.relu(settings.ssim_floor - similarity)
            optimiser.zero_grad(set_to_none=True)
            (attack + fidelity).sum().backward()
            optimiser.step()
            losses |= {name: float(value.detach().mean()) for name, value in per_target.items()}
        return self.max_steps, losses

    def _stop_if_interrupted(self) -> None:
        if self.interrupt is not None and self.interrupt.is_set():
            raise Interrupted("interrupted")

    def _passes(self, protected: torch.Tensor, ref: Reference) -> bool:
        """The early-stop rule: the method's success rule on every check variant."""
        return all(self.method.passes(self.objectives, variant(protected), ref, self.settings, self.required)
                   for variant in self.settings.variants)

    @torch.no_grad()
    def _final_check(self, protected: torch.Tensor, ref: Reference, s: FrameStats) -> None:
        """Every target measured on every check variant; the worst value counts."""
        seen: dict[str, list[float]] = {}
        for variant in self.settings.variants:
            for name, value in self.objectives.measures(variant(protected), ref, self.targets).items():
                seen.setdefault(name, []).append(float(value[0]))
        for name, values in seen.items():
            s.measures[name] = self.objectives.least_disrupted(name, values)
            s.success[name] = bool(self.objectives.disrupted(name, torch.tensor(s.measures[name])))
