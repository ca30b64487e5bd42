"""`vdf models add` and the user-model rows of `vdf models list`: the attackers' own model files."""

from __future__ import annotations

from pathlib import Path

import click

from ..surrogates import user_files


@click.command(name="add")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--as", "kind", type=click.Choice(sorted(user_files.KINDS)),
              help="Which model FILE is (default: told by its name, else by its structure).")
@click.option("--allow-torchscript", is_flag=True,
              help="Accept a TorchScript archive (code as well as weights, e.g. 2DFAN4-cd938726ad.zip): it is loaded "
                   "once and kept as plain weights. Only for a file you trust.")
def add_command(file: Path, kind: str | None, allow_torchscript: bool) -> None:
    """Add an attacker's model file (S3FD, 2D-FAN-4 or BiSeNet) that you downloaded yourself.

    The file is checked (the sha256 prefix in its name, the architecture key for key, safe loading)
    and copied into the cache; from then on the protection attacks it by default and `vdf evaluate`
    runs it in the ER-NeRF replica. Nothing is copied when a check fails.
    """
    record = user_files.add(file, kind, allow_torchscript=allow_torchscript)
    release = f"matches the release file {record.release}" if record.release else \
        "does not match a known release file (other weights of the same architecture)"
    click.echo(f"added {record.source_name} as {record.kind} ({user_files.KINDS[record.kind].what}); sha256 "
               f"{record.source_sha256[:16]}..., {release}; stored in {user_files.stored_path(record.kind)}")


def list_user_models() -> None:
    """The user-model rows of `vdf models list`."""
    click.echo(f"\nattackers' models you add yourself (`vdf models add FILE`, in {user_files.root()}):")
    for kind, spec in user_files.KINDS.items():
        state, record = user_files.state_of(kind), user_files.record(kind)
        detail = (f"{record.source_name}, {'release ' + record.release if record.release else 'not a release file'}"
                  if record and state != "absent" else f"get it from {spec.where}")
        click.echo(f"{kind:<8}  {state:<7}  {spec.what}: {detail}")
