"""Named strength settings. ``balanced`` is the default; ``strong`` uses the reference's epsilon."""

from __future__ import annotations

from dataclasses import dataclass, field

from .transforms import ROBUSTNESS, Family, Transform

# Targets whose disruption ends a frame's optimisation: the landmarks and the head pose they give
# are what set the camera poses of a 3D talking-face model, and the attackers' own models (present
# when the user has added their files) are exactly what the cloning tool will run. The other targets
# are attacked on every step taken and reported, but a frame does not wait for them.
REQUIRED = ("facemesh", "headpose", "s3fd", "fan2d", "fan2d_pose", "bisenet")


@dataclass(frozen=True)
class Preset:
    name: str
    epsilon: float  # L-infinity bound, in [0, 1] units
    max_steps: int
    learning_rate: float = 0.05
    margin: float = 1.2  # a frame counts as done when the measures pass the thresholds by this factor
    check: tuple[Transform, ...] = (Transform("identity"), Transform("h264", 23))
    check_every: int = 2
    fidelity_weight: float = 1.0  # weight of (1 - SSIM) against the attack losses
    ssim_floor: float = 0.96  # below this SSIM to the clean frame, a steep penalty takes over
    # The fidelity promise: every delivered 8-bit frame keeps at least this PSNR (dB) to the input, whatever
    # the face size (the budget grows with the face). The loop is steered toward it; the change is scaled
    # down on delivery where it still falls short. None: no floor.
    psnr_floor: float | None = 36.0
    inherit_noise: float = 0.01
    weights: dict[str, float] = field(default_factory=lambda: {
        "blazeface_short": 1.0, "blazeface_full": 0.5, "mtcnn": 0.5, "facemesh": 2.0, "headpose": 2.0,
        "faceapi68": 1.0, "selfie_segmentation": 0.5, "bisenet": 1.0,
        "s3fd": 1.0, "fan2d": 2.0, "fan2d_pose": 2.0})
    robustness: tuple[Family, ...] = ROBUSTNESS


PRESETS = {
    "light": Preset("light", epsilon=6 / 255, max_steps=30, margin=1.15, ssim_floor=0.975, psnr_floor=40.0),
    "balanced": Preset("balanced", epsilon=10 / 255, max_steps=60),
    "strong": Preset("strong", epsilon=0.05, max_steps=150, margin=1.5, ssim_floor=0.92, psnr_floor=None, check=(
        Transform("identity"), Transform("h264", 28), Transform("scale", 0.5))),
}


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
