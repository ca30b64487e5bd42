"""The Python side of the native ``vdf`` namespace (filters/vdf_plugin.c).

The plugin calls ``call(id, function)``; the arguments come back through ``core.vdf.BridgeArguments``
as an ordinary VapourSynth call result, and the outcome (a clip, or the error text, which VapourSynth
raises in the calling script as ``vs.Error``) goes back through ``core.vdf.BridgeReturn``.
"""

from __future__ import annotations

import vapoursynth as vs


def _protect(arguments: dict) -> vs.VideoNode:
    from .node import protect

    options = {key: value.decode() if isinstance(value, bytes) else value for key, value in arguments.items()}
    clip = options.pop("clip")
    return protect(clip, **options)


FUNCTIONS = {"Protect": _protect}


def call(call_id: int, function: str) -> None:
    core = vs.core
    try:
        arguments = core.vdf.BridgeArguments(id=call_id)
        if isinstance(arguments, vs.VideoNode):  # only the clip was given
            arguments = {"clip": arguments}
        result = FUNCTIONS[function](dict(arguments))
    except Exception as exc:  # noqa: BLE001 - every failure must reach the script as vs.Error
        message = str(exc) if str(exc).startswith("vdf.") else f"vdf.{function}: {exc.__class__.__name__}: {exc}"
        core.vdf.BridgeReturn(id=call_id, error=message)
        return
    core.vdf.BridgeReturn(id=call_id, clip=result)
