"""The optimisation loop: protect one chunk of consecutive frames.

Methods:
- ``vdf`` (default): dual-domain parameters, perceptual budget, robustness transforms sampled per
  step, and similarity-guided sharing: each frame starts from the previous frame's optimised
  parameters scaled by their similarity plus a little noise, and a frame whose inherited
  perturbation already passes the check takes no steps at all. ``joint=True`` instead optimises the
  chunk's face frames together (one shared frequency set plus per-frame residuals), which suits GPUs.
- ``per-frame``: the same objectives, budget and robustness, every frame from scratch: the baseline.
- ``vdf-reference``: the released algorithm (threat-model.md section 3) applied to the chosen targets.

Frames whose clean version has no detectable face are returned unchanged.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import VdfError
from . import presets
from .budget import budget as perceptual_budget
from .metrics import grey_ssim
from .objectives import DEFAULT_TARGETS, Objectives, Reference
from .perturbation import DualDomain
from .perturbation import Reference as ReferencePerturbation
from .transforms import Transform, sample

METHODS = ("vdf", "per-frame", "vdf-reference")
SSIM_FLOOR_WEIGHT = 100.0

# The release's settings (threat-model.md section 3).
REFERENCE_SCALES = ((1.0, 1.0), (1.5, 0.8), (2.0, 0.6), (0.75, 0.6), (0.5, 0.6))
REFERENCE_EPSILON = 0.05
REFERENCE_STEPS = 3000
REFERENCE_LR = 1e-2
REFERENCE_SHARE = 0.8
REFERENCE_FIDELITY = 0.5
REFERENCE_PARSED = 0.8  # success: this fraction of the clean face pixels parsed as background


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
        raise ValueError(f"unknown device {device!r}: use auto, cpu or cuda[:N]") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available here")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use auto, cpu or cuda[:N]")
    return resolved


class Protector:
    """Configured once, then ``protect(frames)`` per chunk; the same chunk and options give the same output."""

    def __init__(self, preset: str = "balanced", targets: tuple[str, ...] | None = None, epsilon: float | None = None,
                 device: str | torch.device = "cpu", seed: int = 0, method: str = "vdf", *,
                 checkpoint: Path | str | None = None, joint: bool = False, max_steps: int | None = None,
                 interrupt: threading.Event | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.preset = presets.get(preset)
        self.method, self.seed, self.joint = method, seed, joint
        self.interrupt = interrupt  # set by another thread (a signal handler) to stop within one step
        self.device = resolve_device(device)
        reference = method == "vdf-reference"
        self.epsilon = epsilon if epsilon is not None else (REFERENCE_EPSILON if reference else self.preset.epsilon)
        if not 0 < self.epsilon <= 0.25:
            raise ValueError(f"epsilon {self.epsilon} is outside (0, 0.25]")
        self.max_steps = max_steps if max_steps is not None else (REFERENCE_STEPS if reference else self.preset.max_steps)
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
        clean = frames.to(self.device, torch.float32)
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        ref = self.objectives.reference(clean)
        if self.method == "vdf-reference":
            budgets = torch.ones_like(clean[:, :1])
        else:
            budgets = perceptual_budget(clean, torch.nan_to_num(ref.boxes))
        stats = [FrameStats(i, bool(ref.face[i])) for i in range(clean.shape[0])]
        protected = clean.clone()
        if self.joint and self.method == "vdf":
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
            if previous is not None and self.method != "per-frame":
                similarity = float(grey_ssim(clean[t], previous_clean).clamp(min=0))
                s.inherited = similarity * (REFERENCE_SHARE if self.method == "vdf-reference" else 1.0)
                params.inherit(previous, s.inherited, self.preset.inherit_noise, generator)
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
        if self.method == "vdf-reference":
            return ReferencePerturbation(count, height, width, self.epsilon).to(self.device)
        return DualDomain(count, height, width, self.epsilon, joint=joint).to(self.device)

    # -- optimisation --------------------------------------------------------------------------

    def _optimise(self, params, clean: torch.Tensor, budget: torch.Tensor, ref: Reference,
                  generator: torch.Generator, first: bool) -> tuple[int, dict[str, float]]:
        """Adam on ``params`` until the check passes or the step limit; returns (steps, last losses)."""
        from kornia.metrics import ssim

        reference = self.method == "vdf-reference"
        learning_rate = REFERENCE_LR if reference else self.preset.learning_rate
        check_every = (5 if first else 1) if reference else self.preset.check_every
        fidelity_weight = REFERENCE_FIDELITY if reference else self.preset.fidelity_weight
        optimiser = torch.optim.Adam(params.parameters(), lr=learning_rate)
        weights = self.preset.weights
        others = tuple(t for t in self.targets if t not in self.required)
        losses: dict[str, float] = {}
        for step in range(self.max_steps + 1):
            self._stop_if_interrupted()
            if step % check_every == 0 or step == self.max_steps:
                with torch.no_grad():
                    if self._passes(params(clean, budget), ref) or step == self.max_steps:
                        return step, losses
            protected = params(clean, budget)
            if reference:
                per_target = self._reference_losses(protected, ref)
            else:
                # The required targets on every step, the others in turn: a step costs two models, not seven.
                names = self.required + (others[step % len(others)],) if others else self.required
                per_target = self.objectives.losses(sample(self.preset.robustness, generator)(protected), ref, names)
            attack = sum(weights[name] * value for name, value in per_target.items())
            similarity = ssim(protected, clean, 11, padding="valid").flatten(1).mean(1)
            fidelity = fidelity_weight * (1 - similarity)
            if not reference:
                fidelity = fidelity + SSIM_FLOOR_WEIGHT * torch.relu(self.preset.ssim_floor - similarity)
            optimiser.zero_grad(set_to_none=True)
            (attack + fidelity).sum().backward()
            optimiser.step()
            losses |= {name: float(value.detach().mean()) for name, value in per_target.items()}
        return self.max_steps, losses

    def _stop_if_interrupted(self) -> None:
        if self.interrupt is not None and self.interrupt.is_set():
            raise Interrupted("interrupted")

    def _reference_losses(self, protected: torch.Tensor, ref: Reference) -> dict[str, torch.Tensor]:
        """The release's multi-scale loss: every scale on every step, weighted."""
        total: dict[str, torch.Tensor] = {}
        for scale, weight in REFERENCE_SCALES:
            for name, value in self.objectives.losses(Transform("scale", scale)(protected), ref).items():
                total[name] = total.get(name, 0) + weight * value
        return total

    def _variants(self) -> tuple[Transform, ...]:
        if self.method == "vdf-reference":
            return tuple(Transform("scale", s) if s != 1 else Transform("identity") for s, _ in REFERENCE_SCALES)
        return self.preset.check

    def _passes(self, protected: torch.Tensor, ref: Reference) -> bool:
        """The early-stop rule: every required target disrupted on every check variant, with margin."""
        reference = self.method == "vdf-reference"
        margin = 1.0 if reference else self.preset.margin
        for variant in self._variants():
            seen = variant(protected)
            if reference and "bisenet" in self.required:
                parsed = self.objectives.models["bisenet"](seen)[:, 0] > 0.5
                face = ref.parsed_face
                share = (parsed & face).flatten(1).sum(1) / face.flatten(1).sum(1).clamp(min=1)
                if not bool((share > REFERENCE_PARSED).all()):
                    return False
            names = tuple(n for n in self.required if not (reference and n == "bisenet"))
            for name, value in self.objectives.measures(seen, ref, names).items():
                if not bool(self.objectives.disrupted(name, value, margin).all()):
                    return False
        return True

    @torch.no_grad()
    def _final_check(self, protected: torch.Tensor, ref: Reference, s: FrameStats) -> None:
        """Every target measured on every check variant; the worst value counts."""
        seen: dict[str, list[float]] = {}
        for variant in self._variants():
            for name, value in self.objectives.measures(variant(protected), ref, self.targets).items():
                seen.setdefault(name, []).append(float(value[0]))
        for name, values in seen.items():
            s.measures[name] = self.objectives.least_disrupted(name, values)
            s.success[name] = bool(self.objectives.disrupted(name, torch.tensor(s.measures[name])))
