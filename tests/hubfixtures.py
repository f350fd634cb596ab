"""The standard stand-in Hub for tests: the repos every Hub test expects
(``add_standard_repos``) and the ``hub`` fixture, which starts a
:class:`tests.hubserver.StandInHub` with them and points ``huggingface_hub`` at
it (``tests/conftest.py`` imports the fixture, so any test can ask for it).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Iterator

import pytest

from tests.hubserver import HubRepo, StandInHub, files_from_folder

ALLOWED_TOKEN = "hf_stand_in_allowed_token"
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"

# Files of org/tiny that a download must never request.
FORBIDDEN_FILES = {
    "pytorch_model.bin": b"\x80\x04pickle weights",
    "training_args.bin": b"\x80\x04pickle",
    "optimizer.pt": b"\x80\x04pickle",
    "modeling_custom.py": b"import os\nos.system('echo pwned')\n",
    "consolidated.safetensors": b"duplicate weights mlx-lm never loads",
    "original/model.safetensors": b"a subfolder copy",
    "onnx/config.json": b"{}",
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
}


def tiny_repo_files(tiny_model: Path) -> dict[str, bytes]:
    return {
        **files_from_folder(tiny_model),
        "README.md": b"---\nlicense: apache-2.0\n---\n# tiny\nA tiny random llama for tests.\n",
        "chat_template.jinja": CHAT_TEMPLATE.encode(),
        **FORBIDDEN_FILES,
    }


def add_standard_repos(hub: StandInHub, tiny_model: Path) -> None:
    """org/tiny (loadable, with files that must not be fetched), org/pickle-only,
    org/hostile (unsafe names), org/gated (needs ALLOWED_TOKEN), and an MLX repo."""
    tiny = tiny_repo_files(tiny_model)
    hub.add_repo(HubRepo("org/tiny", tiny, downloads=500, likes=7, trending_score=3,
                         last_modified="2025-03-01T00:00:00.000Z",
                         card_data={"license": "apache-2.0", "base_model": "HuggingFaceTB/SmolLM2-135M",
                                    "language": ["en"]}))
    hub.add_repo(HubRepo("org/pickle-only", {
        "config.json": tiny["config.json"], "tokenizer.json": tiny["tokenizer.json"],
        "pytorch_model.bin": b"\x80\x04pickle weights",
    }, downloads=50, likes=1, tags=["text-generation", "license:mit"], last_modified="2025-01-01T00:00:00.000Z"))
    hub.add_repo(HubRepo("org/hostile", {
        "config.json": tiny["config.json"], "model.safetensors": tiny["model.safetensors"],
        "../evil.json": b'{"evil": true}', "/abs.json": b'{"evil": true}', "C:evil.json": b"{}",
    }, downloads=5, likes=0, trending_score=99, last_modified="2024-01-01T00:00:00.000Z"))
    hub.add_repo(HubRepo("org/gated-tiny", dict(files_from_folder(tiny_model)), downloads=100, likes=30,
                         gated="manual", allowed_tokens=frozenset({ALLOWED_TOKEN}),
                         tags=["text-generation", "license:llama3"], last_modified="2025-02-01T00:00:00.000Z"))
    hub.add_repo(HubRepo("mlx-community/tiny-4bit", dict(files_from_folder(tiny_model)), downloads=80, likes=80,
                         library_name="mlx", tags=["text-generation", "mlx", "license:apache-2.0"],
                         last_modified="2025-04-01T00:00:00.000Z"))


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture
def hub(tiny_model, tmp_path, monkeypatch) -> Iterator[StandInHub]:
    """The stand-in Hub with the standard repos, and an environment pointing at
    it (see :func:`serve_hub`). tests/conftest.py imports it, so any test can ask
    for it by name."""
    yield from serve_hub(StandInHub(), tiny_model, tmp_path, monkeypatch)


def serve_hub(server: StandInHub, tiny_model: Path, tmp_path: Path, monkeypatch) -> Iterator[StandInHub]:
    """Start ``server`` with the standard repos and point everything at it: HF_ENDPOINT,
    a fresh HF_HOME under tmp_path, no token, online, and a guard that fails any
    connection to a host other than this machine. Yields the server; stops it after
    and fails the test if it recorded a protocol error. For fixtures to ``yield from``."""
    from huggingface_hub import constants

    server.start()
    add_standard_repos(server, tiny_model)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub read HF_ENDPOINT at import: point its own defaults at the
    # stand-in too, so no code path can fall back to huggingface.co.
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))

    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in _LOOPBACK:
            raise OSError(f"test tried to reach {host!r}: tests never use the network")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors, server.errors
