"""The benchmark harness: methods side by side, scaling with frames and pixels, the end-to-end path.

Every number comes from this run on this machine; the JSON and Markdown name the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vs_vdf import samples
from vs_vdf.engine import Protector, metrics, presets, resolve_device
from vs_vdf.engine.chunks import DEFAULT_CHUNK as CHUNK
from vs_vdf.engine.chunks import protect_video, protect_window
from vs_vdf.engine.codec import Delivery
from vs_vdf.engine.transforms import Transform
from vs_vdf.evaluation.analysis import Analyst
from vs_vdf.evaluation.pipelines import ernerf

ROOT = Path(__file__).resolve().parent.parent


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def compare_methods(args, clip: str, device: torch.device) -> dict:
    clean = samples.read_frames(clip, args.frames)
    fps = 25
    analyst = Analyst(models=("facemesh", "headpose"), device=device)
    targets = tuple(args.targets.split(",")) if args.targets else None  # None: the default ensemble
    results = {}
    for method in args.methods.split(","):
        protector = Protector(args.preset, targets=targets, device=device, method=method,
                              max_steps=args.reference_steps if method == "vdf-reference" else None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        protected, stats = protect_video(protector, clean)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        after = analyst.summary(analyst.compare(clean, ernerf(protected.cpu(), fps)))
        count = clean.shape[0]
        results[method] = {
            "seconds_per_frame": seconds / count,
            "steps_per_frame": sum(s.steps for s in stats) / count,
            "forward_per_frame": protector.objectives.evaluations["forward"] / count,
            "forward_backward_per_frame": protector.objectives.evaluations["backward"] / count,
            "disrupted_after_ernerf": {name: entry["disrupted_fraction"] for name, entry in after.items()},
            "psnr_db": float(metrics.psnr(protected.cpu(), clean).mean()),
            "ssim": float(metrics.ssim(protected.cpu(), clean).mean()),
            "epsilon": protector.epsilon, "max_steps": protector.max_steps,
        }
        print(f"[bench] {clip} {method}: {json.dumps(results[method])}", file=sys.stderr, flush=True)
    return results


def efficacy_cost(args, clip: str, device: torch.device) -> dict:
    """Seconds per frame of the preset as it is and without the efficacy work (the CRF 23 check, waiting for
    FaceMesh and head pose alone, FaceMesh on the clean frame's crop only and not jittered, no opening frame), one
    after the other in this process, both with the default delivery known and the preset's frames between full checks:
    what that work costs, as a ratio."""
    clean = samples.read_frames(clip, args.frames)
    full = presets.get(args.preset)
    lean = dataclasses.replace(full, check=(Transform("identity"), Transform("h264", 23)), opening_steps=0,
                               waits=("facemesh", "headpose"))
    points = {}
    for label, preset, efficacy in (("as it is", full, True), ("without the efficacy work", lean, False)):
        protector = Protector(preset, device=device, delivery=Delivery())
        if not efficacy:
            protector.objectives.detected_crops, protector.objectives.jitter = False, 0.0
        started = time.perf_counter()
        _, stats = protect_video(protector, clean)
        seconds = time.perf_counter() - started
        points[label] = {"seconds_per_frame": seconds / len(stats),
                         "steps_per_frame": sum(s.steps for s in stats) / len(stats),
                         "targets": list(protector.targets)}
        print(f"[bench] {clip} {label}: {json.dumps(points[label])}", file=sys.stderr, flush=True)
    points["ratio"] = points["as it is"]["seconds_per_frame"] / points["without the efficacy work"]["seconds_per_frame"]
    return points


def speedups(clip: str, methods: dict) -> list[str]:
    """Speed-up of vdf over each other method, only where vdf is at least as disruptive and as faithful."""
    lines = []
    ours = methods.get("vdf")
    for name, other in methods.items():
        if name == "vdf" or ours is None:
            continue
        ratio = other["seconds_per_frame"] / ours["seconds_per_frame"]
        fewer = other["forward_backward_per_frame"] / max(ours["forward_backward_per_frame"], 1e-9)
        prefix = f"{clip}, vdf vs {name} ({fewer:.1f}x fewer fwd+bwd evaluations per frame)"
        if ratio < 1:
            lines.append(f"{prefix}: vdf is {1 / ratio:.1f}x slower")
            continue
        worse = [t for t, v in ours["disrupted_after_ernerf"].items() if v < other["disrupted_after_ernerf"][t] - 1e-9]
        if ours["psnr_db"] < other["psnr_db"] - 0.1:
            worse.append("PSNR")
        if worse:
            lines.append(f"{prefix}: {ratio:.1f}x faster, but lower on {', '.join(worse)}: no speed-up claimed")
        else:
            lines.append(f"{prefix}: {ratio:.1f}x faster at equal or better disruption and fidelity")
    return lines


def worker(args) -> None:
    """One scaling point, in its own process so its peak RSS is its own."""
    device = resolve_device(args.device)
    protector = Protector(args.preset, device=device, max_steps=args.steps)  # the product's default ensemble
    if args.steps is not None:  # exactly this many steps on every face frame: cost per step, free of early stops
        protector.settings = dataclasses.replace(protector.settings, check_every=args.steps + 1,
                                                 first_check_every=args.steps + 1, inherit=0.0)
    frames_done, steps, started = 0, 0, time.perf_counter()
    for start in range(0, args.frames, CHUNK):
        chunk = samples.read_frames(args.clip, min(CHUNK, args.frames - start), start=start)
        if args.height:
            width = round(chunk.shape[-1] * args.height / chunk.shape[-2] / 2) * 2
            chunk = F.interpolate(chunk, size=(args.height, width), mode="bicubic", align_corners=False).clamp(0, 1)
        _, stats, _ = protect_window(protector, chunk.to(device), start, seed=0)
        frames_done += chunk.shape[0]
        steps += sum(s.steps for s in stats)
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"seconds_per_frame": (time.perf_counter() - started) / frames_done,
                      "steps_per_frame": steps / frames_done, "peak_rss_mb": own_peak_mb()}))


def own_peak_mb() -> float:
    """This process's peak resident memory. Not getrusage: on Linux a child started by fork and exec
    inherits its parent's peak there, so a worker would report the harness's memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_worker(args, frames: int, height: int | None, steps: int | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", "--frames", str(frames), "--clip", args.clip,
               "--preset", args.preset, "--device", args.device]
    if height:
        command += ["--height", str(height)]
    if steps is not None:
        command += ["--steps", str(steps)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"scaling worker failed: {command}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"[bench] frames={frames} height={height} steps={steps}: {result}", file=sys.stderr, flush=True)
    return result


def end_to_end(args, clip: str, folder: Path, *extra: str) -> dict:
    """`vdf protect` on ``clip``, with ``extra`` options (for example --workers 2)."""
    report = folder / "e2e-report.json"
    output = folder / "e2e.mp4"
    command = [str(ROOT / ".venv" / "bin" / "vdf"), "protect", str(samples.path(clip)), "-o", str(output),
               "--overwrite", "--frames", str(args.e2e_frames), "--preset", args.preset, "--device", args.device,
               "--report", str(report), *extra]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timing = json.loads(report.read_text())["timing"]
    output.unlink(missing_ok=True)
    total = timing["total"]
    return {"clip": clip, "frames": args.e2e_frames, "fps": timing["fps"],
            "share": {stage: timing[stage] / total for stage in ("decode_and_convert", "protect", "encode")}}


def worker_scaling(args, folder: Path) -> dict:
    """End to end with 1, 2, ... Ray workers of one torch thread each (byte-identical outputs), and the speed-up
    over one worker; the Ray start-up is part of each run's wall time."""
    points = {}
    for count in (int(n) for n in args.workers.split(",")):
        started = time.perf_counter()
        run = end_to_end(args, args.e2e_clip.split(",")[0], folder, "--workers", str(count), "--threads", "1")
        points[count] = {"fps": run["fps"], "wall_seconds": time.perf_counter() - started}
    first = points[min(points)]["fps"]
    for point in points.values():
        point["speedup"] = point["fps"] / first
    return points


def markdown(result: dict) -> str:
    lines = [f"Machine: {result['machine']}; {result['frames']} frames per clip, preset `{result['preset']}`, "
             f"targets `{result['targets'] or 'the default ensemble'}`."]
    if result["methods"]:
        lines += ["", "| clip | method | s/frame | steps/frame | fwd evals/frame | fwd+bwd evals/frame | "
                  "disrupted after ER-NeRF path | PSNR dB | SSIM |", "|---|---|---|---|---|---|---|---|---|"]
    for clip, methods in result["methods"].items():
        for name, m in methods.items():
            disrupted = ", ".join(f"{k} {v:.2f}" for k, v in m["disrupted_after_ernerf"].items())
            lines.append(f"| {clip} | {name} | {m['seconds_per_frame']:.2f} | {m['steps_per_frame']:.1f} | "
                         f"{m['forward_per_frame']:.0f} | {m['forward_backward_per_frame']:.0f} | {disrupted} | "
                         f"{m['psnr_db']:.1f} | {m['ssim']:.3f} |")
    if result["methods"]:
        lines += ["", *[f"- {line}" for line in result["speedups"]]]
    if result["scaling"]:
        lines += ["", f"Scaling (clip `{result['clip']}`) and end to end use the default ensemble of targets.", "",
                  "| scaling point | s/frame | steps/frame | peak RSS MB |", "|---|---|---|---|"]
    for label, point in result["scaling"].items():
        steps = point.get("steps_per_frame")
        lines.append(f"| {label} | {point['seconds_per_frame']:.2f} | {'-' if steps is None else f'{steps:.1f}'} | "
                     f"{point['peak_rss_mb']:.0f} |")
    for e2e in result.get("end_to_end", ()):
        shares = ", ".join(f"{k} {v:.0%}" for k, v in e2e["share"].items())
        lines += ["", f"End to end (`vdf protect`, {e2e['frames']} frames of `{e2e['clip']}`): "
                      f"{e2e['fps']:.2f} fps; time share: {shares}."]
    if result.get("efficacy_cost"):
        lines += ["", f"What the efficacy work costs (`{result['preset']}` as it is, and with the CRF 23 check, "
                  "waiting for FaceMesh and head pose alone, FaceMesh on the clean crop only, exact, no opening frame; "
                  "one process):", "", "| clip | s/frame as it is | steps | s/frame without | steps | ratio |",
                  "|---|---|---|---|---|---|"]
        for clip, cost in result["efficacy_cost"].items():
            full, lean = cost["as it is"], cost["without the efficacy work"]
            lines.append(f"| {clip} | {full['seconds_per_frame']:.2f} | {full['steps_per_frame']:.1f} | "
                         f"{lean['seconds_per_frame']:.2f} | {lean['steps_per_frame']:.1f} | {cost['ratio']:.1f}x |")
    if result.get("workers"):
        lines += ["", "| Ray workers (1 torch thread each) | fps | speed-up | wall s (with Ray start) |", "|---|---|---|---|"]
        for count, point in result["workers"].items():
            lines.append(f"| {count} | {point['fps']:.2f} | {point['speedup']:.2f}x | {point['wall_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--clip", default="franck", help="the clip of the scaling points")
    parser.add_argument("--clips", default="franck,wolfgang", help="clips the methods are compared on")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--targets", default="", help="comma-separated targets of the method comparison "
                        "(default: the default ensemble)")
    parser.add_argument("--methods", default="vdf,per-frame,vdf-reference")
    parser.add_argument("--reference-steps", type=int, default=None,
                        help="cap on vdf-reference steps per frame (default: its own 3000)")
    parser.add_argument("--scale-frames", default="24,96,384")
    parser.add_argument("--scale-heights", default="360,720,1080")
    parser.add_argument("--scale-height-frames", type=int, default=8)
    parser.add_argument("--scale-steps", type=int, default=10,
                        help="steps per frame of the equal-steps size points (no early stop, no sharing)")
    parser.add_argument("--e2e-clip", default="franck,wolfgang")
    parser.add_argument("--e2e-frames", type=int, default=48)
    parser.add_argument("--workers", default="1,2", help="Ray worker counts for the scale-out point ('' skips it)")
    parser.add_argument("--only", choices=("workers", "efficacy-cost"), help="run only this part (and its table); "
                        "efficacy-cost runs only there, on --clips")
    parser.add_argument("--quick", action="store_true", help="fewer frames everywhere (a few minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.frames, args.scale_frames, args.scale_height_frames, args.e2e_frames = 8, "8,24", 4, 12
        args.reference_steps = args.reference_steps or 100
    device = resolve_device(args.device)
    args.device = str(device)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine(device), "device": str(device), "clip": args.clip, "frames": args.frames,
              "preset": args.preset, "targets": args.targets, "methods": {}, "speedups": [], "scaling": {}}
    if args.only == "workers":
        result["workers"] = worker_scaling(args, args.out)
        return report(args, device, result)
    if args.only == "efficacy-cost":
        result["efficacy_cost"] = {clip: efficacy_cost(args, clip, device) for clip in args.clips.split(",")}
        return report(args, device, result)
    for clip in args.clips.split(","):
        result["methods"][clip] = compare_methods(args, clip, device)
        result["speedups"] += speedups(clip, result["methods"][clip])
    for frames in (int(n) for n in args.scale_frames.split(",")):
        result["scaling"][f"{frames} frames (native size)"] = run_worker(args, frames, None)
    for height in (int(h) for h in args.scale_heights.split(",")):
        result["scaling"][f"{height}p, {args.scale_height_frames} frames"] = run_worker(args, args.scale_height_frames, height)
    for height in (int(h) for h in args.scale_heights.split(",")):
        label = f"{height}p, {args.scale_height_frames} frames, {args.scale_steps} steps each"
        result["scaling"][label] = run_worker(args, args.scale_height_frames, height, args.scale_steps)
    result["end_to_end"] = [end_to_end(args, clip, args.out) for clip in args.e2e_clip.split(",")]
    if args.workers:
        result["workers"] = worker_scaling(args, args.out)
    return report(args, device, result)


def report(args, device: torch.device, result: dict) -> int:
    name = f"bench-{device.type}{'-' + args.only if args.only else ''}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
