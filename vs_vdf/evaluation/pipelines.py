"""Replicas of what the attackers' own preprocessing does to a video before any model sees it."""

from __future__ import annotations

import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..engine.codec import to_rgb24


def ffmpeg_exe() -> str:
    """The ffmpeg binary bundled by imageio-ffmpeg (with libx264), so no system ffmpeg is needed."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                            input=stdin, capture_output=True)
    if result.returncode:
        raise RuntimeError(f"ffmpeg failed: {result.stderr.decode(errors='replace')[-500:]}")


def _encode(frames: torch.Tensor, fps, video: Path, *options: str) -> None:
    """Pipe the frames (rgb24) into the bundled ffmpeg and write ``video`` as H.264 yuv420p with ``options``."""
    images = to_rgb24(frames)
    _ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{images.shape[2]}x{images.shape[1]}", "-r", str(fps),
            "-i", "-", *options, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video), stdin=images.tobytes())


def ernerf(frames: torch.Tensor, fps: Fraction | float = 25, crf: int = 18) -> torch.Tensor:
    """The ER-NeRF lineage's input: the video delivered as H.264 (``crf``, yuv420p), then extracted
    to JPEG frames with ``ffmpeg -qmin 1 -q:v 1`` and read back (N x 3 x H x W in [0, 1])."""
    import cv2

    height, width = frames.shape[-2:]
    with tempfile.TemporaryDirectory(prefix="vdf-ernerf-") as folder:
        video = Path(folder) / "delivered.mp4"
        _encode(frames, fps, video, "-crf", str(crf))
        _ffmpeg("-i", str(video), "-qmin", "1", "-q:v", "1", str(Path(folder) / "%05d.jpg"))
        paths = sorted(Path(folder).glob("*.jpg"))
        read = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[:height, :width] for p in paths]
    if len(read) != frames.shape[0]:
        raise RuntimeError(f"ER-NeRF replica produced {len(read)} frames from {frames.shape[0]}")
    return torch.from_numpy(np.stack(read)).permute(0, 3, 1, 2).to(frames.device, frames.dtype) / 255


def _decode(path: Path, like: torch.Tensor) -> torch.Tensor:
    import av

    with av.open(str(path)) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(like.device, like.dtype) / 255


def genefacepp(frames: torch.Tensor, fps: Fraction | float = 25) -> torch.Tensor:
    """The GeneFace++ / MimicTalk input: re-encoded to 512 x 512 at 25 fps, H.264 at 2 Mb/s."""
    with tempfile.TemporaryDirectory(prefix="vdf-genefacepp-") as folder:
        video = Path(folder) / "input.mp4"
        _encode(frames, fps, video, "-vf", "fps=25,scale=512:512", "-b:v", "2M")
        return _decode(video, frames)


def _batches(count: int, size: int = 16):
    return (slice(start, start + size) for start in range(0, count, size))


@torch.no_grad()
def ernerf_replica(analyst, clean: torch.Tensor, protected: torch.Tensor, fps) -> dict:
    """Models on the JPEG frames, whether the real script would stop on a frame without a face, and how
    much of the head the static background plate (every 20th frame's background) would absorb."""
    seen_clean, seen = ernerf(clean, fps), ernerf(protected, fps)
    result = {"models": analyst.summary(analyst.compare(seen_clean, seen))}
    missing = {}
    for name in ("blazeface_short", "mtcnn"):
        if name in analyst.objectives.models:
            model = analyst.objectives.models[name]
            found = [len(d) > 0 for part in _batches(seen.shape[0]) for d in model.detect(seen[part])]
            missing[name] = [i for i, ok in enumerate(found) if not ok]
    result["frames_without_face"] = missing
    result["would_crash"] = any(bool(v) for v in missing.values())
    segmenter = analyst.objectives.models.get("selfie_segmentation")
    if segmenter is not None:
        sampled = slice(0, None, 20)
        person_clean = segmenter(seen_clean[sampled]) > segmenter.threshold
        person = segmenter(seen[sampled]) > segmenter.threshold
        head_always = person_clean.all(0)  # never background in the clean video: the plate cannot see it
        exposed = (~person).any(0)  # background in at least one protected sample: painted into the plate
        result["background_plate_head_leak"] = float((head_always & exposed).sum() / head_always.sum().clamp(min=1))
    return result


@torch.no_grad()
def genefacepp_replica(analyst, clean: torch.Tensor, protected: torch.Tensor, fps) -> dict:
    """Models on the re-encoded 512 x 512 frames, plus FaceMesh tracked as that pipeline does: on the
    frame's own detection, reusing the previous landmarks when no face is found (none on the first
    frame stops the run)."""
    from ..engine import metrics, targets
    from ..surrogates.chain import acquire

    seen_clean, seen = genefacepp(clean, fps), genefacepp(protected, fps)
    result = {"models": analyst.summary(analyst.compare(seen_clean, seen))}
    models = analyst.objectives.models
    if "facemesh" not in models:
        return result
    pose = models.get("headpose")

    def track(frames: torch.Tensor) -> tuple[torch.Tensor | None, list[int]]:
        landmarks, missing, previous = [], [], None
        for part in _batches(frames.shape[0]):
            face = acquire(models, frames[part], pose=False)
            for offset, found in enumerate(face.found.tolist()):
                index = part.start + offset
                if found:
                    previous = face.landmarks["facemesh"][offset:offset + 1]
                else:
                    missing.append(index)
                    if previous is None:
                        return None, missing
                landmarks.append(previous)
        return torch.cat(landmarks), missing

    reference, _ = track(seen_clean)
    tracked, missing = track(seen)
    result["frames_without_face"] = missing
    result["would_crash"] = tracked is None
    if tracked is not None and reference is not None:
        shift = metrics.nme(tracked, reference, metrics.FACEMESH_EYES)
        result["tracked_facemesh"] = {"nme_mean": float(shift.mean()),
                                      "disrupted_fraction": float(targets.disrupted("facemesh", shift).float().mean())}
        if pose is not None:
            error = metrics.pose_error_degrees(pose(tracked)["rotation"], pose(reference)["rotation"])
            result["tracked_headpose"] = {
                "pose_error_deg_mean": float(error.mean()),
                "disrupted_fraction": float(targets.disrupted("headpose", error).float().mean())}
    return result
