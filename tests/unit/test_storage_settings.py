"""STORAGE_URL: a local directory by default (as `make run` always had), or an S3-compatible bucket."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.lib.settings import SettingsError, load_settings, parse_storage_url
from app.lib.storage import LocalStorage, S3Storage, StorageKeyError, build_storage, check_key


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("CARTWRIGHT_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "unit-test-secret")
    for name in ("STORAGE_URL", "STORAGE_DIR", "STORAGE_S3_ENDPOINT_URL", "STORAGE_S3_REGION"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_configuration_keeps_files_in_the_var_dir(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.storage_url == f"file://{tmp_path / 'uploads'}"
    assert settings.storage_dir == tmp_path / "uploads" and settings.storage_is_local
    storage = build_storage(settings)
    assert isinstance(storage, LocalStorage) and storage.local_dir == tmp_path / "uploads"


def test_storage_dir_still_works_and_storage_url_wins(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("STORAGE_DIR", str(tmp_path / "old"))
    assert load_settings().storage_dir == tmp_path / "old"
    env.setenv("STORAGE_URL", f"file://{tmp_path / 'new'}")
    assert load_settings().storage_dir == tmp_path / "new"


def test_an_s3_url_names_a_bucket_and_prefix(env: pytest.MonkeyPatch) -> None:
    env.setenv("STORAGE_URL", "s3://shop-files/cartwright/")
    env.setenv("STORAGE_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    env.setenv("STORAGE_S3_REGION", "eu-west-3")
    settings = load_settings()
    assert settings.storage_url == "s3://shop-files/cartwright" and not settings.storage_is_local
    storage = build_storage(settings)
    assert isinstance(storage, S3Storage) and storage.url == "s3://shop-files/cartwright"
    assert storage.local_dir is None


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "gs://bucket", "/just/a/path", "file://"])
def test_an_unusable_storage_url_stops_start_up(url: str, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="STORAGE_URL"):
        parse_storage_url(url, tmp_path)


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../b", "a//b", "a/./b", "a\\b", "a\x00b", "a/"])
def test_keys_that_could_name_something_else_are_refused(key: str) -> None:
    with pytest.raises(StorageKeyError):
        check_key(key)
