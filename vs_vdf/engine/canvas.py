"""Where the perturbation lives and the resolution the attack runs at, so that cost follows the face,
not the frame.

The attacked models look at a face through a few hundred pixels at most (BlazeFace 128, FaceMesh 192,
selfie 256, BiSeNet 512), so a chunk is analysed and attacked on *working frames*: its frames shrunk
(never enlarged) until the largest face box's long side is ``WORK_FACE`` pixels, when that shrinks
them by at least a fifth. The perturbation's
parameters live on a *canvas*: a rectangle of working pixels around each frame's head region, one size
for the whole chunk, placed on the face of each frame, so parameters carried from one frame to the
next stay on the face when the head moves. Only the canvas is enlarged to the delivered resolution
and added there; every pixel outside it keeps its input value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len

from .budget import head_extent
from .resampling import apply_bands, round_trip_bands
from .transforms import quantise

# Long side of the largest face box in the working frames, pixels: no attacked model sees a face larger
# (FaceMesh's crop is 192 px and holds more than the face). Measured at 1080p (24 frames of each sample
# enlarged, `balanced`; FaceMesh disrupted after the ER-NeRF / GeneFace++ replicas): 224 px: franck 0.87 s a
# frame, 100% / 79%, Wolfgang 1.64 s, 96% / 92%; 192 px: franck 0.49 s, 100% / 100%, Wolfgang 1.37 s,
# 100% / 83%. Faces up to 240 px (both samples as they are) are not shrunk at all.
WORK_FACE = 192
# Frames are shrunk only below this scale: a slight shrink saves little, and the resampling it adds between
# the attack and the delivered frame cost a 232 px face a quarter of its disrupted frames after the ER-NeRF path.
LEAST_SHRINK = 0.8
SSIM_WINDOW = 11  # the fidelity term's SSIM window: windows that miss the canvas see no change


@dataclass
class Canvas:
    """A chunk's working size and the canvas of each of its frames."""

    frame: tuple[int, int]  # H, W of the delivered frames
    working: tuple[int, int]  # H, W of the working frames
    size: tuple[int, int]  # H, W of every canvas, working pixels
    origins: torch.Tensor  # T x 2 long: (x, y) of each frame's canvas in its working frame

    @classmethod
    def whole(cls, height: int, width: int, count: int) -> "Canvas":
        """The whole frame at full resolution (the released algorithm's full-frame perturbation)."""
        return cls((height, width), (height, width), (height, width), torch.zeros(count, 2, dtype=torch.long))

    @classmethod
    def around_faces(cls, height: int, width: int, boxes: torch.Tensor) -> "Canvas":
        """Canvases around the head regions of face boxes (T x 4 xyxy in delivered pixels, NaN rows: no
        face), on working frames whose largest face is ``WORK_FACE`` pixels (or the frames as they are)."""
        found = ~boxes.isnan().any(-1)
        if not found.any():
            return cls.whole(height, width, boxes.shape[0])
        longest = float((boxes[found, 2:] - boxes[found, :2]).amax())
        scale = WORK_FACE / max(longest, 1.0)
        scale = scale if scale < LEAST_SHRINK else 1.0
        working = (max(16, round(height * scale)), max(16, round(width * scale)))
        factor = boxes.new_tensor([working[1] / width, working[0] / height] * 2)
        centres, sizes = head_extent(boxes[found] * factor)
        size = (min(working[0], fft_friendly(math.ceil(float(sizes[:, 1].amax())) + 2)),
                min(working[1], fft_friendly(math.ceil(float(sizes[:, 0].amax())) + 2)))
        limit = torch.tensor([working[1] - size[1], working[0] - size[0]])
        corner = (centres.cpu() - torch.tensor([size[1], size[0]]) / 2).round().long()
        origins = torch.zeros(boxes.shape[0], 2, dtype=torch.long)
        origins[found.cpu()] = torch.minimum(corner.clamp(min=0), limit)
        return cls((height, width), working, size, origins)

    @property
    def scaled(self) -> bool:
        return self.working != self.frame

    def shrink(self, frames: torch.Tensor) -> torch.Tensor:
        """Delivered frames at the working size (anti-aliased), or themselves."""
        if not self.scaled:
            return frames
        return F.interpolate(frames, size=self.working, mode="bilinear", align_corners=False, antialias=True)

    def boxes(self, boxes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Boxes in working pixels (R x 4) of frames ``rows``, in the coordinates of their canvases."""
        return boxes - self.origins[rows.cpu()].to(boxes).repeat(1, 2)

    def crop(self, frames: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The canvases (R x C x h x w) of working frames ``frames`` (R x C x H x W, those of ``rows``)."""
        height, width = self.size
        return torch.stack([frames[j, :, y:y + height, x:x + width]
                            for j, (x, y) in enumerate(self.origins[rows.cpu()].tolist())])

    def paste(self, change: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Canvas-sized changes (R x C x h x w) placed in zero working frames as the working frames of the
        delivered frames will hold them (differentiable)."""
        change = self._delivered(change)
        height, width = self.size
        return torch.stack([F.pad(change[j], (x, self.working[1] - x - width, y, self.working[0] - y - height))
                            for j, (x, y) in enumerate(self.origins[rows.cpu()].tolist())])

    def _delivered_size(self) -> tuple[int, int, float, float]:
        """The canvas enlarged to delivered pixels: (height, width, frame pixels per working pixel in x, in y)."""
        to_frame_x, to_frame_y = self.frame[1] / self.working[1], self.frame[0] / self.working[0]
        return round(self.size[0] * to_frame_y), round(self.size[1] * to_frame_x), to_frame_x, to_frame_y

    def _delivered(self, change: torch.Tensor) -> torch.Tensor:
        """A change as the working frames see it once it has been enlarged into the delivered frames: the
        enlargement and the anti-aliased shrink in between blur it a little, and the attack must know.
        Both resamplings are separable and linear, so the round trip is one banded matrix per axis, applied
        at the canvas size as a few multiply-adds: its cost does not grow with the delivered resolution (forward
        and backward on a 300 x 288 canvas 1.9 ms, where the dense matrix products cost 10-11 ms)."""
        if not self.scaled:
            return change
        height, width, _, _ = self._delivered_size()
        across = apply_bands(change, round_trip_bands(self.size[1], width), -1)
        return apply_bands(across, round_trip_bands(self.size[0], height), -2)

    def follow(self, flow: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """Where each pixel of frame ``target``'s canvas was on frame ``source``'s canvas, as a sampling grid
        (1 x h x w x 2, ``F.grid_sample``'s normalised coordinates, ``align_corners=False``), from the working
        frames' optical flow (H x W x 2, ``motion.flow``: ``target``'s pixel p shows ``source``'s p + flow)."""
        height, width = self.size
        (x0, y0), (x1, y1) = self.origins[source].tolist(), self.origins[target].tolist()
        offsets = flow[y1:y1 + height, x1:x1 + width]
        ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
        across = (xs + x1 - x0 + offsets[..., 0]) / width * 2 - 1
        down = (ys + y1 - y0 + offsets[..., 1]) / height * 2 - 1
        return torch.stack([across, down], -1)[None]

    def coverage(self) -> float:
        """The share of a working frame's SSIM windows that lie inside the canvas: (1 - SSIM) over the
        whole frame is this times (1 - SSIM) over the canvas, since the windows outside see no change."""
        def windows(height: int, width: int) -> int:
            return max(height - SSIM_WINDOW + 1, 1) * max(width - SSIM_WINDOW + 1, 1)

        return windows(*self.size) / windows(*self.working)

    def apply(self, frame: torch.Tensor, change: torch.Tensor, row: int) -> torch.Tensor:
        """A delivered frame (C x H x W) with one canvas-sized change (C x h x w) added and rounded to
        8-bit levels inside the canvas; pixels outside it are returned as they were."""
        out = frame.clone()
        x, y = self.origins[row].tolist()
        height, width, to_frame_x, to_frame_y = self._delivered_size()
        left, top = round(x * to_frame_x), round(y * to_frame_y)
        enlarged = change if not self.scaled else \
            F.interpolate(change[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        enlarged = enlarged[:, :self.frame[0] - top, :self.frame[1] - left]
        region = out[:, top:top + enlarged.shape[1], left:left + enlarged.shape[2]]
        region.copy_(quantise((region + enlarged).clamp(0, 1)))
        return out


def fft_friendly(length: int) -> int:
    """The least length >= ``length`` the real FFT computes fast (no prime factor above 5). The perturbation
    takes the canvas's spectrum on every step, and a length with a large prime factor costs the FFT far more:
    the perturbation's forward and backward took 23.9 ms on a 360 x 518 canvas (518 = 2 x 7 x 37), 16.3 ms on
    360 x 540."""
    return next_fast_len(length, real=True)
