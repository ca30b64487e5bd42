"""What the attack pushes against: one loss and one measure per target model.

Every loss is minimised and is computed relative to the clean frames' own analysis (``Reference``):
detectors lose their face, landmarks move away from the clean ones (measured in the clean frame's
crop, so a lost detection does not hide them), the head pose turns away from the clean pose, and
segmenters see background where the clean frame had a person or a face. Landmark and pose losses are
capped a little past the disruption threshold: effort beyond it buys nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import surrogates
from ..surrogates.bisenet import face_mask
from ..surrogates.boxes import first_or_nan
from ..surrogates.chain import acquire, scatter_rows
from . import metrics
from . import targets as table
from .targets import DEFAULT_TARGETS

MESHES = ("facemesh", "facemesh_v1")  # 468 points on the FaceMesh crop
IBUG68 = ("faceapi68", "faceapi68_tiny")  # 68 points on a square box crop
FAN_TARGETS = ("fan2d", "fan2d_pose")  # 68 points on face-alignment's crop of S3FD's box, and their pose

LANDMARK_CAP = 2.5 * metrics.NME_DISRUPTED
# face-api 68's loss pulls a little further: its held-out tiny sibling, which shares its crop and layout, sat at
# the threshold on Wolfgang (NME 0.10 on average after the ER-NeRF replica). At 3x rather than 2.5x, over
# seeds 0-3 at balanced, `faceapi68_tiny` after the ER-NeRF replica went from 34% to 46% of Wolfgang's frames on
# average (franck 28% -> 30%), at the same steps and FaceMesh disruption; at 4x it cost FaceMesh and steps.
IBUG68_CAP = 3 * metrics.NME_DISRUPTED
# Input diversity: each step's crop box (face-api 68's) or crop (FaceMesh's, both of them) moved by up to this
# share of its size and scaled by up to 1 +- it (FaceMesh's also turned by up to it in radians). For face-api 68,
# over seeds 0-3 at balanced, it moved the held-out `faceapi68_tiny` after the ER-NeRF replica further than any
# loss weight or cap (the benchmarks). For FaceMesh (`vdf protect` then `vdf evaluate`, seeds 0-3), the held-out
# `facemesh_v1` after the ER-NeRF replica went from 58 / 50 / 50 / 65% to 58 / 92 / 88 / 88% of franck's frames
# and from 12 / 21 / 8 / 25% to 48 / 38 / 42 / 35% of Wolfgang's, FaceMesh itself on Wolfgang from 90-96% to
# 96-98%; franck took 12% fewer steps and 10% fewer seconds, Wolfgang 34% more steps but 8% more seconds (its two
# chunks, run at once, came out more even). Half the amount, or the detected crop left exact, cost as many steps;
# jittering half the steps cost none, but Wolfgang's seed 2 then missed the transfer figure (40% / 42%).
CROP_JITTER = 0.06
POSE_CAP_DEG = 3 * metrics.POSE_DISRUPTED_DEG
DETECTION_MARGIN = 2.0  # logits this far below the threshold no longer add to the loss
TOP_ANCHORS = 8


@dataclass
class Reference:
    """The clean frames' analysis (T rows; NaN where the clean frame had no face)."""

    face: torch.Tensor  # T bool: BlazeFace (short range) found a face
    boxes: torch.Tensor  # T x 4
    rois: torch.Tensor  # T x 5 FaceMesh crop
    landmarks: dict[str, torch.Tensor] = field(default_factory=dict)  # per landmark model, T x P x 2+
    rotation: torch.Tensor | None = None  # T x 3 x 3
    mtcnn_boxes: torch.Tensor | None = None  # T x 4
    mtcnn_points: torch.Tensor | None = None  # T x 5 x 2
    person: torch.Tensor | None = None  # T x H x W probability
    parsed_face: torch.Tensor | None = None  # T x 512 x 512 bool
    s3fd_boxes: torch.Tensor | None = None  # T x 4: S3FD's first face, the box FAN crops from
    fan_rotation: torch.Tensor | None = None  # T x 3 x 3: head pose from FAN's points

    def select(self, index: torch.Tensor | slice) -> "Reference":
        def pick(value):
            if isinstance(value, dict):
                return {key: item[index] for key, item in value.items()}
            return None if value is None else value[index]

        return Reference(**{f.name: pick(getattr(self, f.name)) for f in fields(self)})


def _logit(probability: torch.Tensor) -> torch.Tensor:
    p = probability.clamp(1e-6, 1 - 1e-6)
    return torch.log(p) - torch.log1p(-p)


def _hinge(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean over the strongest candidates of how far their logit sits above (threshold - margin)."""
    flat = logits.flatten(1)
    top = flat.topk(min(TOP_ANCHORS, flat.shape[1]), dim=1).values
    return F.softplus(top - (_logit(logits.new_tensor(threshold)) - DETECTION_MARGIN)).mean(1)


def _meshes_run(names: tuple[str, ...]) -> list[str]:
    """The FaceMesh models that ``names`` need run: those named, and FaceMesh for the head pose."""
    return [name for name in MESHES if name in names or (name == "facemesh" and "headpose" in names)]


def _capped(value: torch.Tensor, cap: float, unit: float) -> torch.Tensor:
    return -value.clamp(max=cap) / unit


def jittered(boxes: torch.Tensor, generator: torch.Generator, amount: float = CROP_JITTER) -> torch.Tensor:
    """xyxy boxes (N x 4) moved by up to ``amount`` of their mean side and scaled by up to 1 +- ``amount``,
    drawn from ``generator`` (so a chunk's steps stay repeatable)."""
    draw = (torch.rand(boxes.shape[0], 3, generator=generator) * 2 - 1).to(boxes) * amount
    half = (boxes[:, 2:] - boxes[:, :2]) / 2
    centre = boxes[:, :2] + half + draw[:, :2] * 2 * half.mean(1, keepdim=True)
    half = half * (1 + draw[:, 2:])
    return torch.cat([centre - half, centre + half], 1)


def jittered_rois(rois: torch.Tensor, generator: torch.Generator, amount: float = CROP_JITTER) -> torch.Tensor:
    """Crops (N x 5) moved by up to ``amount`` of their mean side, scaled by up to 1 +- ``amount`` and turned by
    up to ``amount`` radians, drawn from ``generator``."""
    draw = (torch.rand(rois.shape[0], 4, generator=generator) * 2 - 1).to(rois) * amount
    side = rois[:, 2:4].mean(1, keepdim=True)
    centre, size, angle = rois[:, :2] + draw[:, :2] * side, rois[:, 2:4] * (1 + draw[:, 2:3]), rois[:, 4:] + draw[:, 3:]
    return torch.cat([centre, size, angle], 1)


def _pose_loss(rotation: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The capped angle between head poses, pushed up."""
    # sin(angle / 2) * 2 sqrt 2 is the Frobenius distance; unlike acos it has a gradient at zero.
    chord = (rotation - reference).flatten(1).norm(dim=1) / (2 * 2 ** 0.5)
    angle = torch.rad2deg(2 * torch.asin(chord.clamp(max=1)))
    return _capped(angle, POSE_CAP_DEG, metrics.POSE_DISRUPTED_DEG)


class Objectives:
    """The loaded target models, their losses and their measures."""

    def __init__(self, targets: tuple[str, ...] = DEFAULT_TARGETS, device: str | torch.device = "cpu",
                 checkpoint: Path | str | None = None, detected_crops: bool = False, jitter: float = CROP_JITTER):
        # Where FaceMesh crops from: the clean frame's detection (False: landmark error on the same region
        # even where the detector no longer finds the face), or also the frames' own detection, as the
        # attackers' chains crop (True: losses average the two crops', measures count the less disrupted).
        self.detected_crops = detected_crops
        self.jitter = jitter  # how far a step's landmark crops move (``jittered``, ``jittered_rois``); 0: not at all
        targets = table.parse(tuple(targets))
        if not targets:
            raise ValueError("at least one target is needed")
        self.targets = targets
        needed = {"blazeface_short"} | set(targets)
        if "headpose" in needed:
            needed.add("facemesh")
        if needed & set(FAN_TARGETS):
            needed |= {"s3fd", "fan2d", "pose68"}
        needed.discard("fan2d_pose")  # a measure on fan2d's points, not a model
        self.models = {name: surrogates.load(name, device, checkpoint=checkpoint if name == "bisenet" else None)
                       for name in sorted(needed)}
        # Surrogate evaluations, in model-frames: "forward" (measures) and "backward" (losses, forward + backward).
        self.evaluations: Counter[str] = Counter()

    @torch.no_grad()
    def faces(self, frames: torch.Tensor) -> torch.Tensor:
        """The first face box (T x 4, NaN: none) the acquisition's detector finds in each frame; it sees a
        fixed-size letterboxed copy, so this costs the same at any resolution."""
        return acquire(self.models, frames, meshes=(), pose=False).boxes

    @torch.no_grad()
    def reference(self, clean: torch.Tensor) -> Reference:
        models = self.models
        face = acquire(models, clean, meshes=tuple(name for name in MESHES if name in models))
        ref = Reference(face.found, face.boxes, face.rois, dict(face.landmarks), face.pose.get("rotation"))
        rows, count = face.rows, clean.shape[0]
        if "s3fd" in models:
            ref.s3fd_boxes = first_or_nan(models["s3fd"].detect(clean), "boxes", (4,),
                                          clean.new_zeros((), dtype=torch.float64))  # float64, as S3FD decodes
        if "fan2d" in models:
            found = self._fan_rows(ref)
            points = models["fan2d"].landmarks(clean, ref.s3fd_boxes[found], found)
            ref.landmarks["fan2d"] = scatter_rows(points, found, count)
            ref.fan_rotation = scatter_rows(models["pose68"](points)["rotation"], found, count)
        if rows.numel() == 0:
            return ref
        for name in IBUG68:
            if name in models:
                ref.landmarks[name] = scatter_rows(models[name](clean, face.boxes[rows], rows), rows, count)
        if "mtcnn" in models:
            found = models["mtcnn"].detect(clean)
            ref.mtcnn_boxes = first_or_nan(found, "boxes", (4,), clean)
            ref.mtcnn_points = first_or_nan(found, "points", (5, 2), clean)
        if "selfie_segmentation" in models:
            ref.person = models["selfie_segmentation"](clean)
        if "bisenet" in models:
            ref.parsed_face = face_mask(models["bisenet"](clean).argmax(1))
        return ref

    @staticmethod
    def _fan_rows(ref: Reference) -> torch.Tensor:
        """Frames where the clean frame had an S3FD face (FAN's landmarks exist only there)."""
        return (~ref.s3fd_boxes.isnan().any(-1)).nonzero()[:, 0]

    def losses(self, frames: torch.Tensor, ref: Reference, names: tuple[str, ...] | None = None,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per target (all, or ``names``), a loss per frame (T) to minimise; differentiable in ``frames``. With a
        ``generator`` (and ``jitter``), the 68-point models see their crop box ``jittered``, FaceMesh its crops
        ``jittered_rois``."""
        models, out = self.models, {}
        names = self.targets if names is None else names
        self.evaluations["backward"] += len(names) * frames.shape[0]
        index = torch.arange(frames.shape[0], device=frames.device)
        jitter = self.jitter if generator is not None else 0.0  # how far this step's landmark crops move
        for name in ("blazeface_short", "blazeface_full"):
            if name in names:
                out[name] = _hinge(models[name].raw(frames)[1], models[name].threshold)
        meshed = _meshes_run(names)
        regions = self._mesh_regions(frames, ref, index) if meshed else []
        if jitter:
            regions = [jittered_rois(region, generator, jitter) for region in regions]
        for name in meshed:
            # each crop's loss, averaged per frame: capped, so the one already disrupted stops pulling
            landmarks, presence = models[name](frames, torch.cat(regions), index.repeat(len(regions)))
            if name in names:
                shift = metrics.nme(landmarks, ref.landmarks[name].repeat(len(regions), 1, 1), metrics.FACEMESH_EYES)
                per_crop = _capped(shift, LANDMARK_CAP, metrics.NME_DISRUPTED) + 0.1 * F.softplus(presence)
                out[name] = per_crop.view(len(regions), -1).mean(0)
            if name == "facemesh" and "headpose" in names:
                out["headpose"] = _pose_loss(models["headpose"](landmarks)["rotation"],
                                             ref.rotation.repeat(len(regions), 1, 1)).view(len(regions), -1).mean(0)
        for name in IBUG68:
            if name in names:
                boxes = jittered(ref.boxes, generator, jitter) if jitter else ref.boxes
                shift = metrics.nme(models[name](frames, boxes, index), ref.landmarks[name], metrics.IBUG_EYES)
                out[name] = _capped(shift, IBUG68_CAP, metrics.NME_DISRUPTED)
        if "mtcnn" in names:
            out["mtcnn"] = self._mtcnn_loss(frames, ref)
        if "selfie_segmentation" in names:
            person = (ref.person > models["selfie_segmentation"].threshold).float()
            probability = models["selfie_segmentation"](frames).clamp(max=1 - 1e-4)
            out["selfie_segmentation"] = (-torch.log1p(-probability) * person).flatten(1).sum(1) / \
                person.flatten(1).sum(1).clamp(min=1)
        if "bisenet" in names:
            out["bisenet"] = self.parser_loss(frames, ref)
        if "s3fd" in names:
            margins = torch.cat([margin.flatten(1) for margin, _ in models["s3fd"].raw(frames)], 1)
            out["s3fd"] = _hinge(margins, models["s3fd"].threshold)
        if set(FAN_TARGETS) & set(names):
            rows = self._fan_rows(ref)
            points = models["fan2d"](frames, ref.s3fd_boxes[rows], rows) if rows.numel() else None
            zero = frames.new_zeros(frames.shape[0])
            if "fan2d" in names:
                out["fan2d"] = zero if points is None else scatter_rows(_capped(
                    metrics.nme(points, ref.landmarks["fan2d"][rows], metrics.IBUG_EYES), LANDMARK_CAP,
                    metrics.NME_DISRUPTED), rows, frames.shape[0]).nan_to_num()
            if "fan2d_pose" in names:
                out["fan2d_pose"] = zero if points is None else scatter_rows(
                    _pose_loss(models["pose68"](points)["rotation"], ref.fan_rotation[rows]), rows,
                    frames.shape[0]).nan_to_num()
        return out

    def _mesh_regions(self, frames: torch.Tensor, ref: Reference, rows: torch.Tensor,
                      clean_crop_only: bool = False) -> list[torch.Tensor]:
        """The FaceMesh crops of frames ``rows`` that count: the clean frame's, and with ``detected_crops``
        (unless ``clean_crop_only``) the one the frames' own detection gives."""
        regions = [ref.rois[rows]]
        if self.detected_crops and not clean_crop_only:
            regions.append(self.crops(frames, ref)[rows])
        return regions

    @torch.no_grad()
    def crops(self, frames: torch.Tensor, ref: Reference) -> torch.Tensor:
        """The FaceMesh crops (T x 5) the attackers' chain takes from these frames: from the face BlazeFace
        finds in them, the clean frame's where it finds none (a tracker keeps its last crop)."""
        found = acquire(self.models, frames.detach(), meshes=(), pose=False)
        lost = found.rois.isnan().any(-1, keepdim=True)
        return torch.where(lost, ref.rois, found.rois)

    def parser_loss(self, frames: torch.Tensor, ref: Reference) -> torch.Tensor:
        """The reference objective: mean over the clean face pixels of log(1 - P(background) + 1e-4)."""
        background = self.models["bisenet"](frames)[:, 0]
        face = ref.parsed_face.float()
        return (torch.log(1 - background + 1e-4) * face).flatten(1).sum(1) / face.flatten(1).sum(1).clamp(min=1)

    def _mtcnn_loss(self, frames: torch.Tensor, ref: Reference) -> torch.Tensor:
        mtcnn = self.models["mtcnn"]
        proposal = torch.stack([_hinge(_logit(p), mtcnn.thresholds[0]) for _, p, _ in mtcnn.pyramid(frames)]).mean(0)
        found = ~ref.mtcnn_boxes.isnan().any(-1)
        if not found.any():
            return proposal
        at = found.nonzero()[:, 0]
        probability, _, points = mtcnn.output_net(frames, ref.mtcnn_boxes[at], at)
        shift = metrics.nme(points, ref.mtcnn_points[at], metrics.MTCNN_EYES)
        final = F.softplus(_logit(probability) - (_logit(probability.new_tensor(mtcnn.thresholds[2])) - DETECTION_MARGIN))
        extra = torch.zeros_like(proposal).index_add(0, at, final + _capped(shift, LANDMARK_CAP, metrics.NME_DISRUPTED))
        return proposal + extra

    @torch.no_grad()
    def measures(self, frames: torch.Tensor, ref: Reference, names: tuple[str, ...],
                 clean_crop_only: bool = False) -> dict[str, torch.Tensor]:
        """Per target, its measure per frame (T): detectors the best face score (MTCNN: faces found),
        landmarks NME, head pose error in degrees, segmenters mask IoU. ``clean_crop_only``: the meshes in
        the clean frame's crop alone, without the detection (a bound: the least disrupted crop counts)."""
        models, out, count = self.models, {}, frames.shape[0]
        self.evaluations["forward"] += len(names) * count
        rows = ref.face.nonzero()[:, 0]  # landmarks and pose exist only where the clean frame had a face
        for name in ("blazeface_short", "blazeface_full", "tinyface"):
            if name in names:
                out[name] = models[name].scores(frames).amax(1)
        for name in MESHES + IBUG68 + ("headpose",):
            if name in names and rows.numel() == 0:
                out[name] = frames.new_full((count,), float("nan"))
        meshed = _meshes_run(names)
        regions = self._mesh_regions(frames, ref, rows, clean_crop_only) if meshed and rows.numel() else []
        for name in meshed if rows.numel() else ():
            # every crop in one batch; per frame, the least disrupted of them counts
            landmarks, _ = models[name](frames, torch.cat(regions), rows.repeat(len(regions)))
            if name in names:
                shift = metrics.nme(landmarks, ref.landmarks[name][rows].repeat(len(regions), 1, 1),
                                    metrics.FACEMESH_EYES)
                out[name] = scatter_rows(shift.view(len(regions), -1).amin(0), rows, count)
            if name == "facemesh" and "headpose" in names:
                error = metrics.pose_error_degrees(models["headpose"](landmarks)["rotation"],
                                                   ref.rotation[rows].repeat(len(regions), 1, 1))
                out["headpose"] = scatter_rows(error.view(len(regions), -1).amin(0), rows, count)
        for name in IBUG68 if rows.numel() else ():
            if name in names:
                shift = metrics.nme(models[name](frames, ref.boxes[rows], rows), ref.landmarks[name][rows], metrics.IBUG_EYES)
                out[name] = scatter_rows(shift, rows, count)
        if "mtcnn" in names:
            out["mtcnn"] = frames.new_tensor([float(len(f)) for f in models["mtcnn"].detect(frames)])
        if "selfie_segmentation" in names:
            out["selfie_segmentation"] = metrics.mask_iou(models["selfie_segmentation"](frames), ref.person)
        if "bisenet" in names:
            face = face_mask(models["bisenet"](frames).argmax(1))
            out["bisenet"] = metrics.mask_iou(face.float(), ref.parsed_face.float())
        if "s3fd" in names:
            out["s3fd"] = models["s3fd"].scores(frames)
        if set(FAN_TARGETS) & set(names):
            rows, nan = self._fan_rows(ref), frames.new_full((count,), float("nan"))
            points = models["fan2d"].landmarks(frames, ref.s3fd_boxes[rows], rows) if rows.numel() else None
            if "fan2d" in names:
                out["fan2d"] = nan if points is None else scatter_rows(
                    metrics.nme(points, ref.landmarks["fan2d"][rows], metrics.IBUG_EYES), rows, count)
            if "fan2d_pose" in names:
                out["fan2d_pose"] = nan if points is None else scatter_rows(metrics.pose_error_degrees(
                    models["pose68"](points)["rotation"], ref.fan_rotation[rows]), rows, count)
        return out

    least_disrupted = staticmethod(table.least_disrupted)

    def disrupted(self, name: str, value: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
        """Whether each measure counts as disrupted (``targets.disrupted`` with the loaded detector's threshold)."""
        threshold = getattr(self.models[name], "threshold", None) if name in self.models else None
        return table.disrupted(name, value, margin, threshold)
