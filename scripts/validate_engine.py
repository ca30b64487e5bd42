"""Protect the first frames of the sample clips and measure the result: fidelity, and disruption of every
surrogate on the protected frames themselves, after the ER-NeRF input path (H.264 CRF 18 + JPEG -q:v 1),
after H.264 CRF 23 and after resize x0.5. Method ``none`` measures what those paths do to clean frames.

    .venv/bin/python scripts/validate_engine.py --frames 48 --out engine-validation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction

import torch

from vs_vdf import samples
from vs_vdf.engine import Protector, metrics
from vs_vdf.engine.chunks import protect_video, summarise
from vs_vdf.engine.codec import roundtrip
from vs_vdf.engine.transforms import Transform
from vs_vdf.evaluation.analysis import Analyst
from vs_vdf.evaluation.pipelines import ernerf


def frame_rate(name: str) -> Fraction:
    import av

    with av.open(str(samples.path(name))) as container:
        return container.streams.video[0].average_rate


def variants(frames: torch.Tensor, fps: Fraction) -> dict[str, torch.Tensor]:
    return {
        "direct": frames,
        "ernerf": ernerf(frames, fps),
        "h264_crf23": roundtrip(frames, 23, fps=fps),
        "resize_0.5": Transform("scale", 0.5)(frames),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--clips", default="franck,wolfgang")
    parser.add_argument("--methods", default="none,vdf,per-frame")
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="engine-validation.json")
    args = parser.parse_args()
    analyst = Analyst(device=args.device)
    results: dict = {"frames": args.frames, "preset": args.preset, "device": args.device,
                     "threads": torch.get_num_threads(), "clips": {}}
    for clip in args.clips.split(","):
        clean = samples.read_frames(clip, args.frames)
        fps = frame_rate(clip)
        per_clip = results["clips"][clip] = {}
        for method in args.methods.split(","):
            entry: dict = {}
            if method == "none":
                protected = clean
            else:
                protector = Protector(args.preset, device=args.device, method=method)
                started = time.perf_counter()
                protected, stats = protect_video(protector, clean)
                elapsed = time.perf_counter() - started
                summary = summarise(stats, protector.preset.waits)
                entry |= {
                    "seconds_per_frame": elapsed / len(stats),
                    "steps_per_frame": summary["steps_per_face_frame"],
                    "engine_check_disrupted": summary["disrupted_fraction"],
                    "psnr_db": float(metrics.psnr(protected, clean).mean()),
                    "ssim": float(metrics.ssim(protected, clean).mean()),
                }
            for name, frames in variants(protected, fps).items():
                entry[name] = analyst.summary(analyst.compare(clean, frames))
            per_clip[method] = entry
            print(f"{clip} {method}: " + json.dumps({k: v for k, v in entry.items() if not isinstance(v, dict)}),
                  file=sys.stderr, flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=1)
    print(table(results))
    return 0


def table(results: dict) -> str:
    """A Markdown summary: one row per clip, method and path."""
    rows = ["| clip | method | path | facemesh disrupted | pose err (deg) | faceapi68 NME | BlazeFace det. | "
            "MTCNN det. | selfie IoU | facemesh_v1 disr. | tiny68 NME |", "|" + "---|" * 11]
    for clip, methods in results["clips"].items():
        for method, entry in methods.items():
            for path in ("direct", "ernerf", "h264_crf23", "resize_0.5"):
                m = entry[path]
                rows.append(f"| {clip} | {method} | {path} | {m['facemesh']['disrupted_fraction']:.2f} | "
                            f"{m['headpose']['pose_error_deg_mean']:.1f} | {m['faceapi68']['nme_mean']:.3f} | "
                            f"{m['blazeface_short']['detection_rate_protected']:.2f} | "
                            f"{m['mtcnn']['detection_rate_protected']:.2f} | {m['selfie_segmentation']['iou_mean']:.3f} | "
                            f"{m['facemesh_v1']['disrupted_fraction']:.2f} | {m['faceapi68_tiny']['nme_mean']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
