"""Pinned, verified third-party files: pretrained models and sample media (see models/manifest.toml)."""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import VdfError
from .cache import IntegrityError, Status, asset_path, cache_root, status_of
from .download import FetchError, MissingToolError, fetch
from .manifest import Asset, Manifest, ManifestError, Source

__all__ = [
    "Asset", "AssetUnavailableError", "FetchError", "IntegrityError", "Manifest", "ManifestError",
    "MissingToolError", "Source", "Status", "asset_path", "cache_root", "default_manifest", "fetch",
    "locate", "status_of",
]

_SINGULAR = {"models": "model", "media": "media file"}


class AssetUnavailableError(VdfError, FileNotFoundError):
    """A fetched file is missing or fails its hash; the message says how to fetch it."""


@functools.cache
def default_manifest() -> Manifest:
    return Manifest.load()


def locate(kind: str, name: str, manifest: Manifest | None = None) -> Path:
    """The verified cached file of one asset, or a clear error saying how to get it."""
    (asset,) = (manifest or default_manifest()).select(kind, [name])
    state = status_of(asset)
    if state is not Status.OK:
        raise AssetUnavailableError(
            f"{_SINGULAR[kind]} {name!r} is {state.value} in {cache_root()}; run `vdf {kind} fetch {name}`"
        )
    return asset_path(asset)
