"""Decoded frames of a video file as a tensor (evaluation, tests and benchmarks; not the node's path)."""

from __future__ import annotations

from pathlib import Path


def read_frames(path: Path | str, count: int | None = None, start: int = 0):
    """``count`` frames (all when None) from ``start`` as a T x 3 x H x W float tensor in [0, 1] (RGB)."""
    import av
    import numpy as np
    import torch

    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
            if count is not None and len(frames) == count:
                break
    if not frames:
        raise ValueError(f"{path}: no frames from frame {start}")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
