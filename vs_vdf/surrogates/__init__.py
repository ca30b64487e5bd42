"""Differentiable PyTorch versions of the face models attackers use to acquire 3D information.

``load(name, device)`` returns a frozen module; models that come from a ``.tflite`` file (or TF.js
weights) expose the bare network as ``.net`` with the source model's exact inputs and outputs, and
the module itself adds the processing around it (crops, decoding, coordinates in image pixels).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import weights
from . import user_files

NAMES = (
    "blazeface_short", "blazeface_full", "blazeface_back", "facemesh", "facemesh_v1", "iris",
    "selfie_segmentation", "selfie_segmentation_landscape", "faceapi68", "faceapi68_tiny", "mtcnn",
    "headpose", "bisenet", "s3fd", "fan2d", "pose68", "tinyface",
)


class Network(nn.Module):
    """A surrogate used only as its bare network (iris): ``.net`` and a pass-through forward."""

    def __init__(self, name: str, net: nn.Module):
        super().__init__()
        self.name, self.net = name, net

    def forward(self, x):
        return self.net(x)


def _build(name: str, checkpoint: Path | str | None) -> nn.Module:
    if name.startswith("blazeface_"):
        from .blazeface import BlazeFace
        return BlazeFace(name, weights.path(name))
    if name in ("facemesh", "facemesh_v1"):
        from .facemesh import FaceMesh
        return FaceMesh(name, weights.path(name))
    if name == "iris":
        from .tflite_torch import TFLiteModule
        return Network(name, TFLiteModule(weights.path(name)))
    if name.startswith("selfie_segmentation"):
        from .selfie import SelfieSegmentation
        return SelfieSegmentation(name, weights.path(name))
    if name in ("faceapi68", "faceapi68_tiny"):
        from .faceapi import FaceAPI68
        weights.path(f"{name}_weights")  # the shard beside the manifest must be present and verified too
        return FaceAPI68(name, weights.path(name), tiny=name.endswith("tiny"))
    if name == "mtcnn":
        from .mtcnn import MTCNN
        return MTCNN(*(weights.path(f"mtcnn_{stage}") for stage in ("pnet", "rnet", "onet")))
    if name == "headpose":
        from .headpose import CanonicalFace, HeadPose
        return HeadPose(CanonicalFace.load(weights.path("canonical_face")))
    if name == "bisenet":
        from .bisenet import FaceParser
        return FaceParser(checkpoint)
    if name == "tinyface":
        from .tinyface import TinyFaceDetector
        weights.path("tinyface_weights")  # the shard beside the manifest must be present and verified too
        return TinyFaceDetector(weights.path("tinyface"))
    if name == "s3fd":
        from .s3fd import S3FD
        return S3FD(user_files.load_state("s3fd"))
    if name == "fan2d":
        from .fan import FAN2D
        return FAN2D(user_files.load_state("fan2d"))
    if name == "pose68":
        from .headpose import CanonicalFace
        from .pose68 import Pose68
        return Pose68(CanonicalFace.load(weights.path("canonical_face")))
    raise ValueError(f"unknown surrogate {name!r}; known: {', '.join(NAMES)}")


def load(name: str, device: str | torch.device = "cpu", *, checkpoint: Path | str | None = None) -> nn.Module:
    """A frozen surrogate on ``device``. ``s3fd``, ``fan2d`` and ``bisenet`` read the files the user added
    (``user_files``); ``checkpoint`` overrides BiSeNet's."""
    module = _build(name, checkpoint).to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
