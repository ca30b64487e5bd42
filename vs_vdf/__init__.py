"""vs-vdf: protect portrait and talking-head videos against 3D talking-face cloning.

Heavy modules (torch, VapourSynth) are imported lazily by the submodules that need them.
"""

__version__ = "0.1.0"
