"""Shared fixtures. The real cache is filled by scripts/setup; tests that need another cache make their own."""

from __future__ import annotations

import pytest

from vs_vdf import assets


@pytest.fixture(scope="session")
def manifest() -> assets.Manifest:
    return assets.default_manifest()


@pytest.fixture(autouse=True)
def no_user_models(tmp_path_factory, monkeypatch):
    """No attacker model files unless a test adds its own: the models a developer added to the real cache
    would otherwise change every default ensemble."""
    monkeypatch.setenv("VS_VDF_USER_MODELS", str(tmp_path_factory.mktemp("no-user-models")))


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh, empty cache folder used by every fetch in the test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("VS_VDF_CACHE", str(root))
    return root


@pytest.fixture(scope="session")
def real_cache_root():
    """The cache scripts/setup filled, captured before any test points VS_VDF_CACHE elsewhere."""
    return assets.cache_root()


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Tiny real clips cut from the samples with the bundled ffmpeg: franck (6 frames), Wolfgang with
    its AAC audio (6 frames), a clip without a face (3 frames), and one whose frame size changes."""
    import subprocess

    from vs_vdf import samples
    from vs_vdf.evaluation.pipelines import ffmpeg_exe

    folder = tmp_path_factory.mktemp("clips")
    quiet = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    made = {
        "franck": (["-i", str(samples.path("franck")), "-frames:v", "6", "-c:v", "libx264", "-crf", "16"], "mp4"),
        "wolfgang": (["-i", str(samples.path("wolfgang")), "-frames:v", "6", "-t", "0.25", "-c:v", "libx264",
                      "-crf", "16", "-c:a", "copy"], "mp4"),
        "no_face": (["-i", str(samples.path("no_face")), "-frames:v", "3", "-vf", "scale=320:180", "-c:v", "libx264"],
                    "mp4"),
    }
    paths = {}
    for name, (args, ext) in made.items():
        paths[name] = folder / f"{name}.{ext}"
        subprocess.run([*quiet, *args, str(paths[name])], check=True)
    parts = []
    for size in ("320x240", "256x192"):
        parts.append(folder / f"part{size}.ts")
        subprocess.run([*quiet, "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25", "-frames:v", "3",
                        "-c:v", "libx264", str(parts[-1])], check=True)
    paths["variable_size"] = folder / "variable_size.ts"
    paths["variable_size"].write_bytes(b"".join(p.read_bytes() for p in parts))
    return paths
