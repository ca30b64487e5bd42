"""Checks on every file a command will write, made before any work starts, so nothing is lost."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..media.probe import MediaError, check_name


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_outputs(inputs: list[Path], outputs: dict[str, Path | None], overwrite: bool) -> None:
    """Every named output (option -> path) must be a writable file name that is not an input, not another
    output, and not an existing file unless ``overwrite``; the first problem is a ``click.ClickException``."""
    named = {option: path for option, path in outputs.items() if path is not None}
    for option, path in named.items():
        try:
            check_name(path)
        except MediaError as exc:
            raise click.ClickException(f"{option}: {exc}") from None
        if path.is_dir():
            raise click.ClickException(f"{option} {path} is a folder; give a file name")
        for source in inputs:
            if _same_file(path, source):
                raise click.ClickException(f"{option} {path} is the input file {source}; vdf never writes over its input")
        for other, other_path in named.items():
            if other != option and _same_file(path, other_path):
                raise click.ClickException(f"{option} and {other} name the same file {path}; give each its own")
        if path.exists() and not overwrite:
            raise click.ClickException(f"{option} {path} exists; pass --overwrite to replace it")
        folder = path.parent
        if not folder.is_dir():
            raise click.ClickException(f"cannot write {path}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise click.ClickException(f"cannot write {path}: no write permission in {folder}")
