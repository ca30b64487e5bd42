"""Head pose from FaceMesh landmarks: weighted Procrustes against MediaPipe's canonical face model.

The canonical model file is a small protobuf (GeometryPipelineMetadata): a 468-vertex mesh in cm
(x, y, z, u, v per vertex) and 33 weighted landmark ids used for the fit. It is read with a minimal
wire-format reader, so no generated protobuf code is needed. The fit is a similarity transform
(rotation, uniform scale, translation), solved in closed form with an SVD: differentiable.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _fields(data: bytes):
    """Yield (field number, value) of a protobuf message; length-delimited values stay bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


@dataclass(frozen=True)
class CanonicalFace:
    vertices: torch.Tensor  # 468 x 3, cm, y up, z towards the viewer
    landmark_ids: torch.Tensor  # 33
    landmark_weights: torch.Tensor  # 33

    @classmethod
    def load(cls, path: Path) -> "CanonicalFace":
        floats, ids, weights = [], [], []
        for number, value in _fields(Path(path).read_bytes()):
            if number == 1:  # canonical_mesh
                for inner, item in _fields(value):
                    if inner == 3:  # vertex_buffer, one float per field
                        floats.append(struct.unpack("<f", item)[0])
            elif number == 2:  # procrustes_landmark_basis
                entry = dict(_fields(value))
                ids.append(entry.get(1, 0))
                weights.append(struct.unpack("<f", entry[2])[0] if 2 in entry else 0.0)
        vertices = torch.tensor(floats).reshape(-1, 5)[:, :3]
        if vertices.shape[0] != 468 or not ids:
            raise ValueError(f"{path}: not a canonical face model ({vertices.shape[0]} vertices, {len(ids)} ids)")
        return cls(vertices, torch.tensor(ids), torch.tensor(weights))


def procrustes(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor):
    """Similarity transform with target ~ scale * R @ source + t, for batches (B x P x 3)."""
    w = (weights / weights.sum())[None, :, None]
    mu_s, mu_t = (source * w).sum(1, keepdim=True), (target * w).sum(1, keepdim=True)
    s, t = source - mu_s, target - mu_t
    covariance = (t * w).transpose(1, 2) @ s  # B x 3 x 3
    u, sigma, vh = torch.linalg.svd(covariance)
    d = torch.sign(torch.linalg.det(u @ vh))
    fix = torch.ones_like(sigma)
    fix = torch.cat([fix[:, :2], d[:, None]], 1)
    rotation = u @ torch.diag_embed(fix) @ vh
    scale = (sigma * fix).sum(1) / (s.pow(2).sum(-1) * w[..., 0]).sum(1)
    translation = mu_t[:, 0] - scale[:, None] * (rotation @ mu_s[:, 0, :, None])[..., 0]
    return rotation, scale, translation


def euler_degrees(rotation: torch.Tensor) -> torch.Tensor:
    """(pitch, yaw, roll) in degrees, Z-Y-X order (roll about the view axis applied last)."""
    pitch = torch.atan2(rotation[:, 2, 1], rotation[:, 2, 2])
    yaw = torch.asin((-rotation[:, 2, 0]).clamp(-1 + 1e-6, 1 - 1e-6))
    roll = torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0])
    return torch.stack([pitch, yaw, roll], -1) * (180 / math.pi)


class HeadPose(torch.nn.Module):
    def __init__(self, canonical: CanonicalFace):
        super().__init__()
        self.register_buffer("vertices", canonical.vertices[canonical.landmark_ids])
        self.register_buffer("ids", canonical.landmark_ids)
        self.register_buffer("weights", canonical.landmark_weights)

    def forward(self, landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pose of FaceMesh landmarks (B x 468 x 3, image pixels, y down): rotation (B x 3 x 3),
        angles (B x 3: pitch, yaw, roll in degrees), translation (B x 3, pixels) and scale (pixels per cm)."""
        points = landmarks[:, self.ids]
        points = torch.stack([points[..., 0], -points[..., 1], -points[..., 2]], -1)  # to y up, z to viewer
        source = self.vertices.expand(points.shape[0], -1, -1)
        rotation, scale, translation = procrustes(source, points, self.weights)
        return {"rotation": rotation, "angles": euler_degrees(rotation), "translation": translation, "scale": scale}


def angular_error_degrees(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle of the relative rotation between two batches of rotation matrices.

    atan2 of the rotation's sine (from its antisymmetric part) and cosine (from its trace) stays exact near 0,
    where acos of a cosine rounded to float32 would report a few hundredths of a degree for equal rotations."""
    relative = a.transpose(1, 2) @ b
    cos = (relative.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    skew = relative - relative.transpose(1, 2)
    sin = torch.stack((skew[:, 2, 1], skew[:, 0, 2], skew[:, 1, 0]), -1).norm(dim=-1) / 2
    return torch.rad2deg(torch.atan2(sin, cos))
