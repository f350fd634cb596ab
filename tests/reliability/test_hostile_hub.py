"""A hostile Hub endpoint cannot write outside the cache or point the cache elsewhere.

huggingface_hub 2.4 turns the server's ``ETag``/``X-Linked-Etag`` into ``blobs/<etag>``
and its ``X-Repo-Commit`` into ``snapshots/<commit>``, ``refs/<revision>`` content and
``.no_exist/<commit>/…`` without checking them, so an endpoint (``HF_ENDPOINT``, a
mirror, a proxy) answering ``ETag: "../../…/site-packages/x.pth"`` wrote a ``.pth``
that Python runs at its next start. Here the stand-in Hub (tests/hubserver.py) sends
such headers through the real client, and every download must be refused with a
UserError before anything lands outside the cache. A ``refs/main`` whose content is
not a commit hash is never followed out of the cache either."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlx_lora.cli.main import main
from mlx_lora.errors import UserError
from mlx_lora.models import hub as hubmod
from tests.hubserver import HubRepo, StandInHub, files_from_folder


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _outside_the_cache(tmp_path: Path, before: set[Path]) -> list[Path]:
    cache = tmp_path / "hf" / "hub"
    return sorted(p for p in _files(tmp_path) - before if cache not in p.parents)


def _links_leaving_the_cache(tmp_path: Path) -> list[Path]:
    cache = (tmp_path / "hf" / "hub").resolve()
    return [p for p in _files(cache) if p.is_symlink() and cache not in Path(os.path.realpath(p)).parents]


def _hostile_cases(tmp_path: Path) -> dict[str, tuple[str, dict[str, str]]]:
    planted = tmp_path / "site-packages"
    # blobs/ is hf/hub/models--org--evil/blobs under tmp_path: four levels up is tmp_path
    return {
        "etag-dot-dot": ("tokenizer_config.json", {"ETag": '"../../../../site-packages/evil.pth"'}),
        "etag-absolute": ("tokenizer_config.json", {"ETag": f'"{planted}/absolute.pth"'}),
        "weak-etag-dot-dot": ("tokenizer_config.json", {"ETag": 'W/"../../../../site-packages/weak.pth"'}),
        "linked-etag-dot-dot": ("model.safetensors", {"X-Linked-Etag": '"../../../../site-packages/linked.pth"'}),
        "commit-dot-dot": ("tokenizer_config.json", {"X-Repo-Commit": "../../../../site-packages"}),
        "commit-absolute": ("config.json", {"X-Repo-Commit": str(planted)}),
        "commit-not-hex": ("tokenizer_config.json", {"X-Repo-Commit": "main"}),
        "commit-of-another-snapshot": ("tokenizer_config.json", {"X-Repo-Commit": "0" * 40}),
        # a 404 with a commit header: the library caches the miss in .no_exist/<commit>/<file>
        "missing-file-absolute-commit": ("generation_config.json", {"X-Repo-Commit": str(planted)}),
    }


CASES = ["etag-dot-dot", "etag-absolute", "weak-etag-dot-dot", "linked-etag-dot-dot", "commit-dot-dot",
         "commit-absolute", "commit-not-hex", "commit-of-another-snapshot", "missing-file-absolute-commit"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_headers_are_refused_and_nothing_is_written_outside_the_cache(case, hub: StandInHub, tmp_path,
                                                                               tiny_model):
    filename, headers = _hostile_cases(tmp_path)[case]
    files = files_from_folder(tiny_model)
    missing = frozenset({filename}) if case.startswith("missing") else frozenset()
    repo = hub.add_repo(HubRepo("org/evil", files, missing=missing))
    hub.answer_with("org/evil", filename, headers)
    before = _files(tmp_path)

    with pytest.raises(UserError, match="refused") as info:
        hubmod.download_model("org/evil")

    message = str(info.value)
    assert filename in message and "HF_ENDPOINT" in message
    assert _outside_the_cache(tmp_path, before) == []
    assert not (tmp_path / "site-packages").exists()
    assert _links_leaving_the_cache(tmp_path) == []
    storage = tmp_path / "hf" / "hub" / "models--org--evil"
    refs = [p for p in (storage / "refs").rglob("*") if p.is_file()] if (storage / "refs").exists() else []
    assert all(p.read_text() == repo.sha for p in refs)  # no ref the server chose
    snapshots = storage / "snapshots"
    assert not snapshots.exists() or {p.name for p in snapshots.iterdir()} <= {repo.sha}
    with pytest.raises(UserError, match="not downloaded"):
        hubmod.cached_model_path("org/evil")  # what was refused is never taken for a model


def test_the_cli_refuses_a_hostile_etag_with_a_named_error(hub: StandInHub, tmp_path, tiny_model, capsys):
    hub.add_repo(HubRepo("org/evil", files_from_folder(tiny_model)))
    hub.answer_with("org/evil", "tokenizer_config.json", {"ETag": '"../../../../site-packages/evil.pth"'})

    assert main(["models", "download", "org/evil"]) == 2

    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the per-file progress lines
    assert last.startswith("error: refused tokenizer_config.json") and "ETag" in last
    assert "Traceback" not in err and "internal error" not in err
    assert not (tmp_path / "site-packages").exists()


def test_a_clean_download_still_passes_the_checks(hub: StandInHub, tmp_path):
    path = hubmod.download_model("org/tiny")
    assert path.name == hub.repos["org/tiny"].sha and (path / "config.json").is_file()
    assert _links_leaving_the_cache(tmp_path) == []


@pytest.mark.parametrize("content", ["../../../../outside", "{outside}", "../../../../outside/", "0" * 39 + "g", ""])
def test_a_ref_that_is_not_a_commit_hash_is_never_followed(content, hub: StandInHub, tmp_path, tiny_model,
                                                           monkeypatch):
    # a complete model planted outside the cache, and refs/main pointing at it
    outside = tmp_path / "outside"
    outside.mkdir()
    for name, data in files_from_folder(tiny_model).items():
        (outside / name).write_bytes(data)
    storage = tmp_path / "hf" / "hub" / "models--org--planted"
    (storage / "refs").mkdir(parents=True)
    (storage / "snapshots").mkdir()
    (storage / "refs" / "main").write_text(content.format(outside=outside))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(UserError, match="not downloaded"):
        hubmod.cached_model_path("org/planted")
    with pytest.raises(UserError, match="not downloaded"):
        hubmod.cached_model_path("org/planted", revision="main")


def test_the_check_survives_a_new_http_client(hub: StandInHub, tmp_path, tiny_model):
    from huggingface_hub.utils import close_session

    hub.add_repo(HubRepo("org/evil", files_from_folder(tiny_model)))
    hub.answer_with("org/evil", "tokenizer_config.json", {"ETag": '"../../../../site-packages/evil.pth"'})
    hubmod.model_details("org/tiny")  # the shared client gets the hook
    close_session()  # huggingface_hub builds a new one (it does so in every forked child too)

    with pytest.raises(UserError, match="refused"):
        hubmod.download_model("org/evil")
    assert not (tmp_path / "site-packages").exists()


@pytest.mark.parametrize("revision", ["../../../../site-packages", "/tmp/x", "refs/../../x", "a\\..\\b", ""])
def test_a_revision_that_would_leave_refs_is_refused(revision, hub: StandInHub, tmp_path):
    before = _files(tmp_path)
    for call in (hubmod.download_model, hubmod.cached_model_path):
        with pytest.raises(UserError, match="not a revision name"):
            call("org/tiny", revision=revision)
    assert _outside_the_cache(tmp_path, before) == [] and hub.requests == []


def test_behind_the_hook_a_file_filed_elsewhere_is_still_refused(hub: StandInHub, tiny_model, monkeypatch):
    from huggingface_hub.utils import close_session

    from mlx_lora.models.hub import guard

    close_session()
    monkeypatch.setattr(guard, "install", lambda: None)  # as if the hook were bypassed
    hub.add_repo(HubRepo("org/evil", files_from_folder(tiny_model)))
    hub.answer_with("org/evil", "tokenizer_config.json", {"X-Repo-Commit": "0" * 40})
    try:
        with pytest.raises(UserError, match="refused tokenizer_config.json: huggingface_hub put it at"):
            hubmod.download_model("org/evil")
    finally:
        close_session()  # the next test's client gets the hook again
