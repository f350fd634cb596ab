"""What a Hub endpoint's answers may say before huggingface_hub turns them into
paths: a response hook on the library's HTTP client (:func:`install`) that
refuses, with a :class:`UserError`, any answer whose ``X-Repo-Commit`` is not a
40-hex commit hash (or, inside :func:`pinned`, not the commit asked for), whose
``X-Linked-Etag``/``X-Xet-Hash`` is not a hex digest, or whose file-metadata
``ETag`` is not one — before the library reads the headers. And
:func:`check_in_cache`, which checks afterwards that a downloaded file is a
link from the pinned snapshot to a blob inside the repo's storage.

Why: huggingface_hub 2.4 (``file_download.py``) builds ``blobs/<etag>``,
``.locks/…/<etag>.lock``, ``snapshots/<commit>/…``, ``refs/<revision>`` content
and ``.no_exist/<commit>/<file>`` from these headers unchecked, so an endpoint
answering ``ETag: "../../…/site-packages/x.pth"`` wrote a ``.pth`` file that
Python ran at its next start (tests/reliability/test_hostile_hub.py). A hook is
the one place every answer passes through, whichever library function asked
(``hf_hub_download``, ``snapshot_download``, ``get_hf_file_metadata``), and it
runs before the library sees the headers, so nothing is written first. A
HEAD-then-download check would not do: the server can answer the second request
differently."""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from pathlib import Path
from typing import Iterator

import httpx2
from huggingface_hub.utils import get_session

from mlx_lora.errors import UserError

COMMIT = re.compile(r"[0-9a-f]{40}")  # a full commit hash (fullmatch only)
# A git blob id (sha1, what the Hub sends for small files) or a sha256 (LFS and Xet).
_DIGEST = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_XET_HASH = re.compile(r"[0-9a-f]{64}")

_pinned_commit: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlx_lora_hub_pinned", default=None)


def _normalized_etag(value: str) -> str:
    # what huggingface_hub's _normalize_etag does with it (W/ prefix, quotes)
    return value.lstrip("W/").strip('"')


def _refuse(response: httpx2.Response, header: str, value: str, expected: str) -> UserError:
    url = response.request.url
    path = url.path
    origin = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
    filename = path.split("/resolve/", 1)[1].split("/", 1)[-1] if "/resolve/" in path else path.rsplit("/", 1)[-1]
    shown = value if len(value) <= 80 else value[:77] + "..."
    return UserError(
        f"refused {filename} from {origin}: its {header} header {shown!r} is not "
        f"{expected}, and huggingface_hub would use it as a path, possibly outside the cache; nothing was "
        "written. Check that HF_ENDPOINT points at a Hub you trust."
    )


def check_response(response: httpx2.Response) -> None:
    """The response hook: raise :class:`UserError` on headers that must not become paths."""
    headers = response.headers
    commit = headers.get("X-Repo-Commit")
    if commit is not None:
        if not COMMIT.fullmatch(commit):
            raise _refuse(response, "X-Repo-Commit", commit, "a commit hash")
        pinned = _pinned_commit.get()
        if pinned is not None and commit != pinned:
            raise _refuse(response, "X-Repo-Commit", commit, f"the commit asked for ({pinned})")
    linked = headers.get("X-Linked-Etag")
    if linked is not None and not _DIGEST.fullmatch(_normalized_etag(linked)):
        raise _refuse(response, "X-Linked-Etag", linked, "a hex digest")
    xet = headers.get("X-Xet-Hash")
    if xet is not None and not _XET_HASH.fullmatch(xet):
        raise _refuse(response, "X-Xet-Hash", xet, "a hex digest")
    # File metadata comes from HEAD /resolve/ answers (get_hf_file_metadata): there
    # the ETag (when no X-Linked-Etag) names the blob. Other answers' ETags (API
    # JSON, CDN objects) are never used as paths, and are not hex.
    file_metadata = response.request.method == "HEAD" or "/resolve/" in response.request.url.path
    etag = headers.get("ETag")
    if file_metadata and linked is None and etag is not None and not _DIGEST.fullmatch(_normalized_etag(etag)):
        raise _refuse(response, "ETag", etag, "a hex digest")


def install() -> None:
    """Make sure huggingface_hub's shared HTTP client runs :func:`check_response`.
    Idempotent; called before every Hub request we make, because the library
    builds a new client after ``close_session`` (and in every forked child)."""
    hooks = get_session().event_hooks["response"]
    if check_response not in hooks:
        hooks.append(check_response)


@contextlib.contextmanager
def pinned(commit: str) -> Iterator[None]:
    """Inside, an answer for any commit other than ``commit`` is refused."""
    token = _pinned_commit.set(commit)
    try:
        yield
    finally:
        _pinned_commit.reset(token)


def check_in_cache(path: str | os.PathLike, snapshot: Path, storage: Path, filename: str) -> Path:
    """``path`` (what ``hf_hub_download`` returned) must be ``snapshot/filename``
    and resolve to a file inside ``storage`` (a link to ``blobs/…``, or the file
    itself where links are not supported). A second line behind the hook."""
    path = Path(path)
    expected = snapshot / filename
    real = Path(os.path.realpath(path))
    if os.path.abspath(path) != os.path.abspath(expected) or Path(os.path.realpath(storage)) not in real.parents \
            or not real.is_file():
        raise UserError(f"refused {filename}: huggingface_hub put it at {path} (resolving to {real}), not at "
                        f"{expected} inside the cache. Check that HF_ENDPOINT points at a Hub you trust.")
    return path
