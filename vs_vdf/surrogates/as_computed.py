"""Forward values exactly as the attackers' libraries compute them, with the gradient of the float
operation they stand for.

Their tools resample 8-bit images with OpenCV and Pillow, whose fixed-point arithmetic differs from
float interpolation by a grey level here and there: enough to move a heatmap's argmax or a label at a
boundary. ``matched`` keeps the library's values in the forward pass and the float path's gradient
in the backward pass (a straight-through estimator), so a measure equals what the attacker's code
computes and the attack still has a gradient.
"""

from __future__ import annotations

import numpy as np
import torch


def image_8bit(image: torch.Tensor) -> np.ndarray:
    """One image (3 x H x W in [0, 1]) as the H x W x 3 uint8 array a decoder hands the attacker's code."""
    return (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def matched(approximation: torch.Tensor, exact: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``exact``'s values with ``approximation``'s gradient (same shape)."""
    exact = torch.as_tensor(exact).to(approximation)
    return approximation + (exact - approximation).detach()
