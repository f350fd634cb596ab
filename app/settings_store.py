"""The user's settings that the engine needs: the Hugging Face token and folders.

No Qt here (it belongs in ``mlx_lora``, e.g. ``mlx_lora/settings.py``, and will
move there). The token is kept in the system keychain through ``keyring`` when
that package is installed, otherwise in ``<home>/hub_token`` with mode 0600.
It is never logged and only ever shown masked (``hf_…wxyz``). Folders are kept
in ``<home>/settings.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mlx_lora import paths

KEYRING_SERVICE = "mlx-lora-studio"
KEYRING_USER = "huggingface-token"


def _keyring():
    try:
        import keyring  # optional
    except ImportError:
        return None
    return keyring


def _token_file() -> Path:
    return paths.home() / "hub_token"


def token_storage() -> str:
    """Where the token is kept, in words for the settings dialog."""
    return "the system keychain" if _keyring() else f"{_token_file()} (readable only by you)"


def load_token() -> str | None:
    kr = _keyring()
    if kr is not None:
        try:
            token = kr.get_password(KEYRING_SERVICE, KEYRING_USER)
        except Exception:  # noqa: BLE001 — a locked or missing keychain: fall back to the file
            token = None
        if token:
            return token
    path = _token_file()
    if path.is_file():
        return path.read_text(encoding="utf-8").strip() or None
    return None


def save_token(token: str | None) -> None:
    """Store ``token`` (or forget it when empty)."""
    token = (token or "").strip()
    kr = _keyring()
    if kr is not None:
        try:
            if token:
                kr.set_password(KEYRING_SERVICE, KEYRING_USER, token)
            else:
                try:
                    kr.delete_password(KEYRING_SERVICE, KEYRING_USER)
                except Exception:  # noqa: BLE001 — nothing stored
                    pass
            _token_file().unlink(missing_ok=True)
            return
        except Exception:  # noqa: BLE001 — keychain unavailable: use the file
            pass
    path = _token_file()
    if not token:
        path.unlink(missing_ok=True)
        return
    # Create with 0600 from the start, so the token is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token)
    os.chmod(path, 0o600)


def mask_token(token: str | None) -> str:
    """``hf_…wxyz``: enough to recognise a token, never enough to use it."""
    if not token:
        return ""
    if len(token) <= 8:
        return "•" * len(token)
    return f"{token[:3]}…{token[-4:]}"


@dataclass
class Folders:
    """Empty means the default (``HF_HOME``'s hub cache, ``mlx_lora.paths.runs_dir()``)."""

    hub_cache: str = ""
    runs: str = ""


def _settings_file() -> Path:
    return paths.home() / "settings.json"


def load_folders() -> Folders:
    try:
        data = json.loads(_settings_file().read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return Folders()
    known = Folders.__dataclass_fields__
    return Folders(**{k: str(v) for k, v in data.get("folders", {}).items() if k in known})


def save_folders(folders: Folders) -> None:
    path = _settings_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        data = {}
    data["folders"] = asdict(folders)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    tmp.replace(path)


def default_hub_cache() -> str:
    hf_home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return os.environ.get("HF_HUB_CACHE") or str(Path(hf_home) / "hub")


def apply_to_environment() -> None:
    """Make the stored token and cache folder visible to huggingface_hub and to the
    training child. Call at start-up, before huggingface_hub is imported (it reads
    ``HF_HUB_CACHE`` once, at import)."""
    folders = load_folders()
    if folders.hub_cache:
        os.environ["HF_HUB_CACHE"] = folders.hub_cache
    token = load_token()
    if token and "HF_TOKEN" not in os.environ:
        os.environ["HF_TOKEN"] = token
