"""Encode protected frames and copy the input's audio, into a temporary file renamed at the end."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .probe import VideoInfo

CODECS = ("libx264", "libx265")


@dataclass(frozen=True)
class Encoding:
    codec: str = "libx264"
    crf: float | None = 18
    bitrate: int | None = None  # bits per second; replaces crf
    lossless: bool = False
    preset: str = "medium"

    @property
    def pixel_format(self) -> str:
        return "yuv444p" if self.lossless else "yuv420p"

    def options(self) -> dict[str, str]:
        options = {"preset": self.preset}
        if self.lossless:
            options |= {"qp": "0"} if self.codec == "libx264" else {"x265-params": "lossless=1:log-level=none"}
        elif self.bitrate is None:
            options["crf"] = f"{self.crf:g}"
        if self.codec == "libx265" and not self.lossless:
            options["x265-params"] = "log-level=none"
        return options


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


class VideoWriter:
    """Video frames in, one at a time (planar yuv arrays); the input's audio packets copied untouched."""

    def __init__(self, path: Path, info: VideoInfo, encoding: Encoding):
        import av

        self.info, self.encoding = info, encoding
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(encoding.codec, rate=info.average_rate)
        self.stream.width, self.stream.height = info.width, info.height
        self.stream.pix_fmt = encoding.pixel_format
        self.stream.time_base = info.time_base
        if encoding.bitrate is not None and not encoding.lossless:
            self.stream.bit_rate = encoding.bitrate
        self.stream.options = encoding.options()
        for name, value in info.color.items():
            setattr(self.stream.codec_context, name, value)
        self.source = av.open(str(info.path))
        self.audio = {s.index: self.container.add_stream_from_template(s) for s in self.source.streams.audio}
        self.written = 0

    def write(self, planes: list[np.ndarray]) -> None:
        import av

        frame = av.VideoFrame(self.info.width, self.info.height, self.encoding.pixel_format)
        for plane, data in zip(frame.planes, planes):
            view = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            view[:, :data.shape[1]] = data
        frame.pts = self.info.timestamps[self.written]
        frame.time_base = self.info.time_base
        self.container.mux(self.stream.encode(frame))
        self.written += 1

    def close(self) -> None:
        """Flush the encoder, copy the audio packets that start before the last video frame ends, and
        finish the file."""
        self.container.mux(self.stream.encode(None))
        if self.audio:
            frame_length = 1 / (self.info.average_rate * self.info.time_base)
            end = (self.info.timestamps[self.written - 1] + frame_length) * self.info.time_base
            for packet in self.source.demux(*self.source.streams.audio):
                if packet.dts is None or (packet.pts is not None and packet.pts * packet.time_base >= end):
                    continue
                packet.stream = self.audio[packet.stream.index]
                self.container.mux(packet)
        self.source.close()
        self.container.close()

    def abort(self) -> None:
        self.source.close()
        self.container.close()
