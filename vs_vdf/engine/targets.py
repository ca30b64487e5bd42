"""The one table of target models: what kind each is, when one of its measures counts as disrupted, and
which figures the report gives for it. The objectives, the engine's check, the analysis, the pipeline
replicas and the HTML report all read it, so a rule is written once.

A frame is disrupted for a model when: detector - no face above its usual threshold; landmarks - NME
(mean point distance over the clean inter-ocular distance) >= 0.10; head pose - angular error >= 5
degrees; segmenter - IoU of the face/person mask with the clean one <= 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..surrogates import user_files
from . import metrics


@dataclass(frozen=True)
class Kind:
    name: str
    rule: str  # when a frame counts as disrupted, for people
    threshold: float | None  # None: the detector's own score threshold
    higher_is_disrupted: bool  # a margin > 1 asks for a measure this much past the threshold
    report_keys: tuple[str, ...]


DETECTOR = Kind("detector", "the detector finds no face", None, False,
                ("detection_rate_clean", "detection_rate_protected", "disrupted_fraction"))
LANDMARKS = Kind("landmarks", f"landmark NME \u2265 {metrics.NME_DISRUPTED:g}", metrics.NME_DISRUPTED, True,
                 ("nme_mean", "nme_failure_rate", "disrupted_fraction"))
POSE = Kind("pose", f"head-pose error \u2265 {metrics.POSE_DISRUPTED_DEG:g}\u00b0", metrics.POSE_DISRUPTED_DEG, True,
            ("pose_error_deg_mean", "pose_error_deg_p90", "disrupted_fraction"))
SEGMENTER = Kind("segmenter", f"segmentation IoU \u2264 {metrics.IOU_DISRUPTED:g}", metrics.IOU_DISRUPTED, False,
                 ("iou_mean", "disrupted_fraction"))
KINDS = (DETECTOR, LANDMARKS, POSE, SEGMENTER)


@dataclass(frozen=True)
class Target:
    name: str
    kind: Kind
    transfer: bool = False  # a held-out model: measured, never optimised against by default
    optimisable: bool = True  # False: a held-out check that has no loss at all (measured only)
    files: tuple[str, ...] = ()  # the user's own model files it needs (they cannot be fetched)

    @property
    def user_file(self) -> bool:
        return bool(self.files)


TABLE = {t.name: t for t in (
    Target("blazeface_short", DETECTOR),
    Target("blazeface_full", DETECTOR),
    Target("mtcnn", DETECTOR),  # its measure is the number of faces found: disrupted below one
    Target("facemesh", LANDMARKS),
    Target("headpose", POSE),
    Target("faceapi68", LANDMARKS),
    Target("selfie_segmentation", SEGMENTER),
    Target("facemesh_v1", LANDMARKS, transfer=True),
    Target("faceapi68_tiny", LANDMARKS, transfer=True),
    Target("tinyface", DETECTOR, transfer=True, optimisable=False),  # face-api's tiny-YOLOv2 detector
    # The attackers' own models: FAN crops its input from S3FD's box, so it needs both files.
    Target("s3fd", DETECTOR, files=("s3fd",)),
    Target("fan2d", LANDMARKS, files=("s3fd", "fan2d")),
    Target("fan2d_pose", POSE, files=("s3fd", "fan2d")),
    Target("bisenet", SEGMENTER, files=("bisenet",)),
)}
TARGETS = tuple(TABLE)
DEFAULT_TARGETS = tuple(t.name for t in TABLE.values() if not t.transfer and not t.user_file)


def with_user_files(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` plus every target whose model files the user has added (``vdf models add``)."""
    added = set(user_files.present())
    return names + tuple(t.name for t in TABLE.values()
                         if t.user_file and t.name not in names and set(t.files) <= added)


def default_targets() -> tuple[str, ...]:
    """The default ensemble: the fetchable models, plus the attackers' own models the user has added."""
    return with_user_files(DEFAULT_TARGETS)


def parse(names: tuple[str, ...] | str | None) -> tuple[str, ...] | None:
    """Target names from a tuple or a comma-separated string (None: the default ensemble); unknown names are
    an error that lists the known ones."""
    if names is None:
        return None
    if isinstance(names, str):
        names = tuple(name.strip() for name in names.split(",") if name.strip())
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    return tuple(names)


def kind_of(name: str) -> Kind:
    return TABLE[name].kind


def disrupted(name: str, value: torch.Tensor, margin: float = 1.0, detector_threshold: float | None = None) -> torch.Tensor:
    """Whether each measure counts as disrupted; ``margin`` > 1 asks for more than the threshold (detectors
    take none: no face is no face). Detectors need their own score threshold."""
    kind = kind_of(name)
    if kind is DETECTOR:
        return value < detector_threshold
    if kind.higher_is_disrupted:
        return value >= kind.threshold * margin
    return value <= kind.threshold / margin


def least_disrupted(name: str, values: list[float]) -> float:
    """The value least favourable to the defence among several measures of one target."""
    return min(values) if kind_of(name).higher_is_disrupted else max(values)


def rules_text() -> str:
    """The disruption rules in one sentence, for reports."""
    return "; ".join(kind.rule for kind in KINDS)
