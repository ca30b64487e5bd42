"""Verified local files of the real sample media listed in models/manifest.toml (tests, demo, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from .assets import locate


def path(name: str) -> Path:
    """The cached, hash-checked sample ``name`` (e.g. ``franck``, ``wolfgang``)."""
    return locate("media", name)


def read_frames(name: str, count: int, start: int = 0):
    """The first ``count`` frames from ``start`` of sample ``name`` as a T x 3 x H x W float tensor in [0, 1] (RGB)."""
    import av
    import numpy as np
    import torch

    frames = []
    with av.open(str(path(name))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    if len(frames) < count:
        raise ValueError(f"sample {name!r} has fewer than {start + count} frames")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
