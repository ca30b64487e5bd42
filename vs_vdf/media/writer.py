"""Encode protected frames and copy the input's other streams, into a temporary file renamed at the end.

What the output keeps from the input: every shown frame's timestamp (also variable frame rates and a
non-zero start), the colour matrix, range, primaries and transfer, every audio track (trimmed only with
``--frames``), the subtitle tracks the container can carry, and each stream's metadata (language,
title, the timecode). Rotated phone video is written upright, without a rotation tag.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import colour
from .frames import av_picture
from .probe import MediaError, VideoInfo
from .x264 import REPEATABLE_PARAMS

CODECS = ("libx264", "libx265")
# The containers written correctly (timestamps kept exactly, audio and subtitles copied), by file ending.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
BIT_DEPTHS = (8, 10)
CRF_RANGE = (0.0, 51.0)


def container_for(output: Path) -> str:
    """The muxer for ``output``'s ending; refuses endings whose container is not written correctly."""
    if str(output) == "-":
        raise MediaError("cannot write the video to standard output; give a file name "
                         "(for pipes, run filters/protect.vpy under vspipe)")
    try:
        return CONTAINERS[output.suffix.lower()]
    except KeyError:
        raise MediaError(f"{output}: cannot write {output.suffix or 'a file without an ending'}; "
                         f"use one of {', '.join(CONTAINERS)}") from None


@dataclass(frozen=True)
class Encoding:
    codec: str = "libx264"
    crf: float | None = 18
    bitrate: int | None = None  # bits per second; replaces crf
    lossless: bool = False
    preset: str = "medium"
    bit_depth: int = 8

    def __post_init__(self):
        if self.codec not in CODECS:
            raise MediaError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        if self.crf is not None and not CRF_RANGE[0] <= self.crf <= CRF_RANGE[1]:
            raise MediaError(f"CRF {self.crf:g} is outside {CRF_RANGE[0]:g}..{CRF_RANGE[1]:g}")
        if self.bitrate is not None and self.bitrate <= 0:
            raise MediaError(f"bitrate {self.bitrate} must be positive")
        if self.bit_depth not in BIT_DEPTHS:
            raise MediaError(f"bit depth {self.bit_depth} is not one of {', '.join(map(str, BIT_DEPTHS))}")

    def options(self) -> dict[str, str]:
        options = {"preset": self.preset}
        if self.lossless:
            options |= {"qp": "0"} if self.codec == "libx264" else {"x265-params": "lossless=1:log-level=none"}
        elif self.bitrate is None:
            options["crf"] = f"{self.crf:g}"
        if self.codec == "libx265" and not self.lossless:
            options["x265-params"] = "log-level=none"
        if self.codec == "libx264" and REPEATABLE_PARAMS:
            options["x264-params"] = REPEATABLE_PARAMS
        return options


@dataclass(frozen=True)
class OutputFormat:
    """The encoded picture, decided from the decoded clip before any work starts."""

    width: int
    height: int
    chroma_444: bool
    bit_depth: int
    matrix: int  # H.273 code of the YUV matrix
    full_range: bool
    notices: tuple[str, ...] = ()

    @property
    def pixel_format(self) -> str:
        name = "yuv444p" if self.chroma_444 else "yuv420p"
        return name if self.bit_depth == 8 else f"{name}{self.bit_depth}le"


def plan_output(info: VideoInfo, width: int, height: int, first_frame_props, is_rgb: bool,
                encoding: Encoding) -> OutputFormat:
    """The output's size, chroma layout, depth and colour for a decoded clip of ``width`` x ``height``,
    with a notice for every way it differs from the input."""
    notices = []
    shown = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
    if info.rotation:
        notices.append(f"the input is displayed rotated by {info.rotation} degrees; the output is written upright "
                       f"({width}x{height}, no rotation tag)")
    if (width, height) != shown:
        notices.append(f"the decoder crops the odd-sized 4:2:0 frames from {shown[0]}x{shown[1]} to {width}x{height}")
    odd = width % 2 or height % 2
    if odd and not encoding.lossless:
        notices.append(f"the frame size {width}x{height} is odd and 4:2:0 needs even sizes: writing 4:4:4, "
                       "which keeps every pixel (some players only play 4:2:0)")
    if info.bit_depth > encoding.bit_depth:
        notices.append(f"the input has {info.bit_depth} bits per sample; writing {encoding.bit_depth} "
                       "(--bit-depth 10 keeps 10 bits)")
    if info.has_alpha:
        notices.append("the input's alpha channel is dropped: the output has none")
    matrix = colour.default_matrix(width, height) if is_rgb else colour.yuv_matrix(
        first_frame_props.get("_Matrix"), width, height)
    full = not is_rgb and colour.frame_is_full_range(first_frame_props)
    return OutputFormat(width, height, encoding.lossless or bool(odd), encoding.bit_depth, matrix, full, tuple(notices))


@contextmanager
def atomic_output(output: Path):
    """A temporary path beside ``output``; renamed over it only when the block finishes without error."""
    handle, name = tempfile.mkstemp(prefix=f".{output.stem}.", suffix=f".partial{output.suffix}", dir=output.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        temporary.chmod(0o666 & ~umask)  # mkstemp makes it private; the result gets the usual permissions
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_output(path) as temporary:
        temporary.write_text(text)


class VideoWriter:
    """Video frames in, one at a time (planar yuv arrays); the input's other streams copied untouched.

    ``audio_end`` (seconds) drops the audio and subtitle packets that start at or after it (``--frames``);
    None keeps them all. ``warn`` receives one line per input stream the output cannot carry.
    """

    def __init__(self, path: Path, container: str, info: VideoInfo, encoding: Encoding, picture: OutputFormat,
                 audio_end: Fraction | None = None, warn=lambda message: None):
        import av

        self.info, self.picture, self.audio_end = info, picture, audio_end
        self.container = av.open(str(path), "w", format=container)
        self.source = av.open(str(info.path))
        source_video = self.source.streams.video[0]
        self.stream = self.container.add_stream(encoding.codec, rate=info.average_rate)
        self.stream.width, self.stream.height = picture.width, picture.height
        self.stream.pix_fmt = picture.pixel_format
        # The encoder's time base is the input stream's, so every input timestamp is kept exactly.
        self.stream.codec_context.time_base = info.time_base
        self.stream.time_base = info.time_base
        if encoding.bitrate is not None and not encoding.lossless:
            self.stream.bit_rate = encoding.bitrate
        self.stream.options = encoding.options()
        if encoding.codec == "libx265" and container in ("mp4", "mov"):
            self.stream.codec_tag = "hvc1"  # the tag Apple's players require for HEVC
        context = self.stream.codec_context
        context.colorspace = picture.matrix
        context.color_range = colour.RANGE_FULL if picture.full_range else colour.RANGE_LIMITED
        context.color_primaries, context.color_trc = info.color["color_primaries"], info.color["color_trc"]
        _copy_metadata(source_video, self.stream, skip=("rotate", "encoder"))
        self.copied = {}
        for stream in self.source.streams:
            if stream.index == source_video.index:
                continue
            name = stream.codec_context.name if stream.codec_context else None
            if stream.type == "data" and stream.metadata.get("timecode") and "timecode" in self.stream.metadata:
                continue  # the timecode track is written again from the video stream's timecode
            if stream.type not in ("audio", "subtitle") or name not in self.container.supported_codecs:
                warn(f"input stream {stream.index} ({stream.type}, {name or 'unknown codec'}) cannot be carried "
                     f"by {container}; it is not copied")
                continue
            self.copied[stream.index] = self.container.add_stream_from_template(stream)
            _copy_metadata(stream, self.copied[stream.index])
        self.written = 0

    def write(self, planes: list[np.ndarray]) -> None:
        frame = av_picture(self.picture.width, self.picture.height, self.picture.pixel_format, planes)
        frame.pts = self.info.timestamps[self.written]
        frame.time_base = self.info.time_base
        self.container.mux(self.stream.encode(frame))
        self.written += 1

    def close(self) -> None:
        """Flush the encoder, copy the other streams' packets and finish the file."""
        self.container.mux(self.stream.encode(None))
        if self.copied:
            for packet in self.source.demux(*(self.source.streams[i] for i in self.copied)):
                if packet.dts is None:
                    continue  # the demuxer's end-of-stream marker
                if (self.audio_end is not None and packet.pts is not None
                        and packet.pts * packet.time_base >= self.audio_end):
                    continue
                packet.stream = self.copied[packet.stream.index]
                self.container.mux(packet)
        self.source.close()
        self.container.close()

    def abort(self) -> None:
        self.source.close()
        self.container.close()


def _copy_metadata(source, target, skip: tuple[str, ...] = ()) -> None:
    """Language, title, handler and the like; the disposition (default, forced) too."""
    for key, value in source.metadata.items():
        if key.lower() not in skip and not key.upper() == "DURATION":
            target.metadata[key] = value
    target.disposition = source.disposition
