"""vs-vdf: protect portrait and talking-head videos against 3D talking-face cloning.

``vs_vdf.protect`` is ``vs_vdf.node.protect`` (the VapourSynth filter), imported on first use so that
importing the package stays light; ``help(vs_vdf.protect)`` shows its real signature.
"""

__version__ = "0.1.0"
__all__ = ["protect"]


def __getattr__(name: str):
    if name == "protect":
        from .node import protect

        return protect
    raise AttributeError(f"module 'vs_vdf' has no attribute {name!r}")
