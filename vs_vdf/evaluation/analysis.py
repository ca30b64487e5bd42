"""Black-box comparison of test frames (protected, or protected then transformed) with the clean
frames, per model, with the definitions of ``engine.metrics``; summaries give each model the report
keys of its kind in ``engine.targets``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engine import targets
from ..engine.objectives import Objectives

EVALUATED = tuple(name for name, target in targets.TABLE.items() if not target.user_file)  # plus added files


@dataclass
class Comparison:
    """Per model, per frame: the measure on the clean and on the test frames, and whether it is disrupted.
    Landmark, pose and segmentation rows are NaN / False where the clean frame had no face."""

    clean: dict[str, torch.Tensor]
    test: dict[str, torch.Tensor]
    disrupted: dict[str, torch.Tensor]
    face: torch.Tensor  # clean frames with a face


class Analyst:
    """Runs the surrogates as black boxes (no gradients), in batches, on clean and test frames."""

    def __init__(self, models: tuple[str, ...] | None = None, device: str | torch.device = "cpu",
                 checkpoint: Path | str | None = None, batch: int = 16):
        models = targets.with_user_files(EVALUATED) if models is None else models
        if checkpoint is not None and "bisenet" not in models:
            models = (*models, "bisenet")
        self.objectives = Objectives(models, device, checkpoint)
        self.models, self.batch, self.device = self.objectives.targets, batch, device

    @torch.no_grad()
    def baseline(self, clean: torch.Tensor) -> list[tuple]:
        """The clean frames' analysis and measures, per batch: compute once, compare many test versions."""
        out = []
        for start in range(0, clean.shape[0], self.batch):
            c = clean[start:start + self.batch].to(self.device)
            ref = self.objectives.reference(c)
            out.append((ref, self.objectives.measures(c, ref, self.models)))
        return out

    @torch.no_grad()
    def compare(self, clean: torch.Tensor, test: torch.Tensor, baseline: list[tuple] | None = None) -> Comparison:
        if clean.shape != test.shape:
            raise ValueError(f"clean {tuple(clean.shape)} and test {tuple(test.shape)} frames differ in shape")
        baseline = self.baseline(clean) if baseline is None else baseline
        parts: list[tuple[dict, dict, torch.Tensor]] = []
        for (ref, clean_measures), start in zip(baseline, range(0, clean.shape[0], self.batch)):
            t = test[start:start + self.batch].to(self.device)
            parts.append((clean_measures, self.objectives.measures(t, ref, self.models), ref.face.cpu()))
        face = torch.cat([p[2] for p in parts])
        clean_m = {n: torch.cat([p[0][n].float().cpu() for p in parts]) for n in self.models}
        test_m = {n: torch.cat([p[1][n].float().cpu() for p in parts]) for n in self.models}
        disrupted = {}
        for name in self.models:
            flags = self.objectives.disrupted(name, test_m[name])
            detector = targets.kind_of(name) is targets.DETECTOR
            disrupted[name] = flags if detector else flags & face
            if not detector:
                test_m[name] = torch.where(face, test_m[name], torch.full_like(test_m[name], math.nan))
        return Comparison(clean_m, test_m, disrupted, face)

    def summary(self, comparison: Comparison) -> dict[str, dict[str, float]]:
        """Per model, the report keys of its kind. Disruption of face-dependent models counts clean-face
        frames only; for detectors, frames where the clean frame already had no face are left out too."""
        out: dict[str, dict[str, float]] = {}
        face = comparison.face
        frames_with_face = max(int(face.sum()), 1)
        for name in self.models:
            kind, test, flags = targets.kind_of(name), comparison.test[name], comparison.disrupted[name]
            if kind is targets.DETECTOR:
                found_clean = ~self.objectives.disrupted(name, comparison.clean[name])
                figures = {"detection_rate_clean": float(found_clean.float().mean()),
                           "detection_rate_protected": float((~flags).float().mean()),
                           "disrupted_fraction": float((flags & found_clean).sum() / max(int(found_clean.sum()), 1))}
            else:
                values = test[face]
                mean, fraction = float(values.mean()), float(flags.sum()) / frames_with_face
                figures = {"disrupted_fraction": fraction, "nme_mean": mean, "nme_failure_rate": fraction,
                           "pose_error_deg_mean": mean, "iou_mean": mean,
                           "pose_error_deg_p90": float(values.quantile(0.9)) if values.numel() else math.nan}
            out[name] = {key: figures[key] for key in kind.report_keys}
        return out
