"""What every part of the Hub layer shares: the environment read per call
(``HF_HUB_OFFLINE``, the cache folder, ``HF_ENDPOINT``), the ``HfApi`` built
from it and the token, repo id validation, and the translation of
huggingface_hub and network exceptions into :class:`UserError` messages that
say what to do and never contain the token. Also the package's logger."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

import mlx_lora
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.models.hub import guard

# One logger for the whole package, named as it was when the package was one
# module, so `logging`/caplog settings for "mlx_lora.models.hub" keep applying.
log = logging.getLogger(__package__)

_COMMIT = guard.COMMIT


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in constants.ENV_VARS_TRUE_VALUES


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), read now."""
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return _truthy(env) if env is not None else constants.HF_HUB_OFFLINE


def hub_cache_dir() -> Path:
    """The Hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, read now."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def default_api() -> HfApi:
    """An ``HfApi`` for the endpoint and token configured now."""
    return HfApi(endpoint=hub_endpoint(), token=get_token(), library_name="mlx-lora-studio",
                 library_version=mlx_lora.__version__)


def _token_of(api: HfApi) -> str | None:
    return api.token if isinstance(api.token, str) else get_token()


def _scrub(text: str, token: str | None) -> str:
    """``text`` with the token (if any) masked: library messages go into ours."""
    return text.replace(token, "***") if token else text


def _check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"{repo_id!r} is not a Hub repository id (expected org/name)") from None
    if repo_id.count("/") != 1:
        raise UserError(f"{repo_id!r} is not a Hub repository id (expected org/name)")


def _check_revision(revision: str | None) -> None:
    """A branch, tag or commit name that stays inside ``refs/`` when used as a
    path there (``refs/pr/1`` is one; ``../x`` or ``/x`` is not)."""
    if revision is None:
        return
    parts = revision.split("/")
    if (not revision or "\\" in revision or "\x00" in revision or revision.startswith("/")
            or any(p in ("", ".", "..") for p in parts)):
        raise UserError(f"{revision!r} is not a revision name (a branch, tag or commit)")


REACHABLE_TIMEOUT_S = 1.0  # a reachable Hub opens a connection in well under this (~50-300 ms)


class HubUnreachable(UserError):
    """No connection to the Hub could be opened: the machine is offline (or the Hub is down)."""


def hub_reachable(endpoint: str | None = None, timeout: float = REACHABLE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub's host opens within ``timeout`` seconds, name lookup
    included — asked before a search, because offline huggingface_hub's own retries take ~35 s
    (five attempts with back-off) before it gives up. The probe runs in a daemon thread so a
    resolver that hangs cannot hold the caller longer than ``timeout``. With a proxy configured
    the direct connection says nothing, so the answer is True (the request itself will tell)."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                             "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(endpoint or hub_endpoint())
    if not url.hostname:
        return True  # not a URL we can probe: let the request say what is wrong
    port = url.port or (443 if url.scheme == "https" else 80)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((url.hostname, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="hub-reachability", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def _unreachable_error(endpoint: str) -> HubUnreachable:
    return HubUnreachable(f"offline — cannot reach the Hugging Face Hub at {endpoint}; local models and the "
                          "demo still work")


def _offline_error(what: str) -> UserError:
    return UserError(f"{what} needs the Hugging Face Hub, but HF_HUB_OFFLINE is set; unset it to go online")


@contextlib.contextmanager
def _hub_errors(repo_id: str | None, api: HfApi) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions into UserErrors that say what
    to do. Messages never include the token."""
    endpoint = api.endpoint
    name = repo_id or "the Hub"
    login = "log in with `hf auth login` or set HF_TOKEN"
    try:
        guard.install()  # every Hub request of ours passes through here
        yield
    except (UserError, Cancelled):
        raise
    except GatedRepoError:
        raise UserError(
            f"{repo_id} is gated: accept its terms at {endpoint}/{repo_id} while logged in to the Hub, "
            f"then {login} (with a token of that account)"
        ) from None
    except RepositoryNotFoundError:
        raise UserError(
            f"{repo_id}: no such model on the Hub. If it is private, {login}."
        ) from None
    except RevisionNotFoundError:
        raise UserError(f"{repo_id}: the Hub has no such revision (branch, tag or commit)") from None
    except RemoteEntryNotFoundError as exc:
        detail = _scrub(str(exc).splitlines()[-1], _token_of(api))
        raise UserError(f"{repo_id}: a listed file is missing on the Hub ({detail})") from None
    except OfflineModeIsEnabled:
        raise _offline_error(f"{name}") from None
    except LocalEntryNotFoundError as exc:
        # hf_hub_download: the file's metadata request failed and it is not cached
        raise UserError(
            f"lost the connection to the Hub at {endpoint} while downloading {name} "
            f"({type(exc.__cause__ or exc).__name__}); run the download again: finished files are kept"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            raise UserError(f"the Hub rejected the token (401) for {name}: {login} again") from None
        if status == 403:
            raise UserError(f"the Hub refused access to {name} (403): check your token's permissions") from None
        if status == 429:
            raise UserError(f"the Hub is rate-limiting requests (429) for {name}: try again in a few minutes") from None
        raise UserError(f"the Hub answered {status} for {name}: try again later") from None
    except httpx2.TransportError as exc:
        raise UserError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}): check the connection, "
            "or set HF_HUB_OFFLINE=1 to use downloaded models only"
        ) from None
    except OSError as exc:
        # e.g. huggingface_hub's size check after a broken transfer, or a full disk
        raise UserError(f"downloading {name} failed: {_scrub(str(exc), _token_of(api))}") from None
