"""Real lossy-codec round trips through PyAV's bundled FFmpeg (libx264 / libx265).

The optimisation loop encodes each frame on its own (an intra frame, the worst case for a small
perturbation because nothing is predicted from a previous frame); evaluation, and the engine's check of
the PSNR floor against the known delivery (``Delivery``), encode the frames as one video with the codec's
normal group of pictures, as a delivery or an attacker's re-encode does.
Frames are N x 3 x H x W float tensors in [0, 1]; odd sizes are padded for 4:2:0 and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from ..media.x264 import REPEATABLE_PARAMS


def to_rgb24(frames: torch.Tensor) -> np.ndarray:
    """N x H x W x 3 uint8 images, padded to even sides by edge replication."""
    height, width = frames.shape[-2:]
    padded = F.pad(frames, (0, width % 2, 0, height % 2), mode="replicate") if (height | width) % 2 else frames
    return (padded.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_rgb24(images: list[np.ndarray], like: torch.Tensor) -> torch.Tensor:
    height, width = like.shape[-2:]
    stacked = torch.from_numpy(np.stack(images))[:, :height, :width].permute(0, 3, 1, 2)
    return stacked.to(device=like.device, dtype=like.dtype) / 255


def roundtrip(frames: torch.Tensor, crf: float | None = 23, codec: str = "libx264", *, intra: bool = False,
              bitrate: int | None = None, preset: str = "medium", fps: Fraction = Fraction(25)) -> torch.Tensor:
    """Encode ``frames`` as yuv420p with ``codec`` (at ``crf``, or at ``bitrate`` bits/s) and decode
    them again. ``intra`` encodes every frame independently. Deterministic: one encoder thread."""
    pictures = _pictures(frames)
    decoded = [picture for batch in ([[p] for p in pictures] if intra else [pictures])
               for picture in _coded(batch, crf, codec, bitrate, preset, fps)]
    return from_rgb24([picture.to_ndarray(format="rgb24") for picture in decoded], frames)


def _pictures(frames: torch.Tensor) -> list:
    """The frames as the 4:2:0 pictures an encoder is fed with."""
    import av

    return [av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p") for image in to_rgb24(frames)]


def _coded(pictures: list, crf: float | None, codec: str, bitrate: int | None, preset: str, fps: Fraction) -> list:
    """4:2:0 pictures encoded together as one video and decoded again."""
    import av

    options = {"preset": preset, "threads": "1"}
    if bitrate is None:
        options["crf"] = f"{crf:g}"
    if codec == "libx265":
        options["x265-params"] = "log-level=none:pools=1:frame-threads=1"
    elif REPEATABLE_PARAMS:
        options["x264-params"] = REPEATABLE_PARAMS
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = pictures[0].width, pictures[0].height
    encoder.pix_fmt, encoder.time_base, encoder.framerate = "yuv420p", 1 / fps, fps
    if bitrate is not None:
        encoder.bit_rate = bitrate
    encoder.options = options
    decoder = av.CodecContext.create("hevc" if codec == "libx265" else "h264", "r")
    packets = []
    for index, picture in enumerate(pictures):
        picture.pts = index
        packets += encoder.encode(picture)
    packets += encoder.encode(None)
    decoded = [picture for packet in packets for picture in decoder.decode(packet)]
    return decoded + list(decoder.decode(None))


def _planes(picture, height: int, width: int) -> torch.Tensor:
    """Y, U and V of a yuv420p picture as float 3 x height x width (chroma repeated to full size)."""
    def plane(index: int) -> torch.Tensor:
        data = picture.planes[index]
        rows = np.frombuffer(data, np.uint8).reshape(-1, data.line_size)[:data.height, :data.width]
        return torch.from_numpy(rows.astype(np.float32))

    chroma = [plane(i).repeat_interleave(2, 0).repeat_interleave(2, 1) for i in (1, 2)]
    return torch.stack([plane(0)[:height, :width], *(c[:height, :width] for c in chroma)])


# 4:2:0 to RGB (BT.601, limited range, as the encoder's input was made): RGB change per unit change of Y, U, V.
_YUV_TO_RGB = torch.tensor([[1.164, 0.0, 1.596], [1.164, -0.392, -0.813], [1.164, 2.017, 0.0]])


@dataclass(frozen=True)
class Delivery:
    """The lossy encode protected frames will go through on their way to the viewer (``vdf protect``'s
    output settings): the engine encodes each chunk this way to measure the error it adds."""

    codec: str = "libx264"
    crf: float | None = 18
    bitrate: int | None = None  # bits per second; replaces crf
    preset: str = "medium"

    def error(self, frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per frame, the mean squared error (8-bit RGB levels squared) of ``frames`` once encoded this way,
        against ``reference``: measured between 4:2:0 pictures and carried to RGB, so the rounding of this
        module's RGB/4:2:0 conversion (about 1.8 on franck, absent when a 4:2:0 video is written back as
        4:2:0) is not counted, while the change and the encode's loss of part of it are."""
        decoded = _coded(_pictures(frames), self.crf, self.codec, self.bitrate, self.preset, Fraction(25))
        height, width = frames.shape[-2:]
        return torch.stack([
            torch.einsum("cd,dhw->chw", _YUV_TO_RGB, _planes(after, height, width) - _planes(before, height, width))
            .pow(2).mean() for before, after in zip(_pictures(reference), decoded)])
