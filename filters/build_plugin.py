"""cffi build of the native ``vdf`` VapourSynth plugin (filters/vdf_plugin.c), run by the package build.

The library is compiled as the extension ``vs_vdf._vdf_plugin``; VapourSynth loads it as a plugin
(``vdf plugin install`` links it into VapourSynth's autoload folder). Its C entry points need no
Python: the Python C API is found at run time.
"""

from pathlib import Path

import cffi


def _vapoursynth_include() -> str:
    import importlib.util

    spec = importlib.util.find_spec("vapoursynth")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("building the vdf plugin needs the vapoursynth package (for VapourSynth4.h)")
    return str(Path(next(iter(spec.submodule_search_locations))) / "include")


ffibuilder = cffi.FFI()
ffibuilder.cdef("")
ffibuilder.set_source(
    "vs_vdf._vdf_plugin",
    '#include "vdf_plugin.c"',
    include_dirs=[_vapoursynth_include(), str(Path(__file__).resolve().parent)],
    libraries=["dl", "pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
