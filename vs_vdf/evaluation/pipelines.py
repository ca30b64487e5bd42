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


def ernerf(frames: torch.Tensor, fps: Fraction | float = 25, crf: int = 18) -> torch.Tensor:
    """The ER-NeRF lineage's input: the video delivered as H.264 (``crf``, yuv420p), then extracted
    to JPEG frames with ``ffmpeg -qmin 1 -q:v 1`` and read back (N x 3 x H x W in [0, 1])."""
    import cv2

    height, width = frames.shape[-2:]
    images = to_rgb24(frames)
    with tempfile.TemporaryDirectory(prefix="vdf-ernerf-") as folder:
        video = Path(folder) / "delivered.mp4"
        _ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{images.shape[2]}x{images.shape[1]}",
                "-r", str(fps), "-i", "-", "-c:v", "libx264", "-crf", str(crf), "-pix_fmt", "yuv420p",
                str(video), stdin=images.tobytes())
        _ffmpeg("-i", str(video), "-qmin", "1", "-q:v", "1", str(Path(folder) / "%05d.jpg"))
        paths = sorted(Path(folder).glob("*.jpg"))
        read = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)[:height, :width] for p in paths]
    if len(read) != frames.shape[0]:
        raise RuntimeError(f"ER-NeRF replica produced {len(read)} frames from {frames.shape[0]}")
    return torch.from_numpy(np.stack(read)).permute(0, 3, 1, 2).to(frames.device, frames.dtype) / 255
