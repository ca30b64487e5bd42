"""How a video is cut into the chunks the engine protects, how each chunk is seeded, and how per-frame
records are summed up. The VapourSynth node, the command line and the benchmarks all use this, so a
chunk protected anywhere gives the same pixels.

A window is ``chunk`` consecutive frames starting at a multiple of ``chunk``; it is split where two
consecutive frames stop being similar (a cut), and each part is seeded from the seed and the number of
its first frame, so a part recomputed later, or reached by random access, is identical.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .metrics import grey_ssim
from .presets import REQUIRED, opening_wait, waited_for
from .protector import FrameStats, Protector, with_change

DEFAULT_CHUNK = 24  # frames per lookahead window
SCENE_SIMILARITY = 0.5  # grey-thumbnail SSIM below which two consecutive frames belong to different chunks


def chunk_seed(seed: int, first_frame: int) -> int:
    """The optimisation seed of the chunk that starts at ``first_frame``."""
    return (seed * 1_000_003 + first_frame) % 2 ** 31


def split_at_cuts(frames: torch.Tensor, similarity: float = SCENE_SIMILARITY) -> list[tuple[int, int]]:
    """(begin, end) of the runs of similar consecutive frames."""
    if frames.shape[0] < 2:
        return [(0, frames.shape[0])]
    similar = grey_ssim(frames[1:], frames[:-1]) >= similarity
    starts = [0] + [i + 1 for i, same in enumerate(similar.tolist()) if not same]
    return list(zip(starts, starts[1:] + [frames.shape[0]]))


def protect_window(protector: Protector, frames: torch.Tensor, first_frame: int, seed: int,
                   similarity: float = SCENE_SIMILARITY, progress: Callable[[int], None] | None = None,
                   source: torch.Tensor | None = None) -> tuple[torch.Tensor, list[FrameStats], list[int]]:
    """Protect one window (T x 3 x H x W in [0, 1]; ``source``: the same frames before clipping, as
    ``Protector.protect`` takes them) starting at frame ``first_frame`` of the video: split at cuts, each
    part seeded by its first frame's number. Returns the frames, their records and, per frame, the video
    frame number its chunk starts at. ``progress(n)`` is called as frames are done."""
    outputs, stats, chunk_starts = [], [], []
    for begin, end in split_at_cuts(frames, similarity):
        protected, part = protector.protect(frames[begin:end], seed=chunk_seed(seed, first_frame + begin),
                                            progress=progress, opens_video=first_frame + begin == 0,
                                            source=None if source is None else source[begin:end])
        outputs.append(protected)
        stats += part
        chunk_starts += [first_frame + begin] * (end - begin)
    return torch.cat(outputs), stats, chunk_starts


@dataclass
class WindowResult:
    """One protected window as the node needs it; plain data, so it can travel between processes."""

    frames: np.ndarray  # T x 3 x H x W float32: the source frames with the change applied
    stats: list[FrameStats]
    chunk_starts: list[int]  # per frame, the video frame its chunk starts at
    seconds: float
    worker: str  # host:pid that computed it


def run_window(protector: Protector, source: np.ndarray, first_frame: int, seed: int,
               similarity: float = SCENE_SIMILARITY, progress: Callable[[int], None] | None = None) -> WindowResult:
    """Protect a window of float RGB frames (T x 3 x H x W, values may stray outside [0, 1] after a colour
    conversion). Only the change is applied to the source, so pixels the perturbation left alone keep their
    exact input value."""
    started = time.perf_counter()
    original = torch.from_numpy(source)
    clean = original.clamp(0, 1)
    protected, stats, chunk_starts = protect_window(protector, clean, first_frame, seed, similarity, progress,
                                                    source=original)
    frames = with_change(original, clean, protected).numpy()
    return WindowResult(frames, stats, chunk_starts, time.perf_counter() - started, f"{socket.gethostname()}:{os.getpid()}")


def protect_video(protector: Protector, frames: torch.Tensor, seed: int = 0, chunk: int = DEFAULT_CHUNK,
                  similarity: float = SCENE_SIMILARITY) -> tuple[torch.Tensor, list[FrameStats]]:
    """Protect frames held in memory (a short clip, a benchmark) exactly as the node would, window by window."""
    outputs, stats = [], []
    for start in range(0, frames.shape[0], chunk):
        protected, part, _ = protect_window(protector, frames[start:start + chunk], start, seed, similarity)
        outputs.append(protected)
        stats += part
    return torch.cat(outputs), stats


def summarise(stats: Sequence[FrameStats], waits: tuple[str, ...] = REQUIRED) -> dict:
    """What the engine's own check found over many frames: counts and fractions of the face frames (``waits``:
    the preset's, for what the frames waited for)."""
    faces = [s for s in stats if s.face]
    count = max(len(faces), 1)
    targets = sorted({name for s in faces for name in s.success})
    disrupted = {name: sum(s.success.get(name, False) for s in faces) for name in targets}
    required = list(waited_for(tuple(targets), waits))
    opening = next((s for s in faces if s.opening), None)
    detector = opening_wait(tuple(targets))[0]
    return {"frames": len(stats), "frames_with_face": len(faces),
            "steps_per_face_frame": sum(s.steps for s in faces) / count,
            "all_targets_disrupted_fraction": sum(s.disrupted for s in faces) / count,
            "required_targets": required,
            # each frame's own: a face-hiding run's frames waited for the detector instead
            "required_disrupted_fraction": sum(all(s.success.get(name, False)
                                                   for name in ((detector,) if s.hiding else required))
                                               for s in faces) / count,
            "disrupted_count": disrupted,
            "disrupted_fraction": {name: value / count for name, value in disrupted.items()},
            "optimised_again_for_psnr_floor": sum(s.floor_steps > 0 for s in faces),
            "scaled_for_psnr_floor": sum(s.change_scale < 1 for s in faces),
            "least_change_scale": min((s.change_scale for s in faces), default=1.0),
            # frames between two fully checked ones, checked (and counted above) on the frames as they are
            "checked_as_they_are": sum(s.between for s in faces),
            # frames of face-hiding runs (they waited for the detector, not the landmarks)
            "hiding_frames": sum(s.hiding for s in faces),
            # the video's first frame, where it waited for the detector (its finding as delivered)
            "opening_frame": None if opening is None or detector not in opening.success else
            {"frame": opening.index, "detector": detector, "face_lost": opening.success[detector],
             "score": opening.measures[detector]}}
