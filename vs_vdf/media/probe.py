"""What the input file is, read with PyAV before anything is decoded by VapourSynth."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


class MediaError(Exception):
    """The input cannot be used; the message says why."""


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    time_base: Fraction
    average_rate: Fraction
    timestamps: list[int]  # presentation timestamps of the video frames, in time_base units, in order
    color: dict[str, int]  # color_range, colorspace, color_primaries, color_trc of the video stream
    audio_streams: int

    @property
    def frame_count(self) -> int:
        return len(self.timestamps)


def probe(path: Path) -> VideoInfo:
    """Stream facts and every frame's timestamp (demuxing only, no decoding)."""
    import av

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
        timestamps = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
        if not timestamps:
            raise MediaError(f"{path}: the video stream has no frames")
        color = {name: int(getattr(context, name)) for name in ("color_range", "colorspace", "color_primaries", "color_trc")}
        return VideoInfo(path, context.width, context.height, stream.time_base, stream.average_rate or Fraction(25),
                         timestamps, color, len(container.streams.audio))
