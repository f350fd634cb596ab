"""mlx_lora.models.hub against the stand-in Hub (tests/hubserver.py), through the
real huggingface_hub client: search, details, download into the HF cache,
refusals, faults, cancel, offline, cache listing/deletion, token hygiene."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
import uuid
from pathlib import Path

import pytest

from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import RecordingReporter
from mlx_lora.models import hub as hubmod
from mlx_lora.models.hub import DownloadProgress
from tests.hubfixtures import ALLOWED_TOKEN, FORBIDDEN_FILES, tiny_repo_files
from tests.hubserver import HubRepo, StandInHub

EXPECTED_TINY_FILES = {
    "model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "generation_config.json", "README.md", "chat_template.jinja",
}


def hf_home(tmp_path: Path) -> Path:
    return tmp_path / "hf"


def incomplete_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".incomplete")]


def storage(tmp_path: Path, repo_id: str) -> Path:
    return hf_home(tmp_path) / "hub" / ("models--" + repo_id.replace("/", "--"))


# ---- search and details ----------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_search_with_the_hub_unreachable_says_offline_without_the_clients_retries(hub: StandInHub, monkeypatch):
    """No Hub: a quick reachability check answers, and huggingface_hub's request (five attempts
    with back-off, ~35 s) is never made."""
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(HfApi, "list_models", lambda *a, **k: pytest.fail("searched an unreachable Hub"))
    with pytest.raises(hubmod.HubUnreachable, match="offline — cannot reach .* local models and the demo still work"):
        hubmod.search_models("tiny")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the stand-in is reachable: no false alarm
    assert hubmod.hub_reachable()


def test_a_hanging_connection_is_given_up_after_the_timeout(monkeypatch):
    """A resolver or a SYN that never answers does not hold the search: the probe is left
    behind in its daemon thread, still blocked, when the check answers False."""
    import socket
    import threading

    release = threading.Event()
    def hang(*_args, **_kwargs):
        release.wait(60)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert hubmod.hub_reachable("https://huggingface.co", timeout=0.2) is False
    assert not release.is_set()  # answered while the probe still waits
    release.set()


def test_search_returns_the_hubs_results_with_params_size_license(hub: StandInHub, tiny_model):
    results = hubmod.search_models("tiny", sort="downloads", limit=10)

    assert [m.repo_id for m in results] == ["org/tiny", "org/gated-tiny", "mlx-community/tiny-4bit"]
    tiny = results[0]
    weights = (tiny_model / "model.safetensors").read_bytes()
    header_len = struct.unpack("<Q", weights[:8])[0]
    assert tiny.size_bytes == len(weights) - 8 - header_len  # float32 weights, from safetensors.parameters
    assert tiny.params == tiny.size_bytes // 4
    assert (tiny.downloads, tiny.likes, tiny.license, tiny.gated, tiny.is_mlx) == (500, 7, "apache-2.0", False, False)
    assert tiny.last_modified.year == 2025
    by_id = {m.repo_id: m for m in results}
    assert by_id["org/gated-tiny"].gated and by_id["org/gated-tiny"].license == "llama3"
    assert by_id["mlx-community/tiny-4bit"].is_mlx

    search = [r for r in hub.requests if r.path == "/api/models"][-1]
    assert search.query["search"] == ["tiny"] and search.query["filter"] == ["text-generation"]
    assert search.query["limit"] == ["10"] and "safetensors" in search.query["expand"]


@pytest.mark.parametrize("sort, hub_sort, first", [
    ("likes", "likes", "mlx-community/tiny-4bit"),
    ("trending", "trendingScore", "org/hostile"),
    ("recent", "lastModified", "mlx-community/tiny-4bit"),
])
def test_search_sorts(hub: StandInHub, sort, hub_sort, first):
    results = hubmod.search_models("", sort=sort, limit=2)
    assert len(results) == 2 and results[0].repo_id == first
    assert [r for r in hub.requests if r.path == "/api/models"][-1].query["sort"] == [hub_sort]


def test_search_rejects_bad_arguments_and_offline(hub: StandInHub, monkeypatch):
    with pytest.raises(UserError, match="unknown sort"):
        hubmod.search_models("x", sort="best")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        hubmod.search_models("x")
    assert hub.requests == []


def test_model_details_shows_files_and_what_a_download_fetches(hub: StandInHub, tiny_model):
    d = hubmod.model_details("org/tiny")

    files = tiny_repo_files(tiny_model)
    assert {f.name: f.size for f in d.files} == {name: len(data) for name, data in files.items()}
    assert {f.name for f in d.download_files} == EXPECTED_TINY_FILES
    assert d.download_files[-1].name == "config.json"  # last: marks a finished download
    assert d.download_bytes == sum(len(files[n]) for n in EXPECTED_TINY_FILES)
    assert d.can_download and d.license == "apache-2.0" and not d.gated
    assert d.commit == hub.repos["org/tiny"].sha and d.params
    assert "base model: HuggingFaceTB/SmolLM2-135M" in d.card_summary
    assert hub.file_requests() == []  # details never download

    assert "pickle" in hubmod.model_details("org/pickle-only").problems[0]
    hostile = hubmod.model_details("org/hostile")
    assert "unsafe names" in hostile.problems[0] and hostile.download_files == ()


def test_mlx_conversion_hint():
    assert hubmod.mlx_conversion_hint("mlx-community/Qwen3-0.6B-4bit") is None
    hint = hubmod.mlx_conversion_hint("Qwen/Qwen3-0.6B")
    assert "mlx-community/Qwen3-0.6B" in hint and "mlx_lm.convert --hf-path Qwen/Qwen3-0.6B" in hint


# ---- download ------------------------------------------------------------------


def test_download_lands_in_the_hf_cache_and_loads(hub: StandInHub, tmp_path, tiny_model):
    from huggingface_hub import constants
    from mlx_lm import load

    from mlx_lora.models.local import resolve_model

    reporter = RecordingReporter()
    path = hubmod.download_model("org/tiny", reporter=reporter)

    sha = hub.repos["org/tiny"].sha
    assert path == storage(tmp_path, "org/tiny") / "snapshots" / sha
    assert {p.name for p in path.iterdir()} == EXPECTED_TINY_FILES
    assert (path / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert (storage(tmp_path, "org/tiny") / "refs" / "main").read_text() == sha
    assert not (Path(constants.HF_HUB_CACHE) / "models--org--tiny").exists()  # HF_HOME read per call

    model, tokenizer = load(str(path))
    assert tokenizer.encode("hello") and model.layers

    assert resolve_model("org/tiny") == path
    assert resolve_model("org/tiny", download=False) == path

    events = reporter.of(DownloadProgress)
    files = tiny_repo_files(tiny_model)
    total = sum(len(files[name]) for name in EXPECTED_TINY_FILES)
    assert events[-1].repo_bytes_done == events[-1].repo_bytes_total == total
    done = [e.repo_bytes_done for e in events]
    assert done == sorted(done)  # never goes back
    assert len({(e.filename, e.bytes_done) for e in events}) == len(events)  # no repeats
    weights = [e for e in events if e.filename == "model.safetensors"]
    assert len(weights) > 3  # per-chunk updates, not just start and end
    assert weights[-1].bytes_done == weights[-1].bytes_total == (tiny_model / "model.safetensors").stat().st_size


def test_download_requests_only_allowed_files(hub: StandInHub):
    hubmod.download_model("org/tiny")

    assert hub.requested_files() == EXPECTED_TINY_FILES
    for request in hub.requests:
        assert not request.path.endswith((".bin", ".py", ".pt")), request.path
        assert not any(name in request.path for name in FORBIDDEN_FILES), request.path


def test_a_second_download_uses_the_cache(hub: StandInHub):
    first = hubmod.download_model("org/tiny")
    hub.clear_requests()
    assert hubmod.download_model("org/tiny") == first
    assert hub.file_requests() == []  # one model-info request, no file requests


def test_pickle_only_repo_is_refused_before_any_download(hub: StandInHub, tmp_path):
    with pytest.raises(UserError, match="pickle") as info:
        hubmod.download_model("org/pickle-only")
    assert "safetensors" in str(info.value)
    assert hub.file_requests() == []
    assert not storage(tmp_path, "org/pickle-only").exists()


def test_hostile_file_names_are_refused_and_nothing_is_written(hub: StandInHub, tmp_path):
    with pytest.raises(UserError, match="unsafe names"):
        hubmod.download_model("org/hostile")
    assert hub.file_requests() == []
    assert not storage(tmp_path, "org/hostile").exists()
    assert not any(p.name in ("evil.json", "abs.json", "C:evil.json") for p in tmp_path.rglob("*"))
    assert not Path("/abs.json").exists()


def test_unknown_repo_and_revision_give_clear_errors(hub: StandInHub):
    with pytest.raises(UserError, match="no such model"):
        hubmod.download_model("org/nothing")
    with pytest.raises(UserError, match="no such revision"):
        hubmod.download_model("org/tiny", revision="v9")
    with pytest.raises(UserError, match="not a Hub repository id"):
        hubmod.download_model("org/../x")


def test_a_revision_is_pinned_and_gets_its_own_ref(hub: StandInHub, tmp_path):
    sha = hub.repos["org/tiny"].sha
    by_commit = hubmod.download_model("org/tiny", revision=sha)
    assert by_commit.name == sha
    assert not (storage(tmp_path, "org/tiny") / "refs" / "main").exists()  # a commit needs no ref
    assert hubmod.cached_model_path("org/tiny") == by_commit  # newest complete snapshot
    resolve = [r for r in hub.file_requests() if "/resolve/" in r.path]
    assert resolve and all(f"/resolve/{sha}/" in r.path for r in resolve)


def test_not_enough_disk_space_is_refused_before_downloading(hub: StandInHub, monkeypatch):
    monkeypatch.setattr(hubmod, "_free_bytes", lambda folder: 1000)
    with pytest.raises(UserError, match="only 0.0 MB is free"):
        hubmod.download_model("org/tiny")
    assert hub.file_requests() == []


# ---- faults, cancel, partial files ------------------------------------------------


def test_a_dropped_connection_resumes_and_the_file_is_whole(hub: StandInHub, tmp_path, tiny_model):
    hub.inject("org/tiny", "model.safetensors", "drop_once")

    path = hubmod.download_model("org/tiny")

    expected = (tiny_model / "model.safetensors").read_bytes()
    assert (path / "model.safetensors").read_bytes() == expected
    gets = [r for r in hub.file_requests("GET") if r.filename == "model.safetensors"]
    assert len(gets) == 2  # dropped halfway, then resumed from where it stopped
    resumed_from = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_from <= len(expected) // 2
    assert incomplete_files(hf_home(tmp_path)) == []


def test_a_stale_incomplete_blob_is_never_used(hub: StandInHub, tmp_path, tiny_model):
    expected = (tiny_model / "model.safetensors").read_bytes()
    blobs = storage(tmp_path, "org/tiny") / "blobs"
    blobs.mkdir(parents=True)
    stale = blobs / (hashlib.sha256(expected).hexdigest() + ".incomplete")
    stale.write_bytes(b"garbage from a crashed download")

    path = hubmod.download_model("org/tiny")

    assert (path / "model.safetensors").read_bytes() == expected


def test_cancel_stops_mid_file_and_leaves_nothing_usable(hub: StandInHub, tmp_path, tiny_model):
    hub.inject("org/tiny", "model.safetensors", "stall")  # never finishes on its own
    reporter = RecordingReporter()

    def should_stop() -> bool:
        return any(e.filename == "model.safetensors" and e.bytes_done > 0 for e in reporter.of(DownloadProgress))

    with pytest.raises(Cancelled):
        hubmod.download_model("org/tiny", reporter=reporter, should_stop=should_stop)

    size = (tiny_model / "model.safetensors").stat().st_size
    assert max(e.bytes_done for e in reporter.of(DownloadProgress) if e.filename == "model.safetensors") < size
    assert incomplete_files(hf_home(tmp_path)) == []
    repo = storage(tmp_path, "org/tiny")
    assert not (repo / "refs" / "main").exists()
    assert not any(p.stat().st_size == size for p in (repo / "blobs").iterdir())
    with pytest.raises(UserError, match="not downloaded"):
        hubmod.cached_model_path("org/tiny")
    assert [m.complete for m in hubmod.list_cached() if m.repo_id == "org/tiny"] in ([], [False])

    hub.faults.clear()
    path = hubmod.download_model("org/tiny")
    assert (path / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()


def test_a_download_cancelled_between_files_is_not_a_model(hub: StandInHub, tmp_path):
    snapshot = storage(tmp_path, "org/tiny") / "snapshots" / hub.repos["org/tiny"].sha

    with pytest.raises(Cancelled):  # stop as soon as the weights are in place
        hubmod.download_model("org/tiny", should_stop=(snapshot / "model.safetensors").exists)

    assert (snapshot / "model.safetensors").is_file() and not (snapshot / "tokenizer.json").exists()
    with pytest.raises(UserError, match="not downloaded"):
        hubmod.cached_model_path("org/tiny")


def test_cancel_before_the_first_file(hub: StandInHub):
    with pytest.raises(Cancelled):
        hubmod.download_model("org/tiny", should_stop=lambda: True)
    assert hub.file_requests() == []


def test_a_snapshot_without_config_is_not_a_model(hub: StandInHub, tmp_path):
    path = hubmod.download_model("org/tiny")
    (path / "config.json").unlink()  # as a download interrupted before its last file leaves it
    with pytest.raises(UserError, match="not downloaded"):
        hubmod.cached_model_path("org/tiny")


def test_a_sharded_snapshot_is_complete_only_with_every_shard(tmp_path):
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shards[0], "b": shards[1]}}))
    (folder / shards[0]).write_bytes(b"x")
    assert not hubmod._snapshot_complete(folder)
    (folder / shards[1]).symlink_to(tmp_path / "missing-blob")  # a link whose blob is gone
    assert not hubmod._snapshot_complete(folder)
    (folder / shards[1]).unlink()
    (folder / shards[1]).write_bytes(b"y")
    assert hubmod._snapshot_complete(folder)


def test_the_stand_in_serves_snapshot_download_too(hub: StandInHub, tmp_path):
    """Other code (mlx-lm's own loader) uses snapshot_download: repo info, tree, resolve."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download("org/tiny", allow_patterns=["*.json", "model*.safetensors"],
                                    cache_dir=tmp_path / "other-cache", endpoint=hub.url))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert any("/tree/" in r.path for r in hub.requests)


# ---- offline and unreachable ------------------------------------------------------


def test_offline_a_cached_model_resolves_without_any_request(hub: StandInHub, monkeypatch):
    from mlx_lora.models.local import resolve_model

    path = hubmod.download_model("org/tiny")
    hub.clear_requests()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert resolve_model("org/tiny") == path
    assert hubmod.download_model("org/tiny") == path
    assert hub.requests == []


def test_offline_an_uncached_model_fails_fast_with_a_clear_message(hub: StandInHub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE") as info:
        hubmod.download_model("org/tiny")
    assert "mlx-lora models download org/tiny" in str(info.value)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        hubmod.model_details("org/tiny")
    assert hub.requests == []


def test_an_unreachable_hub_falls_back_to_the_cache(hub: StandInHub, caplog):
    path = hubmod.download_model("org/tiny")
    hub.stop()

    with caplog.at_level(logging.WARNING, logger="mlx_lora.models.hub"):
        assert hubmod.download_model("org/tiny") == path
    assert "cannot reach the Hub" in caplog.text
    with pytest.raises(UserError, match="cannot reach the Hugging Face Hub"):
        hubmod.download_model("org/gated-tiny")


# ---- gated repos and the token ------------------------------------------------------


def test_a_gated_repo_needs_a_token(hub: StandInHub):
    with pytest.raises(UserError, match="gated") as info:
        hubmod.download_model("org/gated-tiny")
    assert "HF_TOKEN" in str(info.value) and "hf auth login" in str(info.value)
    assert hub.file_requests() == []


def test_a_gated_repo_downloads_with_the_token_from_the_token_store(hub: StandInHub, tmp_path):
    token_file = hf_home(tmp_path) / "token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(ALLOWED_TOKEN)

    path = hubmod.download_model("org/gated-tiny")

    assert (path / "config.json").is_file()
    resolve = [r for r in hub.file_requests() if "/resolve/" in r.path]
    assert resolve and all(r.headers.get("authorization") == f"Bearer {ALLOWED_TOKEN}" for r in resolve)


def test_the_token_never_appears_in_events_logs_or_errors(hub: StandInHub, monkeypatch, caplog):
    from huggingface_hub import constants

    secret = f"hf_secret_{uuid.uuid4().hex}"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setattr(constants, "HF_DEBUG", True)  # huggingface_hub logs every request as curl
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")
    reporter = RecordingReporter()
    errors = []

    broken = hub.repos["org/tiny"].files
    hub.add_repo(HubRepo("org/broken", dict(broken), missing=frozenset({"tokenizer.json"})))

    hubmod.download_model("org/tiny", reporter=reporter)
    hubmod.search_models("tiny")
    for repo in ("org/gated-tiny", "org/pickle-only", "org/nothing", "org/broken"):  # 403, refusal, 401, 404
        with pytest.raises(UserError) as info:
            hubmod.download_model(repo, reporter=reporter)
        errors.append(str(info.value))
    hub.stop()
    with pytest.raises(UserError) as info:
        hubmod.download_model("org/other", reporter=reporter)
    errors.append(str(info.value))

    # it was used: sent to the Hub (and only there, never to the CDN host) ...
    sent = [r for r in hub.requests if r.headers.get("authorization") == f"Bearer {secret}"]
    assert sent and all(not r.path.startswith("/cdn/") for r in sent)
    assert any(r.path.startswith("/cdn/") for r in hub.requests)
    assert "gated" in errors[0] and "tokenizer.json" in errors[3]
    # ... and never shown
    assert caplog.records and secret not in caplog.text
    assert all(secret not in e.to_json() for e in reporter.events)
    assert all(secret not in e for e in errors)


def test_library_text_in_messages_is_scrubbed_of_the_token():
    from huggingface_hub import HfApi

    secret = f"hf_secret_{uuid.uuid4().hex}"
    with pytest.raises(UserError) as info:
        with hubmod._hub_errors("org/x", HfApi(endpoint="http://127.0.0.1:9", token=secret)):
            raise OSError(f"size check failed for a request sent with Bearer {secret}")
    assert secret not in str(info.value) and "Bearer ***" in str(info.value)


# ---- the cache --------------------------------------------------------------------


def test_list_cached_shows_size_and_delete_frees_it(hub: StandInHub, tmp_path, tiny_model):
    assert hubmod.list_cached() == []
    path = hubmod.download_model("org/tiny")

    [cached] = hubmod.list_cached()
    files = tiny_repo_files(tiny_model)
    assert cached.repo_id == "org/tiny" and cached.path == path and cached.complete
    assert cached.size_bytes == sum(len(files[n]) for n in EXPECTED_TINY_FILES)
    assert cached.revisions == 1

    freed = hubmod.delete_cached("org/tiny")

    assert freed == cached.size_bytes
    assert not storage(tmp_path, "org/tiny").exists()
    assert hubmod.list_cached() == []
    with pytest.raises(UserError, match="not in the Hugging Face cache"):
        hubmod.delete_cached("org/tiny")


def test_delete_removes_what_a_cancelled_first_download_left(hub: StandInHub, tmp_path):
    hub.inject("org/tiny", "model.safetensors", "stall")
    reporter = RecordingReporter()
    with pytest.raises(Cancelled):
        hubmod.download_model("org/tiny", reporter=reporter,
                              should_stop=lambda: any(e.bytes_done for e in reporter.of(DownloadProgress)
                                                      if e.filename == "model.safetensors"))
    assert storage(tmp_path, "org/tiny").exists()
    hubmod.delete_cached("org/tiny")
    assert not storage(tmp_path, "org/tiny").exists()


def test_resolve_model_downloads_a_hub_id(hub: StandInHub):
    from mlx_lora.models.local import resolve_model

    folder = resolve_model("org/tiny")
    assert (folder / "config.json").is_file() and list(folder.glob("*.safetensors"))
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
