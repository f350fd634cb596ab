"""The token store (file fallback: mode 0600, masked, removable) and folder settings."""

from __future__ import annotations

import os
import stat

import pytest

from app import settings_store


@pytest.fixture
def no_keyring(monkeypatch, tmp_path):
    monkeypatch.setattr(settings_store, "_keyring", lambda: None)
    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path))
    return tmp_path


def test_token_file_is_private_and_round_trips(no_keyring):
    settings_store.save_token("hf_abcdefghijklmnopqrstuvwxyz")
    path = no_keyring / "hub_token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings_store.load_token() == "hf_abcdefghijklmnopqrstuvwxyz"
    settings_store.save_token(None)
    assert not path.exists() and settings_store.load_token() is None


def test_token_is_only_ever_shown_masked():
    masked = settings_store.mask_token("hf_abcdefghijklmnopqrstuvwxyz")
    assert masked == "hf_…wxyz"
    assert "abcdefgh" not in masked
    assert settings_store.mask_token("short") == "•••••"


def test_folders_round_trip_and_reach_the_environment(no_keyring, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    settings_store.save_folders(settings_store.Folders(hub_cache=str(no_keyring / "cache")))
    settings_store.save_token("hf_secret_token_1234")
    settings_store.apply_to_environment()
    assert os.environ["HF_HUB_CACHE"] == str(no_keyring / "cache")
    assert os.environ["HF_TOKEN"] == "hf_secret_token_1234"
    assert settings_store.load_folders().hub_cache == str(no_keyring / "cache")
