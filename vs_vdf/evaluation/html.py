"""The self-contained HTML report: tables, per-frame curves, a strip of frames with what the models
found, and the perturbation as a heat map. Images are inline PNGs; nothing is fetched when it opens."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import torch

from ..engine import targets
from .evaluate import attacker_models_text

CURVES = (("facemesh", "FaceMesh NME"), ("headpose", "head-pose error (deg)"),
          ("blazeface_short", "BlazeFace best score"))


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _image(array: np.ndarray) -> str:
    import cv2

    ok, data = cv2.imencode(".png", array[..., ::-1])
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(data.tobytes()).decode()}">'


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str], first: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [first, *columns])
    body = "".join("<tr>" + f"<th>{html.escape(r['_name'])}</th>" +
                   "".join(f"<td>{_number(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _curves(document: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    for axis, (name, label) in zip(axes, CURVES):
        for purification, entry in document["purification"].items():
            values = entry["per_frame"].get(name)
            if values:
                axis.plot([np.nan if v is None else v for v in values], linewidth=0.8, alpha=0.6, label=purification)
        values = document["per_frame"].get(name)
        if values:
            axis.plot([np.nan if v is None else v for v in values], color="black", linewidth=2, label="protected")
        axis.set_ylabel(label)
    axes[3].plot([np.nan if v is None else v for v in document["fidelity"]["per_frame"]["psnr_db"]], color="black",
                 linewidth=2)
    axes[3].set_ylabel("PSNR (dB)")
    axes[3].set_xlabel("frame")
    axes[0].legend(fontsize=7, ncol=4)
    out = _png(figure)
    plt.close(figure)
    return out


@torch.no_grad()
def _strip(clean: torch.Tensor, protected: torch.Tensor, analyst, count: int = 4) -> str:
    """Chosen frames: clean with its detection and landmarks, protected with what the models find on
    it, and the perturbation amplified as a heat map."""
    import cv2

    from ..surrogates.chain import acquire

    models = analyst.objectives.models
    picks = np.linspace(0, clean.shape[0] - 1, min(count, clean.shape[0])).round().astype(int).tolist()
    rows = []
    for i in picks:
        cells = []
        for frames in (clean, protected):
            frame = frames[i:i + 1]
            image = np.ascontiguousarray((frame[0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
            face = acquire(models, frame, pose=False)
            if face.found[0]:
                x0, y0, x1, y1 = face.boxes[0].round().int().tolist()
                cv2.rectangle(image, (x0, y0), (x1, y1), (0, 255, 0), 1)
                for x, y in face.landmarks["facemesh"][0, :, :2].round().int().tolist() if face.landmarks else ():
                    cv2.circle(image, (x, y), 1, (255, 64, 64), -1)
            else:
                cv2.putText(image, "no face found", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 0, 0), 2)
            cells.append(image)
        difference = (protected[i] - clean[i]).abs().amax(0).numpy()
        scale = max(float(difference.max()), 1 / 255)
        heat = cv2.applyColorMap((difference / scale * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        cells.append(np.ascontiguousarray(heat))
        rows.append(f"<tr><th>frame {i}</th>" + "".join(f"<td>{_image(c)}</td>" for c in cells) +
                    f"<td>max |change| {scale * 255:.0f}/255</td></tr>")
    return ("<table class=strip><tr><th></th><th>clean</th><th>protected</th><th>perturbation (amplified)</th>"
            "<th></th></tr>" + "".join(rows) + "</table>")


def render(document: dict, clean: torch.Tensor, protected: torch.Tensor, analyst) -> str:
    model_rows = [{"_name": name, **{k: v for k, v in entry.items()}} for name, entry in document["models"].items()]
    model_columns = ["detection_rate_clean", "detection_rate_protected", "nme_mean", "nme_failure_rate",
                     "pose_error_deg_mean", "pose_error_deg_p90", "iou_mean", "disrupted_fraction"]
    pipeline_rows = []
    for name, entry in document["pipelines"].items():
        row = {"_name": name, "would_crash": entry["would_crash"],
               "background_plate_head_leak": entry.get("background_plate_head_leak")}
        for model in ("facemesh", "headpose", "faceapi68", "blazeface_short", "selfie_segmentation", "s3fd", "fan2d",
                      "fan2d_pose", "bisenet"):
            if model in entry["models"]:
                row[f"{model} disrupted"] = entry["models"][model]["disrupted_fraction"]
        if "tracked_facemesh" in entry:  # from the first frame with a face on
            row["tracked facemesh disrupted"] = entry["tracked_facemesh"]["disrupted_fraction"]
        pipeline_rows.append(row)
    pipeline_columns = sorted({k for r in pipeline_rows for k in r if k != "_name"})
    purification_rows = [{"_name": name, "PSNR": entry["fidelity"]["psnr_db"], **entry["retention"]}
                         for name, entry in document["purification"].items()]
    purification_columns = ["PSNR", *document["models"]]
    options = html.escape(json.dumps({k: document.get(k) for k in ("clean", "protected", "options", "versions")},
                                     indent=1))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>vs-vdf verification report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}table.strip img{{max-width:300px}}
pre{{background:#f4f4f4;padding:1em}}</style></head><body>
<h1>vs-vdf verification report</h1>
<p><b>{html.escape(document["summary"])}</b></p>
<h2>Models on the protected frames ({document["frames"]} frames)</h2>
<p>Disrupted: {html.escape(targets.rules_text())}.</p>
{_table(model_rows, model_columns, "model")}
<h2>Attacker pipelines</h2>
<p>{html.escape(attacker_models_text(document))}</p>
{_table(pipeline_rows, pipeline_columns, "pipeline")}
<h2>Purifications: retention of disruption (after / before)</h2>
{_table(purification_rows, purification_columns, "purification")}
<h2>Per frame</h2>
{_curves(document)}
<h2>Frames</h2>
{_strip(clean, protected, analyst)}
<h2>Options and versions</h2>
<pre>{options}</pre>
</body></html>
"""
