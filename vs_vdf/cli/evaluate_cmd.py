"""`vdf evaluate CLEAN PROTECTED`: what the protection does to the attackers' models and pipelines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .paths import check_outputs

PIPELINE_NAMES = ("ernerf", "genefacepp")


def _names(value: str, known: tuple[str, ...], option: str) -> tuple[str, ...]:
    if value.strip() in ("", "none"):
        return ()
    if value.strip() == "all":
        return known
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(known)}, all or none",
                                 param_hint=option)
    return names


@click.command("evaluate")
@click.argument("clean", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.argument("protected", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the full report as JSON.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write the self-contained HTML report.")
@click.option("--pipeline", default="ernerf,genefacepp", show_default=True,
              help="Attacker pipelines to replicate: ernerf, genefacepp, all or none.")
@click.option("--purify", default="all", show_default=True,
              help="Purifications to re-evaluate after (comma-separated, all or none).")
@click.option("--frames", type=click.IntRange(min=1), default=48, show_default=True,
              help="Evaluate the first N frames (memory grows with N).")
@click.option("--device", default="auto", show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A BiSeNet face-parsing checkpoint to evaluate as well, for this run only (`vdf models add` "
                   "keeps one, and S3FD and FAN files, for every run).")
@click.option("--overwrite", is_flag=True, help="Replace the JSON and HTML reports if they exist.")
def evaluate_command(clean: Path, protected: Path, json_path: Path | None, html_path: Path | None, pipeline: str,
                     purify: str, frames: int, device: str, checkpoint: Path | None, overwrite: bool) -> None:
    """Compare PROTECTED with CLEAN on every surrogate, attacker pipeline and purification."""
    import av
    import torch
    import vapoursynth

    from .. import __version__
    from ..engine.protector import resolve_device
    from ..evaluation.analysis import Analyst
    from ..evaluation.evaluate import evaluate
    from ..evaluation.purify import PURIFIERS
    from ..media.frames import read_frames
    from ..media.probe import probe
    from ..media.writer import write_text_atomically

    check_outputs([clean, protected], {"--json": json_path, "--html": html_path}, overwrite)
    pipelines = _names(pipeline, PIPELINE_NAMES, "--pipeline")
    purifications = _names(purify, tuple(PURIFIERS), "--purify")
    resolved = resolve_device(device)
    fps = probe(clean).average_rate
    probe(protected)
    clean_frames, protected_frames = read_frames(clean, frames), read_frames(protected, frames)
    if clean_frames.shape[1:] != protected_frames.shape[1:]:
        raise click.ClickException(f"frame sizes differ: {tuple(clean_frames.shape[2:])} (clean) and "
                                   f"{tuple(protected_frames.shape[2:])} (protected)")
    count = min(clean_frames.shape[0], protected_frames.shape[0])
    if clean_frames.shape[0] != protected_frames.shape[0]:
        click.echo(f"warning: the videos differ in length; comparing the first {count} frames", err=True)
    analyst = Analyst(device=resolved, checkpoint=checkpoint)
    document = evaluate(clean_frames[:count], protected_frames[:count], fps, analyst=analyst, pipelines=pipelines,
                        purifications=purifications, progress=lambda label: click.echo(f"evaluating: {label}", err=True))
    document.update({"clean": str(clean), "protected": str(protected),
                     "options": {"frames": count, "pipelines": list(pipelines), "purifications": list(purifications),
                                 "device": str(resolved), "checkpoint": str(checkpoint) if checkpoint else None},
                     "versions": {"vs-vdf": __version__, "torch": torch.__version__, "av": av.__version__,
                                  "vapoursynth": str(vapoursynth.__version__), "python": sys.version.split()[0]}})
    if json_path:
        write_text_atomically(json_path, json.dumps(document, indent=1, allow_nan=False))
    if html_path:
        from ..evaluation.html import render

        write_text_atomically(html_path, render(document, clean_frames[:count], protected_frames[:count], analyst))
    click.echo(document["summary"])
