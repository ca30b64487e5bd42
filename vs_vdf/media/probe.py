"""What the input file is, read with PyAV before anything is decoded by VapourSynth."""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import VdfError


class MediaError(VdfError):
    """The input cannot be used; the message says why."""


def check_name(path: Path) -> None:
    """FFmpeg and VapourSynth take file names as UTF-8; a name that is not cannot be opened by them."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise MediaError(f"{shown}: the file name is not valid UTF-8; rename the file (or the folder) first") from None


@dataclass
class VideoInfo:
    path: Path
    width: int  # as stored; the decoded frames are turned upright (see ``rotation``)
    height: int
    time_base: Fraction
    average_rate: Fraction
    timestamps: list[int]  # presentation timestamps of the frames a player shows, in time_base units, in order
    color: dict[str, int]  # color_range, colorspace, color_primaries, color_trc of the video stream
    audio_streams: int
    bit_depth: int = 8
    has_alpha: bool = False
    rotation: int = 0  # degrees the display matrix turns the stored frames (0, 90, 180 or 270)

    @property
    def frame_count(self) -> int:
        return len(self.timestamps)


def probe(path: Path) -> VideoInfo:
    """Stream facts and every shown frame's timestamp (demuxing, plus one decoded frame for its rotation)."""
    import av

    check_name(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")
    try:
        container = av.open(str(path))
    except av.EOFError as exc:
        raise MediaError(f"{path}: the file ends before any frame (zero frames)") from exc
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: not a readable media file ({exc.__class__.__name__})") from exc
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        # Packets flagged discard (the pre-roll of a stream-copied cut) are decoded but never shown.
        timestamps = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size and not p.is_discard)
        if not timestamps:
            raise MediaError(f"{path}: the video stream has no frames")
        container.seek(0)
        try:
            rotation = int(next(container.decode(stream)).rotation) % 360
        except (StopIteration, av.FFmpegError):
            rotation = 0
        color = {name: int(getattr(context, name)) for name in ("color_range", "colorspace", "color_primaries", "color_trc")}
        described = av.VideoFormat(context.pix_fmt or "yuv420p")
        return VideoInfo(path, context.width, context.height, stream.time_base, stream.average_rate or Fraction(25),
                         timestamps, color, len(container.streams.audio),
                         max(c.bits for c in described.components),
                         any(c.is_alpha for c in described.components), round(rotation / 90) * 90 % 360)
