"""The attackers' acquisition chain on a batch of frames: detect, crop, landmarks, head pose, masks.

One entry point used by both the attack (differentiable outputs) and the evaluation. Crops can be
taken from a reference analysis (the clean frames), so that landmark error is measured on the same
region even when the detector no longer finds the face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import load
from .blazeface import Detections
from .boxes import first_or_nan
from .facemesh import roi_from_detection
from .mtcnn import Faces

DEFAULT_MODELS = ("blazeface_short", "facemesh", "headpose", "faceapi68", "mtcnn", "selfie_segmentation")


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
        count = frames.shape[0]
        detections = self.models[self.detector].detect(frames)
        found = torch.tensor([len(d) > 0 for d in detections], device=frames.device)
        if reference is not None:
            boxes, keypoints = reference.boxes, reference.keypoints
        else:
            boxes = first_or_nan(detections, "boxes", (4,), frames)
            keypoints = first_or_nan(detections, "keypoints", (6, 2), frames)
        result = FaceAnalysis(detections, found, boxes, keypoints)
        usable = ~boxes.isnan().any(-1)
        index = usable.nonzero()[:, 0]

        def scatter(values: torch.Tensor) -> torch.Tensor:
            full = values.new_full((count, *values.shape[1:]), float("nan"))
            return full.index_copy(0, index, values)

        if self.landmarker in self.models and index.numel():
            rois = roi_from_detection(boxes[index], keypoints[index])
            landmarks, presence = self.models[self.landmarker](frames, rois, index)
            result.facemesh, result.facemesh_presence_logit = scatter(landmarks), scatter(presence)
            if "headpose" in self.models:
                result.pose = {k: scatter(v) for k, v in self.models["headpose"](landmarks).items()}
        if self.landmarks68 in self.models and index.numel():
            result.faceapi68 = scatter(self.models[self.landmarks68](frames, boxes[index], index))
        if "mtcnn" in self.models:
            result.mtcnn = self.models["mtcnn"].detect(frames)
        if "selfie_segmentation" in self.models:
            result.person = self.models["selfie_segmentation"](frames)
        return result
