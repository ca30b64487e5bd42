"""Real lossy-codec round trips through PyAV's bundled FFmpeg (libx264 / libx265).

The optimisation loop encodes each frame on its own (an intra frame, the worst case for a small
perturbation because nothing is predicted from a previous frame); evaluation, and the engine's check of
the PSNR floor against the known delivery (``Delivery``), encode the frames as one video with the codec's
normal group of pictures, as a delivery or an attacker's re-encode does.
``Delivery`` makes its 4:2:0 pictures as the writer's conversion does: from the float frames as decoded,
neither rounded to 8-bit RGB nor clipped to [0, 1] first. Either made the encode behave differently: on 48
Wolfgang frames at ``light`` the written frames' PSNR fell up to 1 dB below the estimate; made this way
the estimate was never above the written PSNR by more than 0.02 dB (0.2 dB below it on average).
Frames are N x 3 x H x W float tensors in [0, 1] (``Delivery``'s may stray outside it, as decoded); odd
sizes are padded for 4:2:0 and cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

from ..media.frames import av_picture
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


# RGB to 4:2:0 levels (BT.601, limited range) and back: the YUV change per unit of RGB, and the RGB change
# (8-bit levels) per YUV level. Whatever the clip's matrix: on a BT.709 clip (the 960 x 540 `face_noface`
# sample, 24 frames protected at light) the estimate with these coefficients was 0.01 to 0.10 dB below the same
# estimate with BT.709's, so it errs toward keeping the floor.
_KR, _KB = 0.299, 0.114
_RGB_TO_YUV = torch.tensor([[_KR, 1 - _KR - _KB, _KB],
                            [-_KR / (2 - 2 * _KB), -(1 - _KR - _KB) / (2 - 2 * _KB), 0.5],
                            [0.5, -(1 - _KR - _KB) / (2 - 2 * _KR), -_KB / (2 - 2 * _KR)]], dtype=torch.float64) \
    * torch.tensor([[219.0], [224.0], [224.0]], dtype=torch.float64)
_YUV_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)
_YUV_TO_RGB = (torch.linalg.inv(_RGB_TO_YUV) * 255).float()


def _yuv420(frames: torch.Tensor) -> list[torch.Tensor]:
    """Y, U and V (8-bit levels, float) of float RGB frames: converted before any rounding or clipping (values
    outside [0, 1], as a colour conversion leaves them, are what the writer converts too), chroma the mean of
    each 2 x 2 block; odd sides padded by edge replication."""
    height, width = frames.shape[-2:]
    padded = F.pad(frames, (0, width % 2, 0, height % 2), mode="replicate") if (height | width) % 2 else frames
    red, green, blue = padded.detach().cpu().double().unbind(1)
    # one plane at a time, in place: a 3 x 3 einsum or matmul over the channels took 4.4x or 2.8x as long in float64
    luma, *chroma = [(red * row[0]).add_(green, alpha=row[1]).add_(blue, alpha=row[2]).add_(offset)
                     for row, offset in zip(_RGB_TO_YUV.tolist(), _YUV_OFFSET.tolist())]
    return [plane.round().clamp(0, 255) for plane in (luma, *(F.avg_pool2d(c[:, None], 2)[:, 0] for c in chroma))]


def yuv420_levels(frames: torch.Tensor) -> list[torch.Tensor]:
    """Y, U and V of float RGB frames as 8-bit levels (``uint8``: an eighth of the float64 planes' memory)."""
    return [plane.to(torch.uint8) for plane in _yuv420(frames)]


def _yuv_pictures(planes: list[torch.Tensor]) -> list:
    """The planes as yuv420p pictures for the encoder."""
    height, width = planes[0].shape[1:]
    return [av_picture(width, height, "yuv420p", [plane[index].numpy().astype(np.uint8) for plane in planes])
            for index in range(planes[0].shape[0])]


def _picture_planes(picture) -> list[torch.Tensor]:
    """Y, U and V of a decoded yuv420p picture (8-bit levels, float)."""
    return [torch.from_numpy(np.frombuffer(data, np.uint8).reshape(-1, data.line_size)[:data.height, :data.width]
                             .astype(np.float32)) for data in picture.planes]


def _full_size(planes: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Y, U and V as one 3 x height x width tensor, each chroma sample repeated over its 2 x 2 block."""
    luma, *chroma = planes
    return torch.stack([luma[:height, :width],
                        *(c.repeat_interleave(2, 0).repeat_interleave(2, 1)[:height, :width] for c in chroma)])


@dataclass(frozen=True)
class Delivery:
    """The lossy encode protected frames will go through on their way to the viewer (``vdf protect``'s
    output settings): the engine encodes each chunk this way to measure the error it adds."""

    codec: str = "libx264"
    crf: float | None = 18
    bitrate: int | None = None  # bits per second; replaces crf
    preset: str = "medium"

    def error(self, frames: torch.Tensor, reference: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Per frame, the mean squared error (8-bit RGB levels squared) of ``frames`` (float RGB, as the writer
        gets them: ``protector.with_change``) once encoded this way, against ``reference`` (frames, or their
        ``yuv420_levels`` where several encodes are measured against the same frames): measured between
        4:2:0 pictures and carried to RGB, so the rounding of the RGB/4:2:0 conversion is not counted, while
        the change and the encode's loss of part of it are."""
        height, width = frames.shape[-2:]
        decoded = _coded(_yuv_pictures(_yuv420(frames)), self.crf, self.codec, self.bitrate, self.preset, Fraction(25))
        clean = yuv420_levels(reference) if isinstance(reference, torch.Tensor) else reference
        return torch.stack([  # the difference taken on the 4:2:0 planes, then spread over the frame
            torch.einsum("cd,dhw->chw", _YUV_TO_RGB, _full_size(
                [after - plane[index].float() for after, plane in zip(_picture_planes(picture), clean)],
                height, width)).pow(2).mean()
            for index, picture in enumerate(decoded)])
