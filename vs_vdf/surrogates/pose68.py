"""Head pose from 68 iBUG landmarks (2D-FAN-4's points), as a 3DMM tracker fitted to them would see it.

The ER-NeRF family fits a morphable model's rotation to the 68 points alone. Here the rigid points of
that layout (jaw ends, chin, nose, eye and mouth corners) are matched to the same places on MediaPipe's
canonical face, and a scaled-orthographic camera is fitted in closed form (least squares for the 2 x 3
projection, its rows made orthonormal), so the rotation is differentiable in the points.
"""

from __future__ import annotations

import torch

from .headpose import CanonicalFace, euler_degrees

# iBUG-68 index -> canonical-face vertex at the same place on the face.
IBUG_TO_CANONICAL = {0: 127, 8: 152, 16: 356, 27: 168, 30: 4, 33: 2, 36: 33, 39: 133, 42: 362, 45: 263, 48: 61,
                     54: 291}


class Pose68(torch.nn.Module):
    def __init__(self, canonical: CanonicalFace):
        super().__init__()
        self.register_buffer("ids", torch.tensor(list(IBUG_TO_CANONICAL)))
        model = canonical.vertices[list(IBUG_TO_CANONICAL.values())]
        self.register_buffer("model", model - model.mean(0))  # K x 3, cm, y up, z toward the viewer
        self.register_buffer("solve", torch.linalg.pinv(self.model))  # 3 x K: least squares against the model

    def forward(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pose of 68-point landmarks (B x 68 x 2, image pixels, y down): rotation (B x 3 x 3) and angles
        (B x 3: pitch, yaw, roll in degrees)."""
        points = landmarks[:, self.ids, :2]
        points = torch.stack([points[..., 0], -points[..., 1]], -1)  # y up, like the model
        projection = (self.solve @ (points - points.mean(1, keepdim=True))).transpose(1, 2)  # B x 2 x 3
        first = projection[:, 0] / projection[:, 0].norm(dim=-1, keepdim=True)
        second = projection[:, 1] - (projection[:, 1] * first).sum(-1, keepdim=True) * first
        second = second / second.norm(dim=-1, keepdim=True)
        rotation = torch.stack([first, second, torch.linalg.cross(first, second)], 1)
        return {"rotation": rotation, "angles": euler_degrees(rotation)}
