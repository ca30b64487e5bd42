"""The delivery estimate: the engine measures the encode on the pictures the writer will make."""

from __future__ import annotations

import numpy as np
import torch
import vapoursynth as vs

from vs_vdf import node
from vs_vdf.engine.codec import _yuv420
from vs_vdf.engine.protector import with_change


def _rgbs_frames(path, count: int):
    """The clip's first frames as the node hands them to the engine (float RGB, not clipped), and the clip."""
    clip = vs.core.bs.VideoSource(source=str(path), cachemode=0)
    rgbs, conversion = node._to_rgbs(clip)
    frames = torch.from_numpy(np.stack([np.stack([np.asarray(f[p]) for p in range(3)])
                                        for f in (rgbs.get_frame(i) for i in range(count))]))
    return frames, rgbs, clip, conversion


def test_the_delivery_is_measured_on_the_pictures_the_writer_makes(clips):
    """Converted from the float frames as decoded (some lie below 0: the clip has levels below black), the
    engine's 4:2:0 pictures are the writer's (VapourSynth's conversion back to the clip's format): the same luma,
    chroma within a level almost everywhere (its 2 x 2 mean is not zimg's filter; 98% of samples equal); the same
    frames rounded to 8-bit RGB first do not give the writer's luma."""
    frames, rgbs, clip, conversion = _rgbs_frames(clips["wolfgang"], 2)
    assert bool((frames < 0).any())
    written = node._from_rgbs(rgbs, clip, conversion)
    for index in range(frames.shape[0]):
        engine = [plane[0].numpy() for plane in _yuv420(frames[index:index + 1])]
        writer = [np.asarray(written.get_frame(index)[p]).astype(np.float64) for p in range(3)]
        assert np.array_equal(engine[0], writer[0])
        for ours, theirs in zip(engine[1:], writer[1:]):
            assert np.abs(ours - theirs).max() <= 2 and (np.abs(ours - theirs) <= 1).mean() > 0.999
        rounded = _yuv420((frames[index:index + 1].clamp(0, 1) * 255).round() / 255)
        assert not np.array_equal(rounded[0][0].numpy(), writer[0])


def test_the_change_is_added_to_the_frames_as_decoded():
    """Pixels the engine left alone keep their decoded value, also outside [0, 1]; a changed pixel gets the
    engine's 8-bit change over the rounded clean value, so no rounding of the clean frame is added."""
    source = torch.tensor([-0.02, 0.3004, 0.5, 1.01]).reshape(1, 1, 1, 4)
    clean = source.clamp(0, 1)
    protected = clean.clone()
    protected[..., 1] = 80 / 255  # round(0.3004 * 255) = 77: three levels up
    result = with_change(source, clean, protected)
    assert torch.equal(result[..., [0, 2, 3]], source[..., [0, 2, 3]])
    assert torch.allclose(result[..., 1], source[..., 1] + 3 / 255)
