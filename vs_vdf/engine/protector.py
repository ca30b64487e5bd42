"""The optimisation loop: protect one chunk of consecutive frames.

What a method does differently (settings, the loss of a step, when a frame is done) lives in
``methods.py``; this loop only runs it: the method's canvas for the chunk (``canvas.py``: working
frames scaled to the face, a head-region canvas per frame), the clean analysis of the working frames,
then each face frame optimised on its canvas until it passes the check (every ``full_check_every``-th
frame of the chunk on the preset's variants, those between on the frames as they are; starting from its
predecessor's parameters where the method inherits, or the whole chunk together with ``joint=True``;
where the preset says so, the video's first frame then goes on until the face detector loses the face),
then the chunk delivered (where the delivery is known, encoded that way, and frames the encode pushed
below the PSNR floor scaled down, or optimised again within what it left them where the scaled frame
would no longer pass), then one batched check of the delivered frames. Frames whose clean version has no
detectable face are returned unchanged.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import VdfError
from . import motion, presets
from .adam import Adam
from .canvas import SSIM_WINDOW, Canvas
from .codec import Delivery, yuv420_levels
from .methods import METHODS
from .metrics import SsimTo, grey_ssim, psnr, to_8bit
from .objectives import Objectives, Reference
from . import targets as table
from .targets import default_targets
from .transforms import Transform, quantise

SSIM_FLOOR_WEIGHT = 100.0
PSNR_FLOOR_WEIGHT = 1.0  # per dB below the floor (plus its margin), against attack losses of order 1
PSNR_FLOOR_MARGIN_DB = 0.3  # the loop aims this far above the floor: enlarging to the delivered size adds error
# The lossy delivery encode adds its own error to the perturbation's (mean squared errors add): H.264 CRF 18
# added 1.1 to 2.8 (8-bit levels squared) on the sample close-ups, 0 to 2.1 on franck at `balanced` and 0.7
# to 5 on Wolfgang at `light` (24 frames each, the last frames of a chunk the most). The loop keeps this much
# of the floor's error budget free (1.2 before: at epsilon 14/255 two thirds of franck's frames then fell
# short and were optimised again); where the delivery is known, the chunk is then encoded that way and
# frames whose encoded PSNR still falls short are scaled down against the measured error (with the margin
# below).
DELIVERY_MSE = 2.0
# The engine's encode of a chunk is not exactly the writer's (the chunk is a video of its own, and its chroma
# is averaged rather than filtered as the writer's): the measured error must keep the floor by this much.
# Since the estimate is made on the frames the writer gets (``with_change``), it was at most 0.02 dB above
# the written frame's PSNR on 48 Wolfgang frames at light, and up to 2 dB below it at a chunk's last frames.
# With 0.3 dB, 15 of Wolfgang's 24 last frames at balanced fell short of it on the first encode (most by less
# than 0.3 dB) and were optimised again or scaled down; 7 fell short of 0.1 dB.
DELIVERY_MARGIN_DB = 0.1
# A chunk after the video's first is encoded as a video of its own, so its first frame is an intra frame of a
# quality the writer's stream (where it is predicted from the frame before) does not give it, and its successors
# are predicted from that better picture: the estimate runs optimistic there. Measured on Wolfgang at `balanced`
# (48 frames, `vdf protect`, the engine's last estimate against the written frames): the first chunk's estimate
# at most 0.02 dB above the written PSNR, the second's up to 0.24 dB above it, and one written frame at 35.90 dB
# with the 0.1 margin. Encoding such a chunk behind copies of its first clean frame was no closer (0.48 dB).
# A frame short of this margin but not of DELIVERY_MARGIN_DB is scaled down and never optimised again: with
# repairs for every frame short of it, Wolfgang took 101.1 s and franck 35.8 s (130 and 40 steps optimised
# again), with repairs only below the first chunk's margin 86.4 and 30.1 s (70 and 0), the floor kept either way.
MID_STREAM_MARGIN_DB = 0.3
DELIVERY_PASSES = 3  # encode, measure and scale down at most this many times per chunk
# A frame whose encoded error breaks the floor is scaled down to keep it; where it then no longer passes the
# check with REPAIR_MARGIN, it is first optimised again for at most REPAIR_STEPS steps with the budget the
# encode measurably left it (the attack re-balanced within it), and only then scaled down. Optimising again
# every frame that fell short cost franck two thirds of its steps and changed no frame's final check. The
# margin, measured on Wolfgang (48 frames, `vdf protect` then `vdf evaluate`; FaceMesh retention after H.264
# CRF 23 / CRF 28 / x265 at 300 kb/s): the loop's 1.2: 0.47 fps, 0.96 / 0.31 / 0.69; 1.1: 0.55 fps,
# 0.88 / 0.31 / 0.62; 1.0 (plain disruption): 0.57 fps, 0.85 / 0.19 / 0.46.
REPAIR_MARGIN = 1.1
REPAIR_STEPS = 10
# The video's first frame is done when its detector's best score is below this share of the threshold: the
# delivery encode and the ER-NeRF replica raised BlazeFace's score on it by 0.08 (franck) and 0.21 (Wolfgang).
OPENING_SCORE_FACTOR = 0.6
# A face-hiding run's frames are checked on the frames as they are only, so they keep more room for the two
# encodes: with 0.6, Wolfgang frames 24-47 (`strong`) scored under the threshold after the delivery (one
# video, CRF 18) and the ER-NeRF replica on 8 of 24 frames; with 0.4 on 15.
HIDING_SCORE_FACTOR = 0.4
OPENING_SEED = 7919  # the opening frame's transforms are drawn apart from the chunk's
PSNR_SCALE_STEPS = 12  # bisection steps for the delivery scale (1/4096 of the change)
# What a frame between two fully checked ones waits for (the preset's ``full_check_every``): the frames as
# they are, at the plain threshold.
BETWEEN_CHECK = (Transform("identity"),)


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
    inherited: float = 0.0  # factor the previous frame's parameters were taken with (0: fresh start)
    success: dict[str, bool] = field(default_factory=dict)  # per target, on every check variant
    measures: dict[str, float] = field(default_factory=dict)  # per target, worst case over the check variants
    losses: dict[str, float] = field(default_factory=dict)  # per target, at the last step taken
    seconds: float = 0.0
    change_scale: float = 1.0  # < 1 where the change was scaled down on delivery to keep the PSNR floor
    floor_steps: int = 0  # of ``steps``, those taken again because the delivery encode broke the PSNR floor
    opening: bool = False  # the video's (or a face-hiding chunk's) first frame: it waited for the detector
    hiding: bool = False  # in a face-hiding run: it waited for the detector on the frame as it is
    between: bool = False  # checked on the frames as they are only (between two fully checked frames)

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


def with_change(source: torch.Tensor, clean: torch.Tensor, protected: torch.Tensor) -> torch.Tensor:
    """``source`` (the frames as decoded, maybe outside [0, 1] after a colour conversion) with the engine's
    change added: ``protected`` less ``clean`` rounded to 8-bit levels where the engine changed a pixel, so the
    change carries no rounding of the clean frame, and the pixels it left alone keep their exact value. What
    the writer gets, and so what the delivery encode is measured on."""
    return torch.where(protected == clean, source, source + protected - (clean * 255).round() / 255)


class Protector:
    """Configured once, then ``protect(frames)`` per chunk; the same chunk and options give the same output."""

    def __init__(self, preset: str | presets.Preset = "balanced", *, targets: tuple[str, ...] | None = None,
                 epsilon: float | None = None, device: str | torch.device = "cpu", seed: int = 0, method: str = "vdf",
                 checkpoint: Path | str | None = None, joint: bool = False, max_steps: int | None = None,
                 interrupt: threading.Event | None = None, threads: int | None = None,
                 delivery: Delivery | dict | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        # a preset's name, or settings of one's own (the benchmark's engine without its efficacy work)
        self.preset = preset if isinstance(preset, presets.Preset) else presets.get(preset)
        self.method, self.seed = METHODS[method], seed
        self.joint = joint and self.method.joint
        self.interrupt = interrupt  # set by another thread (a signal handler) to stop within one step
        # Torch CPU threads for each chunk (None: torch's default). Float results depend on it, so parallel
        # runs fix it; it is set in the thread that protects, since OpenMP keeps the count per thread.
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        # The lossy encode after the engine, whose error the PSNR floor must absorb (None: unknown, assumed).
        self.delivery = Delivery(**delivery) if isinstance(delivery, dict) else delivery
        self.device = resolve_device(device)
        self.settings = self.method.settings(self.preset)
        if self.settings.full_check_every < 1:
            raise ValueError(f"full_check_every must be at least 1, got {self.settings.full_check_every}")
        self.epsilon = epsilon if epsilon is not None else self.settings.epsilon
        if not 0 < self.epsilon <= 0.25:
            raise ValueError(f"epsilon {self.epsilon} is outside (0, 0.25]")
        self.max_steps = max_steps if max_steps is not None else self.settings.max_steps
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be 0 or more, got {self.max_steps}")
        # The video's first frame and a face-hiding run's frames have their own limits, unless the caller set
        # one for every frame.
        self.opening_steps, self.hide_steps = (
            limit if max_steps is None else min(limit, max_steps)
            for limit in (self.settings.opening_steps, self.settings.hide_steps))
        if targets is None:  # the ensemble, less what the preset would only measure (`vdf evaluate` does that)
            targets = default_targets()
            if checkpoint is not None and "bisenet" not in targets:
                targets += ("bisenet",)
            targets = presets.attacked(targets, self.preset)
        held_out = [name for name in targets if name in table.TABLE and not table.TABLE[name].optimisable]
        if held_out:
            raise ValueError(f"{', '.join(held_out)}: a held-out check, measured by `vdf evaluate` and never "
                             "optimised against")
        self.objectives = Objectives(tuple(targets), self.device, checkpoint, detected_crops=True)
        self.targets = self.objectives.targets
        self.required = presets.waited_for(self.targets, self.preset.waits)

    # -- the chunk -----------------------------------------------------------------------------

    def protect(self, frames: torch.Tensor, seed: int | None = None,
                progress: Callable[[int], None] | None = None, opens_video: bool = False,
                source: torch.Tensor | None = None) -> tuple[torch.Tensor, list[FrameStats]]:
        """Protect T x 3 x H x W frames in [0, 1]; returns the protected frames (on the input's device; 8-bit
        levels inside the canvases, the input's values outside them) and one ``FrameStats`` per frame.
        ``seed`` overrides the configured seed; ``progress(n)`` is called as each frame is done;
        ``opens_video``: the first frame is the video's (where the preset says so, it waits for the face
        detector to lose the face; with face-hiding runs every chunk opens so); ``source``: the frames as
        decoded, before they were clipped to [0, 1] (what the writer will add the change to, see
        ``with_change``; default ``frames``)."""
        if frames.ndim != 4 or frames.shape[1] != 3 or not frames.is_floating_point():
            raise ValueError(f"frames must be a float T x 3 x H x W tensor, got {tuple(frames.shape)} {frames.dtype}")
        if frames.numel() and (frames.min() < 0 or frames.max() > 1):
            raise ValueError("frame values must lie in [0, 1]")
        if source is not None and source.shape != frames.shape:
            raise ValueError(f"source {tuple(source.shape)} and frames {tuple(frames.shape)} differ in shape")
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        report = progress or (lambda count: None)
        clean = frames.to(self.device, torch.float32)
        generator = torch.Generator().manual_seed(self.seed if seed is None else seed)
        canvas = self.method.canvas(*clean.shape[-2:], self.objectives.faces(clean))
        work = canvas.shrink(clean)
        ref = self.objectives.reference(work)
        stats = [FrameStats(i, bool(ref.face[i])) for i in range(clean.shape[0])]
        rows = ref.face.nonzero()[:, 0]
        protected = clean.clone()
        if rows.numel():
            opens = not self.joint and self.opening_steps > 0
            hide = opens and self.hide_steps > 0
            opening = hide or (opens and opens_video and int(rows[0]) == 0)
            scene = _Scene.of(canvas, work, ref, rows, self.method, self.required,
                              presets.opening_wait(self.targets) if opening else None,
                              1 if self.joint else self.settings.full_check_every, hide)
            for j, row in enumerate(rows.tolist()):
                s = stats[row]
                s.between, s.opening, s.hiding = scene.between_at(j), scene.opens(j), scene.hides_at(j)
            if self.joint:
                changes, frames_params = self._protect_jointly(scene, stats, generator, report), None
            else:
                changes, frames_params = self._protect_in_order(scene, stats, generator, report)
            for j, row in enumerate(rows.tolist()):
                protected[row], stats[row].change_scale = self._deliver(canvas, clean[row], changes[j], row,
                                                                        self._engine_floor())
            if self.delivery is not None and self.settings.psnr_floor is not None:
                repair = _Repair(scene, frames_params, generator) if frames_params is not None else None
                decoded = clean if source is None else source.to(self.device, torch.float32)
                self._keep_floor_through_delivery(canvas, clean, decoded, protected, changes, rows, stats, repair,
                                                  mid_stream=not opens_video)
            self._final_check(canvas.shrink(protected[rows]), scene.ref, [stats[i] for i in rows.tolist()])
        if rows.numel() < clean.shape[0]:
            report(clean.shape[0] - rows.numel())  # the frames without a face
        return protected.to(frames.device, frames.dtype), stats

    def _protect_in_order(self, scene: "_Scene", stats: list[FrameStats], generator: torch.Generator,
                          report: Callable[[int], None]) -> tuple[torch.Tensor, list]:
        """Each face frame optimised in turn, starting from its predecessor's parameters where the method
        inherits and the two frames are consecutive (where the method follows the motion, from its
        predecessor's change moved along the optical flow between the two clean frames; in a face-hiding
        run, from its predecessor's change as it is, waiting for the detector alone); returns the changes
        (R x 3 x h x w) and each frame's parameters."""
        changes, frames_params, previous, previous_row, previous_change = [], [], None, None, None
        for j, row in enumerate(scene.rows.tolist()):
            started = time.perf_counter()
            hiding = scene.hides_at(j)
            s, one = stats[row], scene.select(j, as_opening=hiding)
            params = self._parameters(1, scene.canvas)
            inherits = previous is not None and previous_row == row - 1 and bool(self.settings.inherit)
            if inherits:
                s.inherited = self.settings.inherit
                if self.settings.inherit_by_similarity:
                    s.inherited *= float(grey_ssim(one.canvases, scene.canvases[j - 1:j]).clamp(min=0))
                if self.settings.follow_motion:
                    grid = scene.canvas.follow(motion.flow(scene.work[j - 1], scene.work[j]), row - 1, row)
                    params.carry(previous, previous_change, grid, one.canvases, one.budgets, s.inherited)
                else:
                    params.inherit(previous, s.inherited)
            s.steps, s.losses = self._optimise(params, one, generator, first=not inherits,
                                               limit=self.hide_steps if hiding else None)
            previous, previous_row = params, row
            if scene.opens(j):
                params = self._open(params, scene.select(j), s)
                if scene.hide:  # the run goes on from the change that hides the face
                    previous = params
            with torch.no_grad():
                changes.append(params(one.canvases, one.budgets))
                # the change a successor carries: this frame's, unless it opened the video and the run does not
                # go on from there
                previous_change = changes[-1] if previous is params else previous(one.canvases, one.budgets)
            frames_params.append(params)
            s.seconds = time.perf_counter() - started
            report(1)
        return torch.cat(changes), frames_params

    def _open(self, params, opening: "_Scene", stats: FrameStats):
        """The video's first frame, optimised on from its own parameters until the detector loses the face;
        returns those parameters. Its steps draw from a generator of their own, and outside face-hiding runs
        its successors inherit the parameters it had before, so every later frame is what it would be
        without the opening."""
        carried_on = copy.deepcopy(params)
        generator = torch.Generator().manual_seed(OPENING_SEED)
        steps, stats.losses = self._optimise(carried_on, opening, generator, first=False, limit=self.opening_steps)
        stats.steps += steps
        return carried_on

    def _protect_jointly(self, scene: "_Scene", stats: list[FrameStats], generator: torch.Generator,
                         report: Callable[[int], None]) -> torch.Tensor:
        started = time.perf_counter()
        count = scene.rows.numel()
        params = self._parameters(count, scene.canvas, joint=True)
        steps, losses = self._optimise(params, scene, generator, True)
        with torch.no_grad():
            changes = params(scene.canvases, scene.budgets)
        share = (time.perf_counter() - started) / count
        for row in scene.rows.tolist():
            stats[row].steps, stats[row].losses, stats[row].seconds = steps, losses, share
        report(count)
        return changes

    def _parameters(self, count: int, canvas: Canvas, joint: bool = False):
        return self.method.perturbation(count, *canvas.size, self.epsilon, joint,
                                        self.settings.pixel_offsets).to(self.device)

    # -- optimisation --------------------------------------------------------------------------

    def _optimise(self, params, scene: "_Scene", generator: torch.Generator, first: bool,
                  floor: float | None = None, limit: int | None = None) -> tuple[int, dict[str, float]]:
        """Adam on ``params`` until the check passes or the step limit (``limit``, default the preset's);
        returns (steps, last losses). The loop is steered toward the engine floor; a ``floor`` given
        replaces it and must be kept by the working frame for the check to pass."""
        settings = self.settings
        limit = self.max_steps if limit is None else limit
        target = self._engine_floor() if floor is None else floor
        check_every = settings.first_check_every if first else settings.check_every
        optimiser = Adam(params.parameters(), lr=settings.learning_rate)
        weights = self.preset.weights
        preset = replace(self.preset, attack_all=False) if scene.hiding else self.preset  # the detector alone
        coverage = scene.canvas.coverage()
        losses: dict[str, float] = {}
        for step in range(limit + 1):
            self._stop_if_interrupted()
            if step % check_every == 0 or step == limit:
                with torch.no_grad():
                    seen = scene.protected(params)
                    kept = floor is None or bool(
                        (self._working_psnr(seen, scene) >= floor + PSNR_FLOOR_MARGIN_DB).all())
                    if (kept and self._passes(seen, scene)) or step == limit:
                        return step, losses
            protected = scene.protected(params)
            per_target = self.method.losses(self.objectives, protected, scene.ref, step, generator, preset,
                                            scene.required)
            attack = sum(weights[name] * value for name, value in per_target.items())
            on_canvas = scene.similarity(scene.canvas.crop(protected, scene.rows))
            similarity = 1 - coverage * (1 - on_canvas.flatten(1).mean(1))  # over the whole working frame
            fidelity = settings.fidelity_weight * (1 - similarity)
            if settings.ssim_floor is not None:
                fidelity = fidelity + SSIM_FLOOR_WEIGHT * torch.relu(settings.ssim_floor - similarity)
            if settings.psnr_floor is not None:
                fidelity = fidelity + PSNR_FLOOR_WEIGHT * torch.relu(
                    target + PSNR_FLOOR_MARGIN_DB - self._working_psnr(protected, scene))
            optimiser.zero_grad()
            (attack + fidelity).sum().backward()
            optimiser.step()
            losses |= {name: float(value.detach().mean()) for name, value in per_target.items()}
        return limit, losses

    def _engine_floor(self) -> float | None:
        """The PSNR (dB) the engine's own 8-bit frames keep: the preset's floor with DELIVERY_MSE left free."""
        floor = self.settings.psnr_floor
        if floor is None:
            return None
        return -10 * math.log10(10 ** (-floor / 10) - DELIVERY_MSE / 255 ** 2)

    @staticmethod
    def _working_psnr(protected: torch.Tensor, scene: "_Scene") -> torch.Tensor:
        """PSNR (dB, per frame) of the working frames, from their canvases: the change lives only there."""
        canvas = scene.canvas
        error = (canvas.crop(protected, scene.rows) - scene.canvases).pow(2).flatten(1).mean(1)
        share = (canvas.size[0] * canvas.size[1]) / (canvas.working[0] * canvas.working[1])
        return -10 * torch.log10((error * share).clamp(min=1e-12))

    def _deliver(self, canvas: Canvas, clean: torch.Tensor, change: torch.Tensor, row: int,
                 floor: float | None) -> tuple[torch.Tensor, float]:
        """One delivered frame with its change; where it falls below ``floor`` (dB), the change is scaled
        down (by bisection on the 8-bit frame) until it keeps it. Returns the frame and the scale."""
        protected = canvas.apply(clean, change, row)
        if floor is None or float(psnr(protected[None], clean[None])) >= floor:
            return protected, 1.0
        low, high, best = 0.0, 1.0, clean.clone()
        for _ in range(PSNR_SCALE_STEPS):
            middle = (low + high) / 2
            candidate = canvas.apply(clean, change * middle, row)
            if float(psnr(candidate[None], clean[None])) >= floor:
                low, best = middle, candidate
            else:
                high = middle
        return best, low

    def _keep_floor_through_delivery(self, canvas: Canvas, clean: torch.Tensor, decoded: torch.Tensor,
                                     protected: torch.Tensor, changes: torch.Tensor, rows: torch.Tensor,
                                     stats: list[FrameStats], repair: "_Repair | None", *,
                                     mid_stream: bool) -> None:
        """Encode the chunk as the delivery will (``mid_stream``: it does not open the video, so the estimate
        keeps the floor by MID_STREAM_MARGIN_DB); a face frame whose encoded error breaks the preset's floor is
        delivered again within the error the encode measurably left it instead of the assumed one: its change
        scaled down to keep it (in place; repeated, since the encode's share moves with the change), and on
        the first pass, where the scaled frame no longer passes the check and its parameters are at hand and
        it falls short of the first chunk's margin too, optimised again for a few steps with that budget
        before it is scaled."""
        def as_error(margin: float) -> float:  # the floor plus ``margin`` as a mean squared error
            return 255 ** 2 * 10 ** (-(self.settings.psnr_floor + margin) / 10)

        budget = as_error(MID_STREAM_MARGIN_DB if mid_stream else DELIVERY_MARGIN_DB)
        repair_above = as_error(DELIVERY_MARGIN_DB)  # a frame short of the wider margin only is just scaled
        reference = yuv420_levels(decoded)  # converted once for every pass
        for delivery_pass in range(DELIVERY_PASSES):
            encoded = self.delivery.error(with_change(decoded, clean, protected), reference).tolist()
            short = [(j, row) for j, row in enumerate(rows.tolist()) if encoded[row] > budget]
            for j, row in short:
                change = float((to_8bit(protected[row]) - to_8bit(clean[row])).pow(2).mean())
                left = budget - max(encoded[row] - change, 0.0)
                engine_floor = 10 * math.log10(255 ** 2 / left) if left > 0 else math.inf  # inf: the encode alone breaks it
                delivered, scale = self._deliver(canvas, clean[row], changes[j], row, engine_floor)
                if repair is not None and delivery_pass == 0 and math.isfinite(engine_floor) \
                        and encoded[row] > repair_above and not repair.still_passes(self, delivered, j):
                    changes[j] = repair.optimise(self, j, engine_floor, stats[row])
                    delivered, scale = self._deliver(canvas, clean[row], changes[j], row, engine_floor)
                protected[row], stats[row].change_scale = delivered, scale
            if not short:
                return

    def _stop_if_interrupted(self) -> None:
        if self.interrupt is not None and self.interrupt.is_set():
            raise Interrupted("interrupted")

    def _passes(self, protected: torch.Tensor, scene: "_Scene", margin: float | None = None) -> bool:
        """The early-stop rule on every check variant: the method's success rule for what the scene's frames
        wait for (with ``margin`` instead of the preset's where given; for a frame between two fully checked
        ones or in a face-hiding run, on the frames as they are at the plain threshold), or for the video's
        first frame its detector's best score below OPENING_SCORE_FACTOR of the threshold (in a face-hiding
        run HIDING_SCORE_FACTOR)."""
        settings = self.settings if margin is None else replace(self.settings, margin=margin)
        if scene.between or scene.hiding:
            settings = replace(settings, variants=BETWEEN_CHECK, margin=1.0)
        elif scene.opening and settings.opening_variants:
            settings = replace(settings, variants=settings.opening_variants)
        for variant in settings.variants:
            if not scene.opening:
                passed = self.method.passes(self.objectives, variant(protected), scene.ref, settings,
                                            scene.required)
            else:
                factor = HIDING_SCORE_FACTOR if scene.hiding else OPENING_SCORE_FACTOR
                passed = all(bool((value < factor * self.objectives.models[name].threshold).all())
                             for name, value in self.objectives.measures(variant(protected), scene.ref,
                                                                         scene.required).items())
            if not passed:
                return False
        return True

    @torch.no_grad()
    def _final_check(self, seen: torch.Tensor, ref: Reference, stats: list[FrameStats]) -> None:
        """The delivered face frames (at the working size) measured in one batch per check variant: the
        required targets on every variant the frame waited for (the worst value counts), the others as
        delivered."""
        values: dict[str, list[list[float]]] = {}
        others = tuple(t for t in self.targets if t not in self.required)
        held_to = [BETWEEN_CHECK if s.between or s.hiding else self.settings.variants for s in stats]
        for variant in dict.fromkeys(self.settings.variants + BETWEEN_CHECK):
            held = [j for j, variants in enumerate(held_to) if variant in variants]
            if not held:
                continue
            names = self.required + (others if variant.kind == "identity" else ())
            at = torch.tensor(held, device=seen.device)
            for name, value in self.objectives.measures(variant(seen[at]), ref.select(at), names).items():
                per_frame = values.setdefault(name, [[] for _ in stats])
                for j, measured in zip(held, value.cpu().tolist()):
                    per_frame[j].append(measured)
        for name, measured in values.items():
            for j, s in enumerate(stats):
                if not measured[j]:  # measured as delivered only, and this frame's variants leave that out
                    continue
                s.measures[name] = self.objectives.least_disrupted(name, measured[j])
                s.success[name] = bool(self.objectives.disrupted(name, torch.tensor(s.measures[name])))


@dataclass
class _Repair:
    """What optimising a frame of the chunk again needs: the scene, each frame's parameters, the generator."""

    scene: "_Scene"
    frames_params: list
    generator: torch.Generator

    @torch.no_grad()
    def still_passes(self, protector: Protector, delivered: torch.Tensor, j: int) -> bool:
        """Whether frame ``j``, delivered (C x H x W) with its change scaled down to keep the floor, still
        passes the early-stop rule with REPAIR_MARGIN: then optimising it again is not worth its steps."""
        return protector._passes(self.scene.canvas.shrink(delivered[None]), self.scene.select(j),
                                 margin=REPAIR_MARGIN)

    def optimise(self, protector: Protector, j: int, floor: float, stats: FrameStats) -> torch.Tensor:
        """Frame ``j`` optimised again with the engine floor ``floor`` (dB) kept; returns its new change."""
        params, one = self.frames_params[j], self.scene.select(j)
        steps, losses = protector._optimise(params, one, self.generator, first=False, floor=floor,
                                            limit=min(REPAIR_STEPS, protector.max_steps))
        stats.steps += steps
        stats.floor_steps += steps
        stats.losses |= losses
        with torch.no_grad():
            return params(one.canvases, one.budgets)[0]


@dataclass
class _Scene:
    """Face frames of a chunk as the optimisation sees them: working frames, their canvases and budgets."""

    canvas: Canvas
    rows: torch.Tensor  # the frames' numbers in the chunk
    work: torch.Tensor  # clean working frames, R x 3 x H x W
    canvases: torch.Tensor  # their canvases, R x 3 x h x w
    budgets: torch.Tensor  # R x 1 x h x w
    similarity: SsimTo  # the SSIM map of changed canvases against the clean ones
    ref: Reference  # the clean analysis of these frames
    required: tuple[str, ...]  # what the frames' optimisation waits for
    # What the first of these frames waits for instead, when it opens the video (None: it does not)
    opening_wait: tuple[str, ...] | None = None
    opening: bool = False  # a one-frame scene of the video's first frame, waiting for the detector
    full_check_every: int = 1  # frames whose number in the chunk is not a multiple of this are checked as they are
    between: bool = False  # a one-frame scene of such a frame
    hide: bool = False  # the frames after an opening one form a face-hiding run
    hiding: bool = False  # a one-frame scene of a frame of such a run

    @classmethod
    def of(cls, canvas: Canvas, work: torch.Tensor, ref: Reference, rows: torch.Tensor, method,
           required: tuple[str, ...], opening_wait: tuple[str, ...] | None = None,
           full_check_every: int = 1, hide: bool = False) -> "_Scene":
        selected = ref.select(rows)
        canvases = canvas.crop(work[rows], rows)
        return cls(canvas, rows, work[rows], canvases, method.budget(canvases, canvas.boxes(selected.boxes, rows)),
                   SsimTo(canvases, SSIM_WINDOW), selected, required, opening_wait,
                   full_check_every=full_check_every, hide=hide)

    def follows(self, j: int) -> bool:
        """Whether frame ``j`` comes straight after the scene's previous face frame."""
        return j > 0 and int(self.rows[j]) == int(self.rows[j - 1]) + 1

    def opens(self, j: int) -> bool:
        """Whether frame ``j`` waits for the detector after its landmarks: the video's first frame, or where
        the frames hide the face, the first of each run of consecutive face frames."""
        return self.opening_wait is not None and (j == 0 or (self.hide and not self.follows(j)))

    def hides_at(self, j: int) -> bool:
        """Whether frame ``j`` is in a face-hiding run (it follows an opening or hiding frame)."""
        return self.hide and self.follows(j)

    def between_at(self, j: int) -> bool:
        """Whether frame ``j`` lies between two fully checked frames (the video's first frame never does)."""
        return int(self.rows[j]) % self.full_check_every != 0 and not self.opens(j) and not self.hides_at(j)

    def select(self, j: int, as_opening: bool | None = None) -> "_Scene":
        """Frame ``j`` alone, waiting for what it waits for (``as_opening=False``: for the landmarks even
        where it opens the video)."""
        at = slice(j, j + 1)
        hiding = self.hides_at(j)
        opening = (self.opens(j) or hiding) if as_opening is None else as_opening
        return _Scene(self.canvas, self.rows[at], self.work[at], self.canvases[at], self.budgets[at],
                      self.similarity.select(at), self.ref.select(at),
                      self.opening_wait if opening else self.required, opening=opening,
                      between=self.between_at(j), hiding=hiding and opening)

    def protected(self, params) -> torch.Tensor:
        """The working frames with the parameters' change, rounded to 8-bit levels (straight through)."""
        change = self.canvas.paste(params(self.canvases, self.budgets), self.rows)
        return quantise((self.work + change).clamp(0, 1))
