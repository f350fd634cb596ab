"""Pushing an export to the Hub, against the stand-in Hub with upload endpoints
(tests/hubserver_upload.py), through the real huggingface_hub client: private by
default, the token from the environment sent and never shown, clear errors."""

from __future__ import annotations

import logging

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.errors import UserError
from mlx_lora.export import ExportFinished, export_run
from mlx_lora.export.push import push_folder
from mlx_lora.events import RecordingReporter
from tests.core.test_chat_helpers import tiny_run  # noqa: F401
from tests.hubserver_upload import READ_TOKEN, WRITE_TOKEN, UploadHub, upload_hub  # noqa: F401


def test_export_and_push_creates_a_private_repo_with_the_folder(upload_hub: UploadHub, tiny_run, tmp_path,
                                                                monkeypatch, caplog):
    from huggingface_hub import hf_hub_download

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    caplog.set_level(logging.DEBUG)
    reporter = RecordingReporter()
    out = tmp_path / "peft"

    result = export_run(tiny_run, out, "peft", push="me/tiny-pirate", reporter=reporter, torch_python=None)

    assert result.pushed_url.startswith(f"{upload_hub.url}/me/tiny-pirate/commit/")
    assert upload_hub.private["me/tiny-pirate"] is True
    repo = upload_hub.repos["me/tiny-pirate"]
    assert set(repo.files) == {p.name for p in out.iterdir()}
    for name, data in repo.files.items():
        assert (out / name).read_bytes() == data
    posts = [r for r in upload_hub.requests if r.method == "POST"]
    assert "/api/validate-yaml" in [r.path for r in posts]  # the card's metadata passed the Hub's check
    writes = [r for r in posts if r.path != "/api/validate-yaml"]
    assert [r.path.split("/")[-2] if "/api/models/" in r.path else r.path for r in writes] == \
        ["/api/repos/create", "preupload", "commit"]
    assert all(r.headers["authorization"] == f"Bearer {WRITE_TOKEN}" for r in writes)
    assert reporter.of(ExportFinished)[0].pushed_url == result.pushed_url
    assert WRITE_TOKEN not in caplog.text and WRITE_TOKEN not in repr(result)
    # what was pushed can be read back through the download API
    card = hf_hub_download("me/tiny-pirate", "README.md", cache_dir=tmp_path / "cache")
    assert open(card).read() == (out / "README.md").read_text()


def test_pushing_again_updates_the_same_repo_and_public_on_request(upload_hub: UploadHub, tiny_run, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    export_run(tiny_run, tmp_path / "a", "adapter", prompts=("Hi",))
    push_folder(tmp_path / "a", "me/open", private=False)
    push_folder(tmp_path / "a", "me/open", private=False)  # exists: 409 is fine
    assert upload_hub.private["me/open"] is False
    assert len([c for c in upload_hub.commits if c["repo"] == "me/open"]) == 2


def test_without_a_token_the_push_says_how_to_log_in(upload_hub: UploadHub, tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "README.md").write_text("x")
    with pytest.raises(UserError, match="hf auth login"):
        push_folder(tmp_path / "f", "me/x")
    assert not [r for r in upload_hub.requests if r.method == "POST"]


def test_a_read_only_token_is_refused_without_showing_it(upload_hub: UploadHub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "README.md").write_text("x")
    with pytest.raises(UserError) as info:
        push_folder(tmp_path / "f", "me/x")
    assert "403" in str(info.value) and "write access" in str(info.value)
    assert READ_TOKEN not in str(info.value)


@pytest.mark.parametrize("repo", ["no-slash", "a/b/c", "bad name/x"])
def test_bad_repo_ids_are_user_errors(upload_hub: UploadHub, tmp_path, repo, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    with pytest.raises(UserError, match="not a Hub repository id"):
        push_folder(tmp_path, repo)


def test_offline_refuses_to_push(upload_hub: UploadHub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        push_folder(tmp_path, "me/x")
