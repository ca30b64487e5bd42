"""The whole verification of one clean / protected pair: models, attacker pipelines, purifications.

Returns the report's JSON document: ``fidelity`` (PSNR and SSIM of the protected frames), ``models.<name>``
(each model's report keys, see ``engine.targets``), and the same structure under ``pipelines.<name>``
and ``purification.<name>`` (with ``retention``: disruption after the purification over disruption
before, per model).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..engine import metrics
from .analysis import Analyst, Comparison
from .pipelines import ernerf_replica, genefacepp_replica
from .purify import PURIFIERS

PIPELINES = {"ernerf": ernerf_replica, "genefacepp": genefacepp_replica}


def _fidelity(clean: torch.Tensor, test: torch.Tensor) -> dict:
    psnr = metrics.psnr(test, clean)
    ssim = metrics.ssim(test, clean)
    finite = psnr[psnr.isfinite()]
    # JSON has no infinity: identical frames (infinite PSNR) are left out of the mean, and all identical is null.
    return {"psnr_db": float(finite.mean()) if finite.numel() else None, "ssim": float(ssim.mean()),
            "per_frame": {"psnr_db": [round(float(v), 3) for v in psnr], "ssim": [round(float(v), 5) for v in ssim]}}


def _per_frame(comparison: Comparison) -> dict[str, list[float | None]]:
    return {name: [None if math.isnan(v) else round(v, 5) for v in values.tolist()]
            for name, values in comparison.test.items()}


def evaluate(clean: torch.Tensor, protected: torch.Tensor, fps: Fraction, *, analyst: Analyst,
             pipelines: tuple[str, ...] = tuple(PIPELINES), purifications: tuple[str, ...] = tuple(PURIFIERS),
             progress=None) -> dict:
    """Every figure of the report for frames ``clean`` and ``protected`` (N x 3 x H x W in [0, 1])."""
    unknown = sorted(set(pipelines) - set(PIPELINES)) + sorted(set(purifications) - set(PURIFIERS))
    if unknown:
        raise ValueError(f"unknown pipeline or purification: {', '.join(unknown)}; "
                         f"known: {', '.join(PIPELINES)}; {', '.join(PURIFIERS)}")

    def step(label: str) -> None:
        if progress is not None:
            progress(label)

    step("models")
    baseline = analyst.baseline(clean)
    comparison = analyst.compare(clean, protected, baseline)
    models = analyst.summary(comparison)
    document = {"frames": clean.shape[0], "fidelity": _fidelity(clean, protected), "models": models,
                "per_frame": _per_frame(comparison), "pipelines": {}, "purification": {}}
    for name in pipelines:
        step(f"pipeline {name}")
        document["pipelines"][name] = PIPELINES[name](analyst, clean, protected, fps)
    for name in purifications:
        step(f"purification {name}")
        purified = PURIFIERS[name](protected, fps)
        after = analyst.compare(clean, purified, baseline)
        summary = analyst.summary(after)
        retention = {model: (summary[model]["disrupted_fraction"] / entry["disrupted_fraction"]
                             if entry["disrupted_fraction"] > 0 else None) for model, entry in models.items()}
        document["purification"][name] = {"fidelity": _fidelity(clean, purified), "models": summary,
                                          "retention": retention, "per_frame": _per_frame(after)}
    document["summary"] = one_line(document)
    return json_safe(document)


def json_safe(value):
    """``value`` with every NaN or infinite float replaced by None, so the document is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def attacker_models_text(document: dict) -> str:
    """Which of the ER-NeRF preprocessing's own models (the user's files) took part, and what stood in."""
    status = document.get("pipelines", {}).get("ernerf", {}).get("attacker_models")
    if not status:
        return "ER-NeRF replica not run"
    parts = []
    for kind, entry in status.items():
        if entry["present"]:
            release = f", the release file {entry['release']}" if entry["release"] else ", not a known release file"
            parts.append(f"{kind}: the user's file {entry['file']}{release}")
        else:
            parts.append(f"{kind}: absent, stood in for by {' + '.join(entry['stood_in_for_by'])}")
    return "ER-NeRF's own models: " + "; ".join(parts)


def one_line(document: dict) -> str:
    """The console summary: fidelity, then the headline disruption figures."""
    models = document["models"]
    psnr = document["fidelity"]["psnr_db"]
    parts = [f"PSNR {psnr:.1f} dB" if psnr is not None else "PSNR infinite (identical frames)",
             f"SSIM {document['fidelity']['ssim']:.3f}"]
    for name, label in (("facemesh", "FaceMesh disrupted"), ("headpose", "pose disrupted"),
                        ("blazeface_short", "BlazeFace misses")):
        if name in models:
            parts.append(f"{label} {models[name]['disrupted_fraction']:.0%}")
    if "headpose" in models:
        parts.append(f"pose error {models['headpose']['pose_error_deg_mean']:.1f} deg")
    ernerf, geneface = (document["pipelines"].get(name) for name in ("ernerf", "genefacepp"))
    if ernerf and "facemesh" in ernerf["models"]:
        parts.append(f"after ER-NeRF path {ernerf['models']['facemesh']['disrupted_fraction']:.0%}")
    if geneface and "tracked_facemesh" in geneface:
        tracked = geneface["tracked_facemesh"]
        cut = f" (from frame {tracked['from_frame']}: the path stops at frame 0)" if geneface["would_crash"] else ""
        parts.append(f"tracked after GeneFace++ path {tracked['disrupted_fraction']:.0%}{cut}")
    if ernerf:
        parts.append(attacker_models_text(document))
    return "; ".join(parts)
