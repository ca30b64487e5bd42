"""The native `vdf` namespace: built with cffi, autoloaded, identical to vs_vdf.protect, errors, filter chains."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

import vs_vdf
from vs_vdf import plugin

ROOT = Path(__file__).parent.parent
FAST = dict(preset="light", targets="facemesh,headpose", max_steps=2, chunk=3, device="cpu")


def vspipe(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("XDG_CONFIG_HOME", str(ROOT / ".vsconfig"))
    return subprocess.run([str(Path(sys.executable).parent / "vspipe"), *args], capture_output=True, env=env,
                          **kwargs)


def test_the_plugin_builds_from_source_with_cffi(tmp_path):
    sys.path.insert(0, str(ROOT / "filters"))
    try:
        from build_plugin import ffibuilder
    finally:
        sys.path.pop(0)
    library = Path(ffibuilder.compile(tmpdir=str(tmp_path)))
    assert library.is_file()
    assert ctypes.CDLL(str(library)).VapourSynthPluginInit2  # the entry point VapourSynth looks for


def test_the_installed_plugin_is_the_built_one_and_autoloads():
    link = plugin.autoload_folder() / plugin.LINK_NAME
    assert link.resolve() == plugin.built_library().resolve()
    assert hasattr(vs.core, "vdf")
    signature = vs.core.vdf.Protect.signature
    assert "clip:vnode" in signature and "preset:data:opt" in signature and "max_steps:int:opt" in signature


def test_a_vpy_without_import_gives_the_frames_of_vs_vdf_protect(clips, tmp_path):
    script = tmp_path / "native.vpy"
    options = ", ".join(f"{k}={v!r}" for k, v in FAST.items())
    script.write_text("import vapoursynth as vs\n"
                      f"clip = vs.core.bs.VideoSource(source={str(clips['franck'])!r}, cachemode=0)[:4]\n"
                      f"vs.core.vdf.Protect(clip, {options}).set_output()\n")
    assert "vs_vdf" not in script.read_text()
    raw = tmp_path / "frames.raw"
    result = vspipe(str(script), str(raw))
    assert result.returncode == 0, result.stderr.decode()
    clip = vs.core.bs.VideoSource(source=str(clips["franck"]), cachemode=0)[:4]
    expected = vs_vdf.protect(clip, **FAST)
    data = b"".join(np.ascontiguousarray(np.asarray(f[p])).tobytes() for f in expected.frames() for p in range(3))
    assert raw.read_bytes() == data


def test_arguments_are_checked_by_vapoursynth_and_python_errors_arrive_as_vs_error(clips):
    clip = vs.core.bs.VideoSource(source=str(clips["franck"]), cachemode=0)
    with pytest.raises(vs.Error, match="nope"):
        vs.core.vdf.Protect(clip, nope=1)
    with pytest.raises(ValueError, match="many"):  # the declared int type makes the call convert, and fail
        vs.core.vdf.Protect(clip, seed="many")
    with pytest.raises(vs.Error, match="vdf.protect: unknown preset 'extreme'"):
        vs.core.vdf.Protect(clip, preset="extreme")
    with pytest.raises(vs.Error, match="vdf.protect: needs a colour clip"):
        vs.core.vdf.Protect(clip.resize.Point(format=vs.GRAY8))
    assert clip.vdf.Protect(**FAST).num_frames == clip.num_frames  # the method form works too


@pytest.mark.parametrize("chain, arguments", [
    ("compare.vpy", ["-a", "preset=light", "-a", "max_steps=1"]),
    ("preset_sweep.vpy", ["-a", "frames=2", "-a", "max_steps=1", "-a", "presets=light,strong"]),
])
def test_filter_chains_run(chain, arguments, clips, tmp_path):
    out = tmp_path / "out.y4m"
    result = vspipe("-c", "y4m", "-e", "1", str(ROOT / "filters" / chain), str(out), "-a", f"input={clips['franck']}",
                    "-a", "device=cpu", *arguments)
    assert result.returncode == 0, result.stderr.decode()
    header = out.read_bytes()[:80].split(b"\n")[0].decode()
    width = int(header.split(" W")[1].split()[0])
    assert width >= 2 * 360


def test_a_host_without_python_gets_a_clear_error(tmp_path):
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the test host")
    folder = plugin.autoload_folder().parent
    host = tmp_path / "host"
    subprocess.run([compiler, "-o", str(host), str(ROOT / "tests" / "native" / "no_python_host.c"),
                    f"-I{folder / 'include'}", f"-L{folder}", "-l:libvapoursynth.so.4", f"-Wl,-rpath,{folder}"],
                   check=True)
    result = subprocess.run([str(host)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vdf.Protect: this host has no Python interpreter" in result.stdout
