"""Verified local files of the real sample media listed in models/manifest.toml (tests, demo, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from .assets import locate


def path(name: str) -> Path:
    """The cached, hash-checked sample ``name`` (e.g. ``franck``, ``wolfgang``)."""
    return locate("media", name)
