"""`vdf plugin install|path`: the native VapourSynth namespace `vdf`."""

from __future__ import annotations

import click


@click.group("plugin")
def plugin_group() -> None:
    """The native VapourSynth plugin (core.vdf.Protect in any .vpy)."""


@plugin_group.command("install")
def install_command() -> None:
    """Link the built plugin into VapourSynth's autoload folder."""
    from ..plugin import install

    click.echo(install())


@plugin_group.command("path")
def path_command() -> None:
    """Print the built plugin library (for core.std.LoadPlugin or a plugin folder of your own)."""
    from ..plugin import built_library

    click.echo(built_library())
