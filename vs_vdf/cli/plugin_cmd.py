"""`vdf plugin install|path`: the native VapourSynth namespace `vdf`."""

from __future__ import annotations

import click


@click.group("plugin")
def plugin_group() -> None:
    """The native VapourSynth plugin (core.vdf.Protect in any .vpy)."""


@plugin_group.command("install")
def install_command() -> None:
    """Link the built plugin into VapourSynth's autoload folder."""
    from ..plugin import PluginError, install

    try:
        click.echo(install())
    except PluginError as exc:
        raise click.ClickException(str(exc)) from exc


@plugin_group.command("path")
def path_command() -> None:
    """Print the built plugin library (for core.std.LoadPlugin or a plugin folder of your own)."""
    from ..plugin import PluginError, built_library

    try:
        click.echo(built_library())
    except PluginError as exc:
        raise click.ClickException(str(exc)) from exc
