"""vs-vdf: protect portrait and talking-head videos against 3D talking-face cloning.

Heavy modules (torch, VapourSynth) are imported lazily by the submodules that need them.
"""

__version__ = "0.1.0"


def protect(clip, **options):
    """Protect a VapourSynth clip; see ``vs_vdf.node.protect`` for the options."""
    from .node import protect as protect_clip

    return protect_clip(clip, **options)
