"""Obtain pinned files with the registries' ordinary clients, verify them, and place them in the cache.

Archives are downloaded into a temporary folder inside the cache, checked against their pinned
sha256, the wanted members (or byte ranges of members) extracted and checked again, and only then
renamed into place; the temporary folder is removed whatever happens.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import VdfError
from . import cache
from .manifest import Asset, Source


class FetchError(VdfError, RuntimeError):
    """A registry client failed or produced something other than the pinned archive."""


class MissingToolError(FetchError):
    """A registry client (npm) is not installed; names the files that need it."""


def _client_command(source: Source, workdir: Path) -> list[str]:
    if source.client == "pip":
        return [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", *source.pip_args, "-d", str(workdir), source.spec,
        ]
    if source.client == "npm":
        return ["npm", "pack", source.spec, "--pack-destination", str(workdir), "--silent"]
    raise FetchError(f"source {source.name}: unknown client {source.client!r}")


def client_available(client: str) -> bool:
    return client == "pip" or shutil.which(client) is not None


def download_archive(source: Source, workdir: Path) -> Path:
    """Run the client for one source and return its verified archive inside ``workdir``."""
    command = _client_command(source, workdir)
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise FetchError(f"{source.client} could not fetch {source.spec}:\n  " + "\n  ".join(detail))
    archive = workdir / source.archive
    if not archive.is_file():
        found = ", ".join(p.name for p in workdir.iterdir()) or "nothing"
        raise FetchError(f"{source.client} fetched {found} for {source.spec}, expected {source.archive}")
    actual = cache.sha256_of(archive)
    if actual != source.sha256:
        raise cache.IntegrityError(
            f"{source.archive}: sha256 {actual} does not match the pinned {source.sha256}"
        )
    return archive


def read_member(archive: Path, member: str) -> bytes:
    """Read one member of a wheel (zip) or npm tarball (tar.gz)."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                return bundle.read(member)
        with tarfile.open(archive) as bundle:
            extracted = bundle.extractfile(member)
            if extracted is None:
                raise KeyError(member)
            return extracted.read()
    except KeyError as exc:
        raise FetchError(f"{archive.name} has no member {member}") from exc


def extract(asset: Asset, archive: Path) -> bytes:
    data = read_member(archive, asset.member)
    if asset.byte_range is not None:
        start, end = asset.byte_range
        data = data[start:end]
    return data


ProgressFn = Callable[[str], None]


def fetch(
    assets: Iterable[Asset], root: Path | None = None, progress: ProgressFn | None = None
) -> dict[str, str]:
    """Make every asset present and intact; return what happened to each ("present", "fetched",
    "re-fetched"). Assets whose client is missing are reported together at the end."""
    root = root or cache.cache_root()
    report = progress or (lambda message: None)
    cache.remove_leftovers(root)
    outcome: dict[str, str] = {}
    pending: dict[Source, list[Asset]] = defaultdict(list)
    for asset in assets:
        state = cache.status_of(asset, root)
        if state is cache.Status.OK:
            outcome[asset.name] = "present"
            continue
        if state is cache.Status.CORRUPT:
            report(f"{asset.name}: cached file is corrupt or truncated, fetching it again")
            cache.asset_path(asset, root).unlink()
        outcome[asset.name] = "re-fetched" if state is cache.Status.CORRUPT else "fetched"
        pending[asset.source].append(asset)

    lacking_tool: dict[str, list[str]] = defaultdict(list)
    root.mkdir(parents=True, exist_ok=True)
    for source, wanted in pending.items():
        if not client_available(source.client):
            lacking_tool[source.client].extend(asset.name for asset in wanted)
            for asset in wanted:
                outcome[asset.name] = "missing"
            continue
        report(f"downloading {source.spec} ({source.client}) for {', '.join(a.name for a in wanted)}")
        with tempfile.TemporaryDirectory(dir=root, prefix=cache.TEMP_PREFIX) as workdir:
            archive = download_archive(source, Path(workdir))
            for asset in wanted:
                cache.install_bytes(extract(asset, archive), asset, root)
    if lacking_tool:
        lines = [
            f"'{client}' is not installed (or not on PATH); it is needed to fetch: {', '.join(names)}"
            for client, names in lacking_tool.items()
        ]
        raise MissingToolError("\n".join(lines) + "\nInstall Node.js with npm and run the fetch again.")
    return outcome
