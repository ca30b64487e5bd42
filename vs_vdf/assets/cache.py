"""Where fetched files live and whether each one is intact.

The cache is outside the repository by default (``$VS_VDF_CACHE``, else ``$XDG_CACHE_HOME/vs-vdf``,
else ``~/.cache/vs-vdf``) so nothing fetched can be committed, and several checkouts share one copy.
A file counts as present only when its size and sha256 match the manifest; files appear under their
final name only by an atomic rename after that check, so an interrupted fetch leaves nothing behind
that could be mistaken for a good file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from enum import Enum
from pathlib import Path

from ..errors import VdfError
from .manifest import Asset

TEMP_PREFIX = ".partial-"


def cache_root() -> Path:
    explicit = os.environ.get("VS_VDF_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vs-vdf"


def asset_path(asset: Asset, root: Path | None = None) -> Path:
    return (root or cache_root()) / asset.kind / asset.file


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Status(str, Enum):
    OK = "ok"
    MISSING = "missing"
    CORRUPT = "corrupt"


def status_of(asset: Asset, root: Path | None = None) -> Status:
    """Re-hash the cached file: cheap (the largest is a few MB) and it catches silent corruption."""
    path = asset_path(asset, root)
    if not path.is_file():
        return Status.MISSING
    if path.stat().st_size != asset.size or sha256_of(path) != asset.sha256:
        return Status.CORRUPT
    return Status.OK


def install_bytes(data: bytes, asset: Asset, root: Path | None = None) -> Path:
    """Check ``data`` against the manifest, then place it atomically under the asset's final name."""
    actual = hashlib.sha256(data).hexdigest()
    if len(data) != asset.size or actual != asset.sha256:
        raise IntegrityError(
            f"{asset.name}: extracted {len(data)} bytes with sha256 {actual}, "
            f"manifest expects {asset.size} bytes with sha256 {asset.sha256}"
        )
    target = asset_path(asset, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=target.parent, prefix=TEMP_PREFIX, delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return target


def remove_leftovers(root: Path | None = None) -> None:
    """Delete temporary files and folders that a killed fetch could not clean up itself."""
    root = root or cache_root()
    if not root.is_dir():
        return
    for leftover in root.rglob(f"{TEMP_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


class IntegrityError(VdfError, RuntimeError):
    """A downloaded archive or an extracted file does not match its pinned hash."""
