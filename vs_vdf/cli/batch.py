"""Many videos in one `vdf protect` run: which files, where each output and report go, and which are done
already (so an interrupted batch resumes where it stopped)."""

from __future__ import annotations

import json
from pathlib import Path

from ..media.writer import CONTAINERS

# Endings taken as videos when a folder is given (other files in it are left alone).
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg",
                  ".wmv", ".flv", ".3gp"}


def inputs_of(sources: tuple[Path, ...]) -> list[Path]:
    """The videos to protect: the files given, and the videos directly inside each folder given (sorted)."""
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found += sorted(p for p in source.iterdir()
                            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            found.append(source)
    return found


def output_for(source: Path, folder: Path) -> tuple[Path, Path]:
    """(video, report) in ``folder`` for ``source``: the same name when its container can be written, else
    the name with .mp4 added; the report beside it as <video name>.json."""
    name = source.name if source.suffix.lower() in CONTAINERS else f"{source.name}.mp4"
    video = folder / name
    return video, folder / f"{name}.json"


def is_done(video: Path, report: Path, source: Path, settings: dict) -> bool:
    """A complete output and a report of the same input and settings: nothing left to do."""
    if not (video.is_file() and report.is_file()):
        return False
    try:
        document = json.loads(report.read_text())
    except (OSError, ValueError):
        return False
    return (document.get("complete") is True and document.get("input") == str(source)
            and {key: document.get(key) for key in settings} == settings)
