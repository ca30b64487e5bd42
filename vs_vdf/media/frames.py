"""Frames as arrays: a video file's decoded frames as one tensor (evaluation, tests and benchmarks), and
the one pair of helpers between VapourSynth frames and numpy planes (the node and the command line)."""

from __future__ import annotations

from pathlib import Path


def read_frames(path: Path | str, count: int | None = None, start: int = 0):
    """``count`` frames (all when None) from ``start`` as a T x 3 x H x W float tensor in [0, 1] (RGB)."""
    import av
    import numpy as np
    import torch

    frames = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
            if count is not None and len(frames) == count:
                break
    if not frames:
        from .probe import MediaError

        raise MediaError(f"{path}: no frames from frame {start}")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255


def av_picture(width: int, height: int, pixel_format: str, arrays) -> "av.VideoFrame":
    """A PyAV picture for an encoder, its planes filled from arrays (each plane's rows, any dtype the format holds)."""
    import av
    import numpy as np

    picture = av.VideoFrame(width, height, pixel_format)
    for plane, data in zip(picture.planes, arrays):
        view = np.frombuffer(plane, data.dtype).reshape(plane.height, plane.line_size // data.itemsize)
        view[:, :data.shape[1]] = data
    return picture


def planes(frame) -> list:
    """Copies of a VapourSynth frame's planes as numpy arrays (the frame may be released afterwards)."""
    import numpy as np

    return [np.array(frame[plane]) for plane in range(frame.format.num_planes)]


def write_planes(frame, arrays) -> None:
    """Fill a writable VapourSynth frame's planes from arrays of the same shapes."""
    import numpy as np

    for plane, data in enumerate(arrays):
        np.copyto(np.asarray(frame[plane]), data)
