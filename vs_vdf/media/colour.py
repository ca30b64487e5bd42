"""Colour rules shared by decoding, the node and encoding: matrix codes, their fallback, and range.

Codes are ITU-T H.273's, as used by FFmpeg's ``colorspace`` and VapourSynth's ``_Matrix``. A source
that leaves the matrix unspecified is read with BT.709 when HD and BT.601 (170m) below, and written
with the same matrix, so a round trip never shifts colours.
"""

from __future__ import annotations

from collections.abc import Mapping

# H.273 matrix coefficients -> VapourSynth / zimg names (code 2 is "unspecified", 3 "reserved").
MATRIX_NAMES = {0: "rgb", 1: "709", 4: "fcc", 5: "470bg", 6: "170m", 7: "240m", 8: "ycgco", 9: "2020ncl",
                10: "2020cl", 12: "chromancl", 13: "chromacl", 14: "ictcp"}
BT709, BT601 = 1, 6

# FFmpeg's color_range codes.
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2


def default_matrix(width: int, height: int) -> int:
    """The matrix to assume when the source leaves it unspecified: BT.709 for HD, BT.601 below."""
    return BT709 if width >= 1280 or height >= 720 else BT601


def yuv_matrix(code: int | None, width: int, height: int) -> int:
    """The YUV matrix to read or write with: the given one when it names a YUV matrix, else the default
    (an RGB source encoded to YUV gets the default too, never the RGB "matrix")."""
    return code if code in MATRIX_NAMES and code != 0 else default_matrix(width, height)


def matrix_name(code: int) -> str:
    return MATRIX_NAMES[code]


def frame_is_full_range(props: Mapping) -> bool:
    """Whether a VapourSynth frame is full range: ``_Range`` (1 = full) in current cores, ``_ColorRange``
    (0 = full) in older ones; YUV without either is limited."""
    if "_Range" in props:
        return int(props["_Range"]) == 1
    if "_ColorRange" in props:
        return int(props["_ColorRange"]) == 0
    return False


def range_name(full: bool) -> str:
    return "full" if full else "limited"
