"""The measures every part of vs-vdf uses: landmark NME, head-pose error, mask IoU, PSNR, SSIM, and
when a frame counts as disrupted. The engine's success check, the tests, the report and the
benchmarks all call these, so a number means the same thing everywhere."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..surrogates.headpose import angular_error_degrees

# Outer eye corners, used for the inter-ocular distance that normalises landmark error.
IBUG_EYES = (36, 45)
FACEMESH_EYES = (33, 263)
MTCNN_EYES = (0, 1)

NME_DISRUPTED = 0.10
POSE_DISRUPTED_DEG = 5.0
IOU_DISRUPTED = 0.5


def pose_error_degrees(rotation: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Head-pose error per frame: the angle of the relative rotation (N x 3 x 3 -> N degrees)."""
    return angular_error_degrees(rotation, reference)


def interocular(points: torch.Tensor, eyes: tuple[int, int]) -> torch.Tensor:
    """Distance between the two eye landmarks of each frame (N x P x 2+ -> N)."""
    return (points[:, eyes[0], :2] - points[:, eyes[1], :2]).norm(dim=-1)


def nme(points: torch.Tensor, reference: torch.Tensor, eyes: tuple[int, int]) -> torch.Tensor:
    """Mean 2-D point-to-point distance to the reference landmarks over the reference inter-ocular
    distance (N). A tiny floor inside the root keeps the gradient finite at zero displacement."""
    distance = ((points[..., :2] - reference[..., :2]).pow(2).sum(-1) + 1e-12).sqrt()
    return distance.mean(-1) / interocular(reference, eyes)


def mask_iou(probability: torch.Tensor, reference: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU of the thresholded masks per frame (N x H x W -> N); two empty masks count as identical."""
    a, b = probability > threshold, reference > threshold
    union = (a | b).flatten(1).sum(-1)
    inter = (a & b).flatten(1).sum(-1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union, dtype=torch.float32))


def to_8bit(frames: torch.Tensor) -> torch.Tensor:
    """Frames as the 8-bit values a decoder hands out, kept as float in [0, 255]."""
    return (frames.clamp(0, 1) * 255).round()


def psnr(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per frame of 8-bit RGB frames (N x 3 x H x W in [0, 1]); identical frames give inf."""
    mse = (to_8bit(frames) - to_8bit(reference)).pow(2).flatten(1).mean(-1)
    return 10 * torch.log10(255.0 ** 2 / mse)


def gaussian_kernel(window: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """The normalised 1-D Gaussian of ``window`` taps (``like``'s dtype and device)."""
    offsets = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    kernel = torch.exp(-offsets.pow(2) / (2 * sigma ** 2))
    return (kernel / kernel.sum()).to(like)


def gaussian_filter(stack: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Every channel of ``stack`` through the separable filter ``kernel`` (1-D) as one grouped convolution,
    no padding. In channels-last order, where oneDNN's depthwise convolution is far faster on the CPU: forward
    and backward of a 9-channel 288 x 360 stack took 6.7 against 19.4 ms, with the same values (kornia's
    Gaussian blur of a 3-channel frame: 5.8-18 against 2.5-3.7 ms)."""
    groups, window = stack.shape[1], kernel.numel()

    def taps(shape: tuple[int, ...]) -> torch.Tensor:
        return kernel.view(1, 1, *shape).expand(groups, 1, *shape).contiguous(memory_format=torch.channels_last)

    filtered = F.conv2d(stack.contiguous(memory_format=torch.channels_last), taps((1, window)), groups=groups)
    return F.conv2d(filtered, taps((window, 1)), groups=groups).contiguous()  # the SSIM's arithmetic: plain order


class SsimTo:
    """SSIM maps of N x C x H x W images in [0, 1] against one fixed reference, Gaussian window, no padding
    (a map is ``window - 1`` pixels smaller). The optimisation compares a changing canvas with the same clean
    one on every step, forward and backward: the reference's local statistics are filtered once here, so a
    step filters three statistics instead of five (half the time: 31 against 55 ms on a 360 x 518 canvas)."""

    C1, C2 = 0.01 ** 2, 0.03 ** 2

    def __init__(self, reference: torch.Tensor, window: int = 11, sigma: float = 1.5):
        self.reference, self.kernel = reference, gaussian_kernel(window, sigma, reference)
        mean, square = gaussian_filter(torch.cat([reference, reference * reference], 1), self.kernel).split(
            reference.shape[1], 1)
        self._twice_mean = 2 * mean
        self._mean_term = mean.pow(2) + self.C1
        self._spread_term = square - mean.pow(2) + self.C2

    def select(self, index: slice) -> "SsimTo":
        """The same comparison for some of the reference's images, without filtering them again."""
        chosen = copy.copy(self)
        chosen.reference = self.reference[index]
        for name in ("_twice_mean", "_mean_term", "_spread_term"):
            setattr(chosen, name, getattr(self, name)[index])
        return chosen

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        stack = torch.cat([images, images * images, images * self.reference], 1)
        mean, square, product = gaussian_filter(stack, self.kernel).split(images.shape[1], 1)
        cross = self._twice_mean * mean  # 2 x the product of the two local means
        return (cross + self.C1) * (2 * product - cross + self.C2) / \
            ((mean.pow(2) + self._mean_term) * (square - mean.pow(2) + self._spread_term))


def ssim_map(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The SSIM map of two N x C x H x W images in [0, 1] (see ``SsimTo``)."""
    return SsimTo(b, window, sigma)(a)


def ssim(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per frame of 8-bit RGB frames (Gaussian window 11, sigma 1.5, over the channels)."""
    return ssim_map(to_8bit(frames) / 255, to_8bit(reference) / 255).flatten(1).mean(-1)


def grey_ssim(frames: torch.Tensor, reference: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Structural similarity of small grey thumbnails: a cheap, content-level similarity of two frames
    (N), used to decide how much of one frame's perturbation the next one inherits."""
    def thumb(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.mean(1, keepdim=True), size=(size, size), mode="area")

    return ssim_map(thumb(frames), thumb(reference), 7).flatten(1).mean(-1)
