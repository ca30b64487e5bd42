"""Replicas of what the attackers' own preprocessing does to a video before any model sees it."""

from __future__ import annotations

import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..engine import metrics, targets
from ..engine.codec import to_rgb24
from ..media.x264 import REPEATABLE_PARAMS
from ..surrogates import user_files
from ..surrogates.boxes import first_or_nan
from ..surrogates.chain import scatter_rows


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
    repeatable = ("-x264-params", REPEATABLE_PARAMS) if REPEATABLE_PARAMS else ()
    _ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{images.shape[2]}x{images.shape[1]}", "-r", str(fps),
            "-i", "-", *options, "-c:v", "libx264", *repeatable, "-pix_fmt", "yuv420p", str(video),
            stdin=images.tobytes())


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


# What the ER-NeRF preprocessing runs, and which fetchable models stand in when the user has not added it.
ERNERF_MODELS = {"s3fd": ("blazeface_short", "mtcnn"), "fan2d": ("faceapi68",), "bisenet": ("selfie_segmentation",)}


def attacker_models() -> dict[str, dict]:
    """Per attacker model of the ER-NeRF preprocessing: whether the user's file is present (and which
    release it matches), or which fetchable models stood in for it."""
    out = {}
    for kind, stand_ins in ERNERF_MODELS.items():
        record = user_files.record(kind) if user_files.state_of(kind) == "ok" else None
        out[kind] = ({"present": True, "file": record.source_name, "release": record.release} if record else
                     {"present": False, "stood_in_for_by": list(stand_ins)})
    return out


def _attacker_landmarks(models: dict, frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """face-alignment as ER-NeRF calls it: S3FD on each frame, FAN on its first face (NaN where none)."""
    points, missing = [], []
    for part in _batches(frames.shape[0], 4):
        found = models["s3fd"].detect(frames[part])
        boxes = first_or_nan(found, "boxes", (4,), frames.new_zeros((), dtype=torch.float64))  # as decoded
        rows = (~boxes.isnan().any(-1)).nonzero()[:, 0]
        missing += [part.start + i for i, faces in enumerate(found) if not len(faces)]
        landmarks = models["fan2d"].landmarks(frames[part], boxes[rows], rows) if "fan2d" in models else None
        points.append(scatter_rows(landmarks, rows, len(found)) if landmarks is not None else
                      frames.new_full((len(found), 68, 2), float("nan")))
    return torch.cat(points), missing


def _plate_leak(person_clean: torch.Tensor, person: torch.Tensor) -> float:
    """How much of the head the static background plate would absorb: pixels never background in the
    clean samples but background in at least one protected sample."""
    head_always = person_clean.all(0)
    exposed = (~person).any(0)
    return float((head_always & exposed).sum() / head_always.sum().clamp(min=1))


@torch.no_grad()
def ernerf_replica(analyst, clean: torch.Tensor, protected: torch.Tensor, fps) -> dict:
    """Models on the JPEG frames, whether the real script would stop on a frame without a face, and how
    much of the head the static background plate (every 20th frame's background) would absorb. With the
    user's S3FD, FAN and BiSeNet files, exactly those models decide (S3FD's faces, FAN's points on
    S3FD's box of the same frame, BiSeNet's background); without them, fetchable models stand in."""
    seen_clean, seen = ernerf(clean, fps), ernerf(protected, fps)
    result = {"attacker_models": attacker_models(), "models": analyst.summary(analyst.compare(seen_clean, seen))}
    models = analyst.objectives.models
    missing = {}
    for name in ("blazeface_short", "mtcnn"):
        if name in models:
            found = [len(d) > 0 for part in _batches(seen.shape[0]) for d in models[name].detect(seen[part])]
            missing[name] = [i for i, ok in enumerate(found) if not ok]
    if "s3fd" in models:
        reference, _ = _attacker_landmarks(models, seen_clean)
        landmarks, missing["s3fd"] = _attacker_landmarks(models, seen)
        if "fan2d" in models:
            result["fan2d_on_own_detection"] = _landmark_figures(models, landmarks, reference)
    # The real script stops on its own detector's miss; stand-ins decide only when S3FD is absent.
    result["frames_without_face"] = missing
    deciding = ("s3fd",) if "s3fd" in missing else tuple(missing)
    result["would_crash"] = any(bool(missing[name]) for name in deciding)
    sampled = slice(0, None, 20)
    if "bisenet" in models:
        parser = models["bisenet"]
        result["background_plate_head_leak"] = _plate_leak(parser.labels(seen_clean[sampled]) != 0,
                                                           parser.labels(seen[sampled]) != 0)
    elif "selfie_segmentation" in models:
        segmenter = models["selfie_segmentation"]
        result["background_plate_head_leak"] = _plate_leak(segmenter(seen_clean[sampled]) > segmenter.threshold,
                                                           segmenter(seen[sampled]) > segmenter.threshold)
    return result


def _landmark_figures(models: dict, landmarks: torch.Tensor, reference: torch.Tensor) -> dict:
    """NME and head-pose error of the pipeline's own 68 points against the clean video's, on frames where
    both found a face."""
    both = ~(landmarks.isnan().any((1, 2)) | reference.isnan().any((1, 2)))
    if not both.any():
        return {"frames": 0}
    shift = metrics.nme(landmarks[both], reference[both], metrics.IBUG_EYES)
    error = metrics.pose_error_degrees(models["pose68"](landmarks[both])["rotation"],
                                       models["pose68"](reference[both])["rotation"])
    return {"frames": int(both.sum()), "nme_mean": float(shift.mean()),
            "disrupted_fraction": float(targets.disrupted("fan2d", shift).float().mean()),
            "pose_error_deg_mean": float(error.mean()),
            "pose_disrupted_fraction": float(targets.disrupted("fan2d_pose", error).float().mean())}


@torch.no_grad()
def genefacepp_replica(analyst, clean: torch.Tensor, protected: torch.Tensor, fps) -> dict:
    """Models on the re-encoded 512 x 512 frames, plus FaceMesh tracked as that pipeline does: on the
    frame's own detection, reusing the previous landmarks when no face is found. No face on the first frame
    stops the run (``would_crash``); the tracked figures are then those of an attacker who cuts the frames
    before the first face found (``from_frame``), so a crash does not hide how the rest would fare."""
    from ..surrogates.chain import acquire

    seen_clean, seen = genefacepp(clean, fps), genefacepp(protected, fps)
    result = {"models": analyst.summary(analyst.compare(seen_clean, seen))}
    models = analyst.objectives.models
    if "facemesh" not in models:
        return result
    pose = models.get("headpose")

    def track(frames: torch.Tensor) -> tuple[torch.Tensor | None, int | None, list[int]]:
        """The tracked landmarks from the first frame with a face on, that frame, and the frames without one."""
        landmarks, missing, previous, first = [], [], None, None
        for part in _batches(frames.shape[0]):
            face = acquire(models, frames[part], pose=False)
            for offset, found in enumerate(face.found.tolist()):
                index = part.start + offset
                if found:
                    previous = face.landmarks["facemesh"][offset:offset + 1]
                    first = index if first is None else first
                else:
                    missing.append(index)
                if previous is not None:
                    landmarks.append(previous)
        return (torch.cat(landmarks) if landmarks else None), first, missing

    reference, clean_first, _ = track(seen_clean)
    tracked, first, missing = track(seen)
    result["frames_without_face"] = missing
    result["would_crash"] = first != 0
    if tracked is not None and reference is not None:
        start = max(first, clean_first)
        tracked, reference = tracked[start - first:], reference[start - clean_first:]
        shift = metrics.nme(tracked, reference, metrics.FACEMESH_EYES)
        result["tracked_facemesh"] = {"nme_mean": float(shift.mean()), "from_frame": start,
                                      "disrupted_fraction": float(targets.disrupted("facemesh", shift).float().mean())}
        if pose is not None:
            error = metrics.pose_error_degrees(pose(tracked)["rotation"], pose(reference)["rotation"])
            result["tracked_headpose"] = {
                "pose_error_deg_mean": float(error.mean()), "from_frame": start,
                "disrupted_fraction": float(targets.disrupted("headpose", error).float().mean())}
    return result
