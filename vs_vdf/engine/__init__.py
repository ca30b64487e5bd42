"""The perturbation core: pure torch, no VapourSynth.

``Protector(preset, targets, epsilon, device, seed, method).protect(frames) -> (protected, stats)``
protects one chunk of consecutive frames; ``metrics`` holds the shared definitions.
"""

from .targets import DEFAULT_TARGETS, TARGETS
from .presets import PRESETS
from .protector import METHODS, FrameStats, Interrupted, Protector, resolve_device

__all__ = ["DEFAULT_TARGETS", "METHODS", "PRESETS", "TARGETS", "FrameStats", "Interrupted", "Protector", "resolve_device"]
