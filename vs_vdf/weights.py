"""Verified local files of the pretrained models listed in models/manifest.toml."""

from __future__ import annotations

from pathlib import Path

from .assets import locate


def path(name: str) -> Path:
    """The cached, hash-checked file of model ``name``; raises with a fetch hint when it is absent."""
    return locate("models", name)
