"""The `vdf` command line."""

from __future__ import annotations

import click

from ..errors import VdfError
from .assets_cmd import asset_group
from .evaluate_cmd import evaluate_command
from .plugin_cmd import plugin_group
from .protect_cmd import protect_command
from .user_models_cmd import add_command, list_user_models


class _Commands(click.Group):
    """The one error boundary: an error vs-vdf raises on purpose is one line on stderr, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VdfError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vs-vdf")
def main() -> None:
    """Protect talking-head videos against 3D talking-face cloning."""


models_group = asset_group("models", "pretrained face models (the surrogates the protection attacks)", list_user_models)
models_group.add_command(add_command)
main.add_command(models_group)
main.add_command(asset_group("media", "real sample videos and stills for the demo, tests and benchmarks"))
main.add_command(protect_command)
main.add_command(evaluate_command)
main.add_command(plugin_group)
