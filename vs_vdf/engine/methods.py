"""The optimisation methods as data: each is a set of settings plus the two places where methods really
differ, the loss of one step and the rule that ends a frame's optimisation. The loop in
``protector.py`` reads these and never asks which method it runs.

- ``vdf`` (default): dual-domain parameters on a head-region canvas at the working resolution
  (``canvas.py``), perceptual budget, one robustness transform sampled per step, the targets a frame
  waits for on every step (the others in turn where the preset attacks all); each frame starts from the
  previous frame's change carried with the face along the optical flow between the two clean frames
  (``motion.py``, ``DualDomain.carry``), unless a cut separates them.
- ``per-frame``: the same, every frame from scratch: the baseline for what sharing saves.
- ``vdf-reference``: the released VDF algorithm: ImageNet-space FFT parameterisation over the whole
  frame at full resolution (no canvas, no working scale), every scale (x1, 1.5, 2, 0.75, 0.5 weighted 1, .8, .6, .6, .6) on every step, fidelity
  0.5 x (1 - SSIM), Adam at 1e-2, a 0.8 x SSIM warm start, a check every 5 steps on the first frame
  and every step after, epsilon 0.05, up to 3000 steps; with BiSeNet, success is 80% of the clean
  face pixels parsed as background.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .budget import budget as perceptual_budget
from .canvas import Canvas
from .objectives import Objectives, Reference
from .perturbation import DualDomain
from .perturbation import Reference as ReferencePerturbation
from .presets import Preset
from .transforms import Transform, sample


# What a check measures first, in the clean frame's crop alone. Logged on franck frames 24-35 (`balanced`):
# 70 of the 77 check variants that failed already failed there, and none failed on face-api 68 alone.
MESH_FIRST = ("facemesh", "headpose")


@dataclass(frozen=True)
class Settings:
    """The numbers one method runs with under one preset."""

    epsilon: float
    max_steps: int
    learning_rate: float
    check_every: int  # steps between two checks ...
    first_check_every: int  # ... and on a frame that inherited nothing
    fidelity_weight: float  # weight of (1 - SSIM) against the attack losses
    ssim_floor: float | None  # below this SSIM a steep penalty takes over; None: no floor
    psnr_floor: float | None  # delivered frames keep at least this PSNR (dB); None: no floor
    margin: float  # the measures must pass their thresholds by this factor
    inherit: float  # factor a frame inherits its predecessor's parameters with; 0: never
    inherit_by_similarity: bool  # the factor is also scaled by the SSIM of the two clean canvases
    variants: tuple[Transform, ...]  # what the check looks at
    opening_steps: int = 0  # the video's first frame's extra steps against the face detector; 0: none
    full_check_every: int = 1  # frames of a chunk between two multiples of this are checked as they are only
    hide_steps: int = 0  # a face-hiding run's frames' step limit (the preset's ``hide_steps``); 0: no run
    opening_variants: tuple[Transform, ...] = ()  # what the opening frame's detector is checked on; (): ``variants``
    pixel_offsets: bool = True  # the perturbation's free per-pixel offsets (the preset's ``pixel_offsets``)
    # An inheriting frame starts from its predecessor's change moved with the face (``DualDomain.carry``; its
    # pixel offsets carry the change, so a perturbation without them inherits its parameters as they are).
    follow_motion: bool = False


class Vdf:
    """vs-vdf's method; ``inherit=False`` is the per-frame baseline."""

    def __init__(self, name: str, inherit: bool = True):
        self.name, self.inherits = name, inherit
        self.joint = inherit  # whether it can optimise a chunk's frames together (shared parameters)

    def settings(self, preset: Preset) -> Settings:
        return Settings(preset.epsilon, preset.max_steps, preset.learning_rate, preset.check_every,
                        preset.check_every, preset.fidelity_weight, preset.ssim_floor, preset.psnr_floor, preset.margin,
                        1.0 if self.inherits else 0.0, False, preset.check, preset.opening_steps,
                        preset.full_check_every, preset.hide_steps if self.inherits else 0, preset.opening_check,
                        preset.pixel_offsets, follow_motion=preset.pixel_offsets)

    def perturbation(self, count: int, height: int, width: int, epsilon: float, joint: bool,
                     pixels: bool = True) -> nn.Module:
        return DualDomain(count, height, width, epsilon, joint=joint, pixels=pixels)

    def canvas(self, height: int, width: int, boxes: torch.Tensor) -> Canvas:
        """Where the chunk's perturbation lives, from its face boxes (T x 4, NaN: no face)."""
        return Canvas.around_faces(height, width, boxes)

    def budget(self, clean: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Per-pixel share of epsilon on clean canvases, from the face boxes in canvas coordinates."""
        return perceptual_budget(clean, torch.nan_to_num(boxes))

    def losses(self, objectives: Objectives, protected: torch.Tensor, ref: Reference, step: int,
               generator: torch.Generator, preset: Preset, required: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The required targets on every step, the others in turn where the preset attacks all, through one
        sampled transform (and jittered crops for the landmark models): a step costs two to four models, not
        seven."""
        others = tuple(t for t in objectives.targets if t not in required) if preset.attack_all else ()
        names = required + (others[step % len(others)],) if others else required
        return objectives.losses(sample(preset.robustness, generator)(protected), ref, names, generator)

    def passes(self, objectives: Objectives, seen: torch.Tensor, ref: Reference, settings: Settings,
               required: tuple[str, ...]) -> bool:
        """Every required target disrupted, with the margin, on one check variant's frames. The meshes are
        measured first in the clean frame's crop alone: a frame that fails there fails (the least disrupted
        crop counts), and most failing checks stop there, before the detection and the other models (where
        the clean crop is the only one, the check measures everything once)."""
        first = tuple(name for name in required if name in MESH_FIRST) if objectives.detected_crops else ()
        if first and not self._all_disrupted(objectives, objectives.measures(seen, ref, first, clean_crop_only=True),
                                             settings.margin):
            return False
        return self._all_disrupted(objectives, objectives.measures(seen, ref, required), settings.margin)

    @staticmethod
    def _all_disrupted(objectives: Objectives, measures: dict[str, torch.Tensor], margin: float) -> bool:
        return all(bool(objectives.disrupted(name, value, margin).all()) for name, value in measures.items())


class Released(Vdf):
    """The released algorithm, applied to the chosen targets."""

    SCALES = ((1.0, 1.0), (1.5, 0.8), (2.0, 0.6), (0.75, 0.6), (0.5, 0.6))
    PARSED_AS_BACKGROUND = 0.8

    def __init__(self):
        super().__init__("vdf-reference")
        self.joint = False

    def settings(self, preset: Preset) -> Settings:
        variants = tuple(Transform("scale", s) if s != 1 else Transform("identity") for s, _ in self.SCALES)
        return Settings(epsilon=0.05, max_steps=3000, learning_rate=1e-2, check_every=1, first_check_every=5,
                        fidelity_weight=0.5, ssim_floor=None, psnr_floor=None, margin=1.0, inherit=0.8,
                        inherit_by_similarity=True, variants=variants)

    def perturbation(self, count: int, height: int, width: int, epsilon: float, joint: bool,
                     pixels: bool = True) -> nn.Module:
        return ReferencePerturbation(count, height, width, epsilon)  # the release's parameters only

    def canvas(self, height: int, width: int, boxes: torch.Tensor) -> Canvas:
        return Canvas.whole(height, width, boxes.shape[0])

    def budget(self, clean: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(clean[:, :1])  # the whole frame

    def losses(self, objectives: Objectives, protected: torch.Tensor, ref: Reference, step: int,
               generator: torch.Generator, preset: Preset, required: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Every scale on every step, weighted."""
        total: dict[str, torch.Tensor] = {}
        for scale, weight in self.SCALES:
            for name, value in objectives.losses(Transform("scale", scale)(protected), ref).items():
                total[name] = total.get(name, 0) + weight * value
        return total

    def passes(self, objectives: Objectives, seen: torch.Tensor, ref: Reference, settings: Settings,
               required: tuple[str, ...]) -> bool:
        if "bisenet" in required:
            parsed = objectives.models["bisenet"](seen)[:, 0] > 0.5
            face = ref.parsed_face
            share = (parsed & face).flatten(1).sum(1) / face.flatten(1).sum(1).clamp(min=1)
            if not bool((share > self.PARSED_AS_BACKGROUND).all()):
                return False
        return super().passes(objectives, seen, ref, settings, tuple(n for n in required if n != "bisenet"))


METHODS = {method.name: method for method in (Vdf("vdf"), Vdf("per-frame", inherit=False), Released())}
