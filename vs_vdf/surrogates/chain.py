"""The attackers' acquisition chain on a batch of frames: detect, crop, landmarks, head pose, masks.

``acquire`` is the one implementation of detect -> ROI -> FaceMesh -> head pose; the attack's clean
analysis, the evaluation's pipeline replicas, the HTML report and ``Chain`` all call it with models
they have already loaded. Crops can be taken from a reference analysis (the clean frames), so that
landmark error is measured on the same region even when the detector no longer finds the face.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from . import load
from .blazeface import Detections
from .boxes import first_or_nan
from .facemesh import roi_from_detection
from .mtcnn import Faces

DEFAULT_MODELS = ("blazeface_short", "facemesh", "headpose", "faceapi68", "mtcnn", "selfie_segmentation")


def scatter_rows(values: torch.Tensor, rows: torch.Tensor, count: int) -> torch.Tensor:
    """Rows of ``values`` placed at ``rows`` of a NaN tensor with ``count`` rows (differentiable)."""
    full = values.new_full((count, *values.shape[1:]), float("nan"))
    return full.index_copy(0, rows, values)


@dataclass
class Acquisition:
    """Detect -> ROI -> FaceMesh -> pose for N frames. Rows without a face box are NaN; tensors are
    differentiable when the frames were."""

    detections: list[Detections]
    found: torch.Tensor  # N bool: the detector found a face (at its usual threshold)
    boxes: torch.Tensor  # N x 4: the box the crops come from (the reference's when one was given)
    keypoints: torch.Tensor  # N x 6 x 2
    rois: torch.Tensor  # N x 5: the FaceMesh crops
    rows: torch.Tensor  # indices of the frames that have a box
    landmarks: dict[str, torch.Tensor] = field(default_factory=dict)  # per FaceMesh model, N x 468 x 3 pixels
    presence: dict[str, torch.Tensor] = field(default_factory=dict)  # per FaceMesh model, N logits (> 0: a face)
    pose: dict[str, torch.Tensor] = field(default_factory=dict)  # rotation, angles, translation, scale; N rows


def acquire(models: Mapping[str, nn.Module], frames: torch.Tensor, *, detector: str = "blazeface_short",
            meshes: tuple[str, ...] = ("facemesh",), pose: bool = True,
            reference: tuple[torch.Tensor, torch.Tensor] | None = None) -> Acquisition:
    """Detection with ``models[detector]``, the rotated FaceMesh crop of the first face, the 468 points of
    each model in ``meshes`` that is loaded, and (``pose``) the head pose from the first of them when
    ``headpose`` is loaded. ``reference`` (boxes, keypoints) replaces the frames' own detection for the crops."""
    count = frames.shape[0]
    detections = models[detector].detect(frames)
    found = torch.tensor([len(d) > 0 for d in detections], device=frames.device)
    if reference is not None:
        boxes, keypoints = reference
    else:
        boxes = first_or_nan(detections, "boxes", (4,), frames)
        keypoints = first_or_nan(detections, "keypoints", (6, 2), frames)
    rows = (~boxes.isnan().any(-1)).nonzero()[:, 0]
    result = Acquisition(detections, found, boxes, keypoints, roi_from_detection(boxes, keypoints), rows)
    if rows.numel() == 0:
        return result
    for name in meshes:
        if name not in models:
            continue
        points, presence = models[name](frames, result.rois[rows], rows)
        result.landmarks[name], result.presence[name] = scatter_rows(points, rows, count), scatter_rows(presence, rows, count)
        if pose and name == meshes[0] and "headpose" in models:
            result.pose = {k: scatter_rows(v, rows, count) for k, v in models["headpose"](points).items()}
    return result


@dataclass
class FaceAnalysis:
    """Per-frame results for N frames. Tensors are differentiable when the frames were;
    rows of frames without a face (and without a reference) are NaN."""

    detections: list[Detections]
    face_found: torch.Tensor  # N bool (BlazeFace, at its usual threshold)
    boxes: torch.Tensor  # N x 4 the face box used for the crops
    keypoints: torch.Tensor  # N x 6 x 2
    facemesh: torch.Tensor | None = None  # N x 468 x 3, image pixels
    facemesh_presence_logit: torch.Tensor | None = None  # N (a face when > 0)
    pose: dict[str, torch.Tensor] = field(default_factory=dict)  # rotation, angles, translation, scale
    faceapi68: torch.Tensor | None = None  # N x 68 x 2
    mtcnn: list[Faces] | None = None
    person: torch.Tensor | None = None  # N x H x W probability


class Chain:
    """A set of loaded surrogates and the order they are run in."""

    def __init__(self, models=DEFAULT_MODELS, device: str | torch.device = "cpu",
                 detector: str = "blazeface_short", landmarker: str = "facemesh", landmarks68: str = "faceapi68"):
        wanted = set(models) | {detector}
        self.models = {name: load(name, device) for name in wanted}
        self.detector, self.landmarker, self.landmarks68 = detector, landmarker, landmarks68

    def __call__(self, frames: torch.Tensor, reference: FaceAnalysis | None = None) -> FaceAnalysis:
        face = acquire(self.models, frames, detector=self.detector, meshes=(self.landmarker,),
                       reference=None if reference is None else (reference.boxes, reference.keypoints))
        result = FaceAnalysis(face.detections, face.found, face.boxes, face.keypoints,
                              face.landmarks.get(self.landmarker), face.presence.get(self.landmarker), face.pose)
        if self.landmarks68 in self.models and face.rows.numel():
            result.faceapi68 = scatter_rows(self.models[self.landmarks68](frames, face.boxes[face.rows], face.rows),
                                            face.rows, frames.shape[0])
        if "mtcnn" in self.models:
            result.mtcnn = self.models["mtcnn"].detect(frames)
        if "selfie_segmentation" in self.models:
            result.person = self.models["selfie_segmentation"](frames)
        return result
