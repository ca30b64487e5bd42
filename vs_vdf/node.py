"""``protect(clip)``: the perturbation core as a VapourSynth node with lookahead over similar frames.

Frames are grouped into chunks by ``engine.chunks``: fixed windows of ``chunk`` frames, split at cuts,
each part seeded from the seed and its first frame number. The window's frames reach the callback as
extra source clips of one ``std.ModifyFrame``, so the core prefetches them; each window is computed
once (under a per-window lock) and kept in a small LRU cache, so a window recomputed after eviction,
or reached by random access, gives the same pixels as a sequential pass.

Inside, the clip is float RGB; the result goes back to the input's format. Frames whose clean
version has no face are returned untouched (not even converted), as the input frame.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
import vapoursynth as vs

from .engine import FrameStats, Protector, resolve_device
from .engine.chunks import DEFAULT_CHUNK, SCENE_SIMILARITY, run_window
from .engine.targets import parse as parse_targets
from .media import colour
from .media.frames import planes, write_planes

NAME = "vdf.protect"
PYTHON_ONLY = ("interrupt", "workers", "progress", "delivery")  # options of protect() that a .vpy cannot pass through the native namespace


def _error(message: str) -> vs.Error:
    return vs.Error(f"{NAME}: {message}")


class _Colour:
    """How a YUV clip goes to float RGB and back: one matrix and one range for the whole clip (its first
    frame's, with the HD/SD fallback for an unspecified matrix), so every output frame has the same range."""

    def __init__(self, clip: vs.VideoNode):
        props = clip.get_frame(0).props
        self.matrix = colour.matrix_name(colour.yuv_matrix(props.get("_Matrix"), clip.width, clip.height))
        self.range = colour.range_name(colour.frame_is_full_range(props))

    def to_rgbs(self, clip: vs.VideoNode) -> vs.VideoNode:
        return clip.resize.Bicubic(format=vs.RGBS, matrix_in_s=self.matrix, range_in_s=self.range)

    def from_rgbs(self, rgbs: vs.VideoNode, like: vs.VideoNode) -> vs.VideoNode:
        return rgbs.resize.Bicubic(format=like.format.id, matrix_s=self.matrix, range_s=self.range)


def _to_rgbs(clip: vs.VideoNode) -> tuple[vs.VideoNode, _Colour | None]:
    """Float RGB for the core, and the YUV conversion used (None for RGB input)."""
    family = clip.format.color_family
    if family == vs.RGB:
        return clip.resize.Point(format=vs.RGBS), None
    if family != vs.YUV:
        raise _error(f"needs a colour clip (YUV or RGB), got {clip.format.name}")
    conversion = _Colour(clip)
    return conversion.to_rgbs(clip), conversion


def _from_rgbs(rgbs: vs.VideoNode, like: vs.VideoNode, conversion: _Colour | None) -> vs.VideoNode:
    if conversion is not None:
        return conversion.from_rgbs(rgbs, like)
    dither = "none" if like.format.sample_type == vs.FLOAT else "error_diffusion"
    return rgbs.resize.Point(format=like.format.id, dither_type=dither)


def _validate(clip) -> None:
    if not isinstance(clip, vs.VideoNode):
        raise _error("clip must be a video clip")
    if clip.format is None or clip.format.id == vs.NONE:
        raise _error("the clip's format varies between frames; convert it to one constant format first")
    if clip.width == 0 or clip.height == 0:
        raise _error("the clip's frame size varies between frames; resize it to one constant size first")
    if clip.num_frames == 0:
        raise _error("the clip has no frames")
    if clip.format.sample_type == vs.INTEGER and clip.format.bits_per_sample > 16:
        raise _error(f"{clip.format.name}: integer formats above 16 bits are not supported")
    if clip.width < 32 or clip.height < 32:
        raise _error(f"the frames ({clip.width}x{clip.height}) are too small to hold a face")


def stats_to_props(stats: FrameStats) -> dict:
    """One frame's engine record as frame props (``VdfStats`` holds the details as JSON)."""
    return {"VdfFace": int(stats.face), "VdfSteps": stats.steps, "VdfSuccess": int(stats.disrupted),
            "VdfStats": json.dumps({"steps": stats.steps, "inherited": round(stats.inherited, 4),
                                    "success": stats.success,
                                    "measures": {k: round(v, 4) for k, v in stats.measures.items()},
                                    "seconds": round(stats.seconds, 3), "change_scale": round(stats.change_scale, 4),
                                    "floor_steps": stats.floor_steps, "opening": stats.opening,
                                    "between": stats.between, "hiding": stats.hiding})}


def stats_from_props(index: int, props) -> FrameStats:
    """The engine record of output frame ``index`` back from its props."""
    details = json.loads(props["VdfStats"])
    return FrameStats(index, bool(props["VdfFace"]), details["steps"], details["inherited"], details["success"],
                      details["measures"], seconds=details["seconds"], change_scale=details["change_scale"],
                      floor_steps=details["floor_steps"], opening=details["opening"],
                      between=details["between"], hiding=details["hiding"])


MEMORY_SHARE = 0.25  # of the machine's memory, the most the windows protected at once may hold


def engines(device: str, threads: int | None, window_bytes: int = 0) -> tuple[int, int | None]:
    """How many windows this process protects at once, and torch's CPU threads for each. On the CPU, one
    thread per window and as many windows as cores (``threads`` per window: cores // threads windows): the
    small ops of a step gained only 1.16-1.2x from a second thread (2 cores, franck and Wolfgang), while two
    one-thread windows side by side protected 48 frames 1.3-1.5x (franck) and 1.1-1.4x (Wolfgang, whose
    first window, with the opening frame, is the longer) faster than one window on both cores. On a GPU,
    one window at a time with torch's default. Each window held (``window_bytes``, its float RGB frames, held
    as source and as result) counts against MEMORY_SHARE of the machine's memory, so a many-core machine
    with large frames runs fewer at once (a 24-frame 1080p window is 0.6 GB)."""
    if resolve_device(device).type != "cpu":
        return 1, threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_window = threads or 1
    count = max(1, cores // per_window)
    if window_bytes:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        count = max(1, min(count, int(MEMORY_SHARE * memory // (2 * window_bytes))))
    return count, per_window


def window_bytes(clip: vs.VideoNode, chunk: int) -> int:
    """What one window of ``clip`` holds as the engine's float RGB frames."""
    return chunk * clip.width * clip.height * 3 * 4


@cache
def _engine_threads(count: int) -> ThreadPoolExecutor:
    """The threads that do this process's engine work: the models are made there and every window is
    protected there, whichever VapourSynth thread asks. OpenMP gives each thread that starts parallel work a
    team of its own; with more of them than CPUs, libgomp stops spinning between parallel regions and every
    small op waits for its helpers to wake (measured on 2 cores: 24 franck frames took 1.4x as long, and
    `vdf protect` twice as long per frame, when a second thread did the work after the main thread had made
    the models). So the engine threads are made once per process, and their torch threads times their
    number stay within the cores (``engines``)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="vdf-engine")


def _make_protector(threads: int | None, **options) -> Protector:
    if threads is not None:  # before any model is made: some kernels keep the count they were made with
        import torch

        torch.set_num_threads(threads)
    return Protector(threads=threads, **options)


class _Engines:
    """``submit(first_frame, source)`` for the node, on this process's engine threads: each makes a
    ``Protector`` of its own with the node's options the first time it takes a window."""

    def __init__(self, count: int, threads: int | None, options: dict, seed: int, similarity: float,
                 progress: Callable[[int], None] | None):
        self.size, self.threads, self.options = count, threads, options
        self.seed, self.similarity, self.progress = seed, similarity, progress
        self.executor = _engine_threads(count)
        self.local = threading.local()  # each engine thread's Protector
        self.executor.submit(self._protector).result()  # bad options fail here, when the node is made

    def _protector(self) -> Protector:
        if not hasattr(self.local, "protector"):
            self.local.protector = _make_protector(self.threads, **self.options)
        return self.local.protector

    def submit(self, first_frame: int, source: np.ndarray):
        """Queue a window; returns a function that waits for its ``WindowResult``."""
        return self.executor.submit(self._run, first_frame, source).result

    def _run(self, first_frame: int, source: np.ndarray):
        return run_window(self._protector(), source, first_frame, self.seed, self.similarity, self.progress)


class _Windows:
    """Protects whole windows on demand, once each, and keeps the last few.

    ``submit(first_frame, source)`` starts a window (the engine in this process, or a pool of workers) and
    returns a function that waits for its ``WindowResult``. VapourSynth runs the callback of one
    ModifyFrame at a time, so with ``lookahead`` > 0 the next windows are submitted while this one is
    awaited: that is how several workers compute at once.
    """

    def __init__(self, submit, chunk: int, keep: int, lookahead: int = 0):
        self.submit, self.chunk, self.keep, self.lookahead = submit, chunk, keep, lookahead
        self.finished: OrderedDict[int, list[tuple[np.ndarray, dict]]] = OrderedDict()
        self.started: dict[int, object] = {}  # window -> function waiting for its result
        self.locks: dict[int, threading.Lock] = {}
        self.guard = threading.Lock()

    def frame(self, window: int, offset: int, frames_of) -> tuple[np.ndarray, dict]:
        """``frames_of(i)``: the frames of window ``window + i`` (i <= lookahead; empty past the end)."""
        with self.guard:
            lock = self.locks.setdefault(window, threading.Lock())
        with lock:
            with self.guard:
                if window in self.finished:
                    self.finished.move_to_end(window)
                    return self.finished[window][offset]
            result = self._compute(window, frames_of)
            with self.guard:
                self.finished[window] = result
                while len(self.finished) > self.keep:
                    evicted, _ = self.finished.popitem(last=False)
                    self.locks.pop(evicted, None)
            return result[offset]

    def _start(self, window: int, frames: list[vs.VideoFrame]):
        return self.submit(window * self.chunk, np.stack([np.stack(planes(f)) for f in frames]))

    def _compute(self, window: int, frames_of) -> list[tuple[np.ndarray, dict]]:
        with self.guard:
            wait = self.started.pop(window, None)
        if wait is None:
            wait = self._start(window, frames_of(0))
        for ahead in range(1, self.lookahead + 1):
            frames = frames_of(ahead)
            with self.guard:
                due = frames and window + ahead not in self.started and window + ahead not in self.finished
            if due:
                handle = self._start(window + ahead, frames)
                with self.guard:
                    self.started[window + ahead] = handle
        done = wait()
        share = done.seconds / len(done.stats)  # each frame's share of computing its window
        return [(done.frames[i], {"VdfChunk": start, **stats_to_props(s), "VdfSeconds": share,
                                  "VdfWorker": done.worker})
                for i, (s, start) in enumerate(zip(done.stats, done.chunk_starts))]


def protect(clip: vs.VideoNode, *, preset: str = "balanced", targets: tuple[str, ...] | str | None = None,
            epsilon: float | None = None, device: str = "auto", seed: int = 0, method: str = "vdf",
            chunk: int = DEFAULT_CHUNK, cache_chunks: int = 3, checkpoint: str | Path | None = None,
            similarity: float = SCENE_SIMILARITY, max_steps: int | None = None, threads: int | None = None,
            interrupt: threading.Event | None = None, workers=None,
            progress: Callable[[int], None] | None = None, delivery: dict | None = None) -> vs.VideoNode:
    """Protect ``clip`` against face acquisition; same format, size, length and frame rate.

    Frame props on the output: ``VdfChunk`` (first frame of the frame's chunk), ``VdfFace`` (the clean
    frame had a face), ``VdfSteps``, ``VdfSuccess`` (every attacked model disrupted on the engine's
    check), ``VdfSeconds`` (the frame's share of its window's compute time), ``VdfWorker`` (host:pid that
    computed it) and ``VdfStats`` (JSON with the per-target details). ``interrupt``, an event set from another thread, stops the work within one
    optimisation step (the frames being computed then raise ``vs.Error``). ``threads`` fixes torch's CPU
    threads per window, and so how many windows are protected at once (``engines``; output is identical for
    equal ``threads``; None: one per window on the CPU, torch's default on a GPU). ``workers``, a
    ``vs_vdf.cluster.WorkerPool`` made with the same options, computes the windows instead of this process.
    ``progress(n)`` is called from the engine as each frame is protected in this process (not with ``workers``).
    ``delivery`` (codec, crf or bitrate, preset of the encode that follows, as ``vs_vdf.engine.codec.Delivery``
    takes them) lets each chunk be encoded that way so the preset's PSNR floor holds on the encoded frames;
    without it the engine leaves a fixed share of the floor's error budget to the encode.
    """
    _validate(clip)
    if not 1 <= chunk <= 256:
        raise _error(f"chunk must be between 1 and 256 frames, got {chunk}")
    if cache_chunks < 1:
        raise _error("cache_chunks must be at least 1")
    try:
        targets = parse_targets(targets)
    except ValueError as exc:
        raise _error(str(exc)) from exc
    if workers is None:
        try:
            at_once, threads = engines(device, threads, window_bytes(clip, chunk))
            workers = _Engines(at_once, threads, dict(preset=preset, targets=targets, epsilon=epsilon, device=device,
                                                    seed=seed, method=method, checkpoint=checkpoint,
                                                    max_steps=max_steps, interrupt=interrupt, delivery=delivery),
                               seed, similarity, progress)
        except (ValueError, OSError) as exc:
            raise _error(str(exc)) from exc
    submit, lookahead = workers.submit, workers.size - 1
    rgbs, conversion = _to_rgbs(clip)
    count = clip.num_frames
    # window_clips[j][n] is frame (n // chunk) * chunk + j: the window of n and the next ``lookahead`` windows,
    # prefetched by the core.
    window_clips = []
    for j in range(min(chunk * (1 + lookahead), count)):
        picked = rgbs[j::chunk]
        repeated = vs.core.std.Interleave([picked] * chunk) if chunk > 1 else picked
        if repeated.num_frames < count:
            repeated = repeated + repeated[-1] * (count - repeated.num_frames)
        window_clips.append(repeated[:count])
    windows = _Windows(submit, chunk, cache_chunks, lookahead)

    def run(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        window, offset = divmod(n, chunk)

        def frames_of(ahead: int) -> list[vs.VideoFrame]:
            first = (window + ahead) * chunk
            return f[1 + ahead * chunk:1 + ahead * chunk + max(0, min(chunk, count - first))]

        try:
            pixels, props = windows.frame(window, offset, frames_of)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the script as vs.Error
            raise _error(f"frame {n}: {exc.__class__.__name__}: {exc}") from exc
        out = f[0].copy()
        write_planes(out, pixels)
        out.props.update(props)
        return out

    protected = rgbs.std.ModifyFrame([rgbs, *window_clips], run)
    back = _from_rgbs(protected, clip, conversion)

    def keep_faceless(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        original, converted = f
        if converted.props["VdfFace"]:
            return converted
        out = original.copy()
        out.props.update({k: v for k, v in converted.props.items() if k.startswith("Vdf")})
        return out

    return clip.std.ModifyFrame([clip, back], keep_faceless)
