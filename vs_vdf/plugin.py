"""Where the native ``vdf`` plugin is, and linking it into VapourSynth's autoload folder."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import VdfError

LINK_NAME = "libvdf.so"


class PluginError(VdfError):
    pass


def built_library() -> Path:
    """The plugin library compiled by the package build (``vs_vdf._vdf_plugin``)."""
    import importlib.util

    spec = importlib.util.find_spec("vs_vdf._vdf_plugin")
    if spec is None or spec.origin is None:
        raise PluginError("the native vdf plugin was not built; reinstall vs-vdf (pip install -e .) with a C compiler")
    return Path(spec.origin)


def autoload_folder() -> Path:
    """VapourSynth's plugin folder inside the installed ``vapoursynth`` package (autoloaded by every core)."""
    import importlib.util

    spec = importlib.util.find_spec("vapoursynth")
    if spec is None or not spec.submodule_search_locations:
        raise PluginError("the vapoursynth package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "plugins"


def install() -> Path:
    """Link (or refresh the link to) the built library into the autoload folder; returns the link."""
    target, link = built_library(), autoload_folder() / LINK_NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{LINK_NAME}.new")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)
    return link
