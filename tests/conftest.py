"""Shared fixtures. The real cache is filled by scripts/setup; tests that need another cache make their own."""

from __future__ import annotations

import pytest

from vs_vdf import assets


@pytest.fixture(scope="session")
def manifest() -> assets.Manifest:
    return assets.default_manifest()


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
