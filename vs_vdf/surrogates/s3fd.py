"""S3FD, the face detector of the ``face-alignment`` package that the ER-NeRF family runs first on every
frame: a VGG-16 trunk with six anchor heads (strides 4 to 128, square anchors of four strides).

The weights are the user's own file (``vdf models add s3fd-619a316812.pth``); the module names follow
that file so it loads strictly. Processing is the package's: the full RGB frame in 0-255, flipped to
BGR, minus the mean (104, 117, 123); the face class's softmax per anchor; anchors above 0.05 decoded
with variances (0.1, 0.2), non-maximum suppression at 0.3, faces above 0.5 kept, best first. A frame
where none is kept stops the ER-NeRF preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import nms

BGR_MEAN = (104.0, 117.0, 123.0)
THRESHOLD = 0.5  # faces kept above this score
CANDIDATE = 0.05  # anchors considered at all
NMS_OVERLAP = 0.3
VARIANCES = (0.1, 0.2)
VGG = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))  # per stage: in, out, convs
HEADS = (("conv3_3_norm", 256, 4), ("conv4_3_norm", 512, 2), ("conv5_3_norm", 512, 2), ("fc7", 1024, 2),
         ("conv6_2", 512, 2), ("conv7_2", 256, 2))  # source features, their channels, class outputs
NORMS = {"conv3_3_norm": (256, 10.0), "conv4_3_norm": (512, 8.0), "conv5_3_norm": (512, 5.0)}  # channels, scale


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), scale))

    def forward(self, x):
        return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) * self.weight.view(1, -1, 1, 1)


class S3FDNet(nn.Module):
    """Input N x 3 x H x W mean-subtracted BGR; output per head (face logit margin, box regression)."""

    def __init__(self):
        super().__init__()
        for stage, (inputs, outputs, count) in enumerate(VGG, 1):
            for index in range(1, count + 1):
                self.add_module(f"conv{stage}_{index}", nn.Conv2d(inputs if index == 1 else outputs, outputs, 3, 1, 1))
        self.fc6 = nn.Conv2d(512, 1024, 3, 1, padding=3)
        self.fc7 = nn.Conv2d(1024, 1024, 1)
        self.conv6_1, self.conv6_2 = nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, 2, 1)
        self.conv7_1, self.conv7_2 = nn.Conv2d(512, 128, 1), nn.Conv2d(128, 256, 3, 2, 1)
        for name, (channels, scale) in NORMS.items():
            self.add_module(name, L2Norm(channels, scale))
        for source, channels, classes in HEADS:
            self.add_module(f"{source}_mbox_conf", nn.Conv2d(channels, classes, 3, 1, 1))
            self.add_module(f"{source}_mbox_loc", nn.Conv2d(channels, 4, 3, 1, 1))

    def _conv(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(getattr(self, name)(x))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = {}
        for stage, (_, _, count) in enumerate(VGG, 1):
            for index in range(1, count + 1):
                x = self._conv(f"conv{stage}_{index}", x)
            if stage >= 3:
                features[f"conv{stage}_3_norm"] = getattr(self, f"conv{stage}_3_norm")(x)
            x = F.max_pool2d(x, 2, 2)
        features["fc7"] = x = self._conv("fc7", self._conv("fc6", x))
        features["conv6_2"] = x = self._conv("conv6_2", self._conv("conv6_1", x))
        features["conv7_2"] = self._conv("conv7_2", self._conv("conv7_1", x))
        out = []
        for source, _, classes in HEADS:
            logits = getattr(self, f"{source}_mbox_conf")(features[source])
            if classes == 4:  # the finest head keeps three background outputs: their maximum is the background
                logits = torch.stack([logits[:, :3].amax(1), logits[:, 3]], 1)
            out.append((logits[:, 1] - logits[:, 0], getattr(self, f"{source}_mbox_loc")(features[source])))
        return out


@dataclass
class Faces:
    """One frame's faces, best first: boxes (F x 4, xyxy pixels, float64) and scores (F)."""

    boxes: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return self.boxes.shape[0]


class S3FD(nn.Module):
    threshold = THRESHOLD

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        self.name = "s3fd"
        self.net = S3FDNet()
        self.net.load_state_dict(state)
        self.register_buffer("mean", torch.tensor(BGR_MEAN).view(1, 3, 1, 1))

    def raw(self, frames: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per head, the face logit margin (N x h x w: softmax's face score is its sigmoid) and the box
        regression (N x 4 x h x w); differentiable in ``frames`` (N x 3 x H x W RGB in [0, 1])."""
        return self.net(frames.flip(1) * 255 - self.mean)

    def scores(self, frames: torch.Tensor) -> torch.Tensor:
        """The best face score per frame (N): a face is kept exactly when it is above the threshold,
        since the best-scoring anchor always survives suppression."""
        return torch.stack([margin.flatten(1).amax(1) for margin, _ in self.raw(frames)], 1).amax(1).sigmoid()

    @torch.no_grad()
    def detect(self, frames: torch.Tensor) -> list[Faces]:
        heads = self.raw(frames)
        return [self._faces([(m[i], r[i]) for m, r in heads]) for i in range(frames.shape[0])]

    @staticmethod
    def _faces(heads: list[tuple[torch.Tensor, torch.Tensor]]) -> Faces:
        boxes, scores = [], []
        for level, (margin, regression) in enumerate(heads):
            stride = 2 ** (level + 2)
            score = margin.double().sigmoid()
            rows, cols = (score > CANDIDATE).nonzero(as_tuple=True)
            loc = regression[:, rows, cols].double().T
            centre = torch.stack([cols, rows], 1).double() * stride + stride / 2
            size = 4.0 * stride * torch.exp(loc[:, 2:] * VARIANCES[1])
            top_left = centre + loc[:, :2] * VARIANCES[0] * 4.0 * stride - size / 2
            boxes.append(torch.cat([top_left, top_left + size], 1))
            scores.append(score[rows, cols])
        boxes, scores = torch.cat(boxes), torch.cat(scores)
        # The package measures overlap on inclusive pixel boxes (+1 on each side length).
        keep = nms(boxes + boxes.new_tensor([0, 0, 1, 1]), scores, NMS_OVERLAP)
        keep = keep[scores[keep] > THRESHOLD]
        return Faces(boxes[keep], scores[keep].float())  # boxes in float64, as the package decodes them
