"""How the face moved between two consecutive frames, so a frame can start from its predecessor's change
carried with the face rather than left where it was.

A change tuned on one frame is tuned to where the face's pixels were: on Wolfgang's frames 40-43 (a head
moving 1-8 working pixels a frame inside a canvas pinned to the frame's edge) the predecessor's parameters,
taken as they are, kept 22-53% of FaceMesh's landmark shift on the next frame; its change moved along the
dense optical flow between the two clean frames kept 53-107%. The flow is OpenCV's DIS (a few hundredths of
a second for a 640 x 360 frame, next to seconds of optimisation per frame).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def _grey(frame: torch.Tensor) -> np.ndarray:
    """An 8-bit luma image of a 3 x H x W RGB frame in [0, 1]."""
    rgb = (frame.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def flow(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """H x W x 2 float32 (x, y) offsets, on the CPU: pixel p of ``current`` shows what ``previous`` shows at
    p + offset (both 3 x H x W in [0, 1])."""
    estimator = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return torch.from_numpy(estimator.calc(_grey(current), _grey(previous), None))
