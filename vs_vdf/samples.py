"""Verified local files of the real sample media listed in models/manifest.toml (tests, demo, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from .assets import locate


def path(name: str) -> Path:
    """The cached, hash-checked sample ``name`` (e.g. ``franck``, ``wolfgang``)."""
    return locate("media", name)


def read_frames(name: str, count: int, start: int = 0):
    """The first ``count`` frames from ``start`` of sample ``name`` as a T x 3 x H x W float tensor in [0, 1] (RGB)."""
    from .media.frames import read_frames as read_file

    frames = read_file(path(name), count, start)
    if frames.shape[0] < count:
        raise ValueError(f"sample {name!r} has fewer than {start + count} frames")
    return frames
