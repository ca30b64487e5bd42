"""The VapourSynth node: format round trip, lookahead chunks, random-access and thread determinism, errors."""

from __future__ import annotations

import os
import random
import threading

import numpy as np
import pytest
import vapoursynth as vs

import vs_vdf
from vs_vdf.engine import Protector

FAST = dict(preset="light", targets="facemesh,headpose", max_steps=2, chunk=3, device="cpu")


def source(path) -> vs.VideoNode:
    return vs.core.bs.VideoSource(source=str(path), cachemode=0)


def planes(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.array(frame[p]) for p in range(frame.format.num_planes)]


def read(clip: vs.VideoNode, order) -> dict[int, list[np.ndarray]]:
    return {n: planes(clip.get_frame(n)) for n in order}


@pytest.fixture
def threads():
    before = vs.core.num_threads
    yield
    vs.core.num_threads = before


@pytest.fixture(scope="module")
def franck(clips) -> vs.VideoNode:
    return source(clips["franck"])


@pytest.fixture(scope="module")
def sequential(franck) -> dict[int, list[np.ndarray]]:
    vs.core.num_threads = 1
    return read(vs_vdf.protect(franck, **FAST), range(franck.num_frames))


def test_output_has_the_input_format_size_length_and_rate(franck, sequential):
    out = vs_vdf.protect(franck, **FAST)
    assert (out.format.id, out.width, out.height, out.num_frames, out.fps) == \
        (franck.format.id, franck.width, franck.height, franck.num_frames, franck.fps)
    frame = out.get_frame(4)
    assert frame.props["VdfChunk"] == 3 and frame.props["VdfFace"] == 1 and "VdfStats" in frame.props
    changed = [not all(np.array_equal(a, b) for a, b in zip(sequential[n], planes(franck.get_frame(n))))
               for n in range(franck.num_frames)]
    assert all(changed)


def test_random_access_at_two_threads_matches_the_sequential_pass(franck, sequential, threads):
    vs.core.num_threads = 2
    order = list(range(franck.num_frames))
    random.Random(3).shuffle(order)
    shuffled = read(vs_vdf.protect(franck, **FAST, cache_chunks=1), order)
    for n in order:
        assert all(np.array_equal(a, b) for a, b in zip(shuffled[n], sequential[n])), f"frame {n} differs"


def test_each_chunk_is_computed_once(franck, monkeypatch, threads):
    calls = []
    original = Protector.protect

    def counting(self, frames, seed=None, **options):
        calls.append(frames.shape[0])
        return original(self, frames, seed, **options)

    monkeypatch.setattr(Protector, "protect", counting)
    vs.core.num_threads = 2
    out = vs_vdf.protect(franck, **FAST)
    for n in (5, 0, 1, 4, 2, 3, 0, 5):
        out.get_frame(n)
    assert calls == [3, 3]


def test_windows_are_protected_side_by_side_on_engine_threads_each_with_its_own_models(franck, monkeypatch,
                                                                                        threads):
    """Never in a VapourSynth thread (torch's OpenMP teams in many threads slow every op down): on the engine
    threads, as many as the cores allow one torch thread each, each protecting with the models it made."""
    made, protected = {}, []
    init, protect = Protector.__init__, Protector.protect

    def making(self, *args, **kwargs):
        made[id(self)] = threading.get_ident()
        init(self, *args, **kwargs)

    def protecting(self, *args, **kwargs):
        protected.append((threading.get_ident(), made[id(self)]))
        return protect(self, *args, **kwargs)

    monkeypatch.setattr(Protector, "__init__", making)
    monkeypatch.setattr(Protector, "protect", protecting)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    vs.core.num_threads = 2
    out = vs_vdf.protect(franck, **FAST)
    for n in (5, 0):
        out.get_frame(n)
    assert vs_vdf.node.engines("cpu", None) == (2, 1)
    assert vs_vdf.node.engines("cpu", 2) == (1, 2) and vs_vdf.node.engines("cpu", 3) == (1, 3)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert vs_vdf.node.engines("cpu", None, window_bytes=int(memory * 0.1)) == (1, 1)  # two would not fit
    assert len(protected) == 2 and all(thread == maker for thread, maker in protected)
    assert threading.get_ident() not in made.values() and len(set(made.values())) == len(made) <= 2


def test_two_windows_side_by_side_give_the_bytes_of_one_at_a_time(franck, sequential, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert vs_vdf.node.engines("cpu", None) == (1, 1)
    alone = read(vs_vdf.protect(franck, **FAST), range(franck.num_frames))
    for n, frame in alone.items():
        assert all(np.array_equal(a, b) for a, b in zip(frame, sequential[n])), f"frame {n} differs"


def test_progress_is_reported_per_frame_inside_a_chunk(franck):
    done = []
    out = vs_vdf.protect(franck, **FAST, progress=done.append)
    out.get_frame(0)
    out.get_frame(5)
    assert done == [1] * 6  # each chunk's three frames, one by one


def test_rgb_input_comes_back_as_rgb(franck):
    rgb = franck.resize.Bicubic(format=vs.RGB24, matrix_in_s="170m")[:3]
    out = vs_vdf.protect(rgb, **FAST)
    assert out.format.id == vs.RGB24
    assert not np.array_equal(planes(out.get_frame(1))[0], planes(rgb.get_frame(1))[0])


def test_frames_without_a_face_come_back_untouched(clips):
    clip = source(clips["no_face"])
    out = vs_vdf.protect(clip, **FAST)
    for n in range(clip.num_frames):
        frame = out.get_frame(n)
        assert frame.props["VdfFace"] == 0
        assert all(np.array_equal(a, b) for a, b in zip(planes(frame), planes(clip.get_frame(n))))


@pytest.mark.parametrize("make, message", [
    (lambda c: c.resize.Point(format=vs.GRAY8), "colour clip"),
    (lambda c: vs.core.std.Splice([c[:2], c[:2].resize.Point(format=vs.YUV444P8)], mismatch=True), "format varies"),
    (lambda c: c.resize.Point(24, 24), "too small"),
])
def test_unusable_clips_raise_a_named_error(franck, make, message):
    with pytest.raises(vs.Error, match=f"vdf.protect: .*{message}"):
        vs_vdf.protect(make(franck), **FAST)


def test_bad_options_raise_a_named_error(franck):
    with pytest.raises(vs.Error, match="vdf.protect: unknown preset"):
        vs_vdf.protect(franck, preset="extreme")
    with pytest.raises(vs.Error, match="vdf.protect: chunk"):
        vs_vdf.protect(franck, chunk=0)
