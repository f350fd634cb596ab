"""Models on the Hugging Face Hub: search, details, download into the standard
Hugging Face cache, and the list/delete side of that cache.

Everything goes through ``huggingface_hub`` (``HfApi``, ``hf_hub_download``,
``scan_cache_dir``, ``get_token``); this module adds the policy around it:

- **Only safe, useful files.** Root-level ``model*.safetensors`` (what mlx-lm
  loads; Mistral repos also ship a duplicate ``consolidated.safetensors``),
  JSON, tokenizer files, chat templates and the README. Never pickle
  (``.bin/.pt/.pth/.pkl/.ckpt``) or code (``.py``). A repo with no safetensors
  weights, or whose file list holds a name that could escape the cache
  (``..``, absolute, drive letter), is refused before anything is downloaded.
- **One file at a time with ``hf_hub_download``, pinned to the commit** that
  ``model_info`` returned. We need that file list anyway for the checks above;
  downloading file by file gives per-file progress events (``snapshot_download``
  only reports one aggregate byte count) and a cancel check between files.
  ``config.json`` comes last and the ``refs/<revision>`` pointer is written only
  when every file is in, so a snapshot with a config.json that a ref points to
  is a complete one: an interrupted download is never mistaken for a model.
- **Partial files are never used.** huggingface_hub writes each blob to a
  process-unique ``*.incomplete`` file, deletes it on any error (our
  :class:`~mlx_lora.errors.Cancelled` included) and renames it into place only
  when its size matches.
- **Environment read per call.** ``huggingface_hub`` reads ``HF_HOME``,
  ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` once, at import; we read them again on
  every call (falling back to its values), so settings changed later — by the
  app, or by tests — apply.
- **The token** comes from huggingface_hub (``HF_TOKEN``, then its token store).
  It is never logged, and any library text that goes into a message is scrubbed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import logging
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Iterator

import httpx2
from huggingface_hub import HfApi, constants, get_token, scan_cache_dir
from huggingface_hub.errors import (
    CacheNotFound,
    GatedRepoError,
    HFValidationError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import validate_repo_id

import mlx_lora
from mlx_lora import atomic
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Event, NullReporter, Reporter, never_stop

log = logging.getLogger(__name__)

# Root-level files a download fetches (fnmatch patterns). mlx-lm loads weights
# from `model*.safetensors` only (mlx_lm.utils.load_model globs that).
ALLOW_PATTERNS = (
    "model*.safetensors",
    "*.json",
    "tokenizer.model",
    "tiktoken.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
    "README.md",
)
# Never fetched, whatever a pattern says: pickle weights can run code when
# loaded, and .py files are remote code.
NEVER_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".py")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

SORTS = {"downloads": "downloads", "likes": "likes", "trending": "trending_score", "recent": "last_modified"}
_SEARCH_FIELDS = ["downloads", "likes", "gated", "lastModified", "tags", "library_name", "pipeline_tag",
                  "safetensors", "cardData"]

# huggingface_hub streams files in 10 MiB chunks and calls the progress bar once
# per chunk, so that is how often we can report progress and notice a cancel: 5 s
# apart at 2 MB/s. At 1 MiB it is 0.5 s. Cost: none measurable — a 300 MB file
# through the stand-in Hub on loopback ran at a median 230 MB/s with 1 MiB chunks
# and 160 MB/s with 10 MiB (4 runs each, noisy 2-core machine).
DOWNLOAD_CHUNK_BYTES = 1024 * 1024

# bytes per element of the safetensors dtypes the Hub reports in `safetensors.parameters`
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
                "F8_E8M0": 1, "F4": 0.5}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# ---- events and records ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DownloadProgress(Event):
    """Bytes of one file (``bytes_done``/``bytes_total``, 0 = unknown) and of the
    whole download (``repo_bytes_*``). Sent when a file starts, per received
    chunk (1 MiB), and when it is in place; already cached files jump to done."""

    repo_id: str
    filename: str
    bytes_done: int
    bytes_total: int
    repo_bytes_done: int = 0
    repo_bytes_total: int = 0


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """One search result. ``params`` is the Hub's safetensors element count (for
    quantised MLX repos that counts packed integers, not weights); ``size_bytes``
    is the weights' size computed from the same data."""

    repo_id: str
    downloads: int
    likes: int
    params: int | None
    size_bytes: int | None
    license: str | None
    gated: bool
    is_mlx: bool
    last_modified: datetime | None


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None  # bytes


@dataclasses.dataclass(frozen=True)
class ModelDetails:
    """What the Hub says about one repo, and what a download would do with it.
    ``problems`` lists why :func:`download_model` would refuse it (empty = fine)."""

    repo_id: str
    commit: str | None
    files: tuple[RemoteFile, ...]
    download_files: tuple[RemoteFile, ...]
    download_bytes: int
    license: str | None
    gated: bool
    params: int | None
    size_bytes: int | None
    is_mlx: bool
    last_modified: datetime | None
    card_summary: str | None
    problems: tuple[str, ...]

    @property
    def can_download(self) -> bool:
        return not self.problems


@dataclasses.dataclass(frozen=True)
class CachedModel:
    """A model repo in the Hugging Face cache. ``path`` is the snapshot folder of
    its ``main`` ref (or its newest revision); ``complete`` says whether that
    folder is a whole model (an interrupted download leaves it incomplete)."""

    repo_id: str
    size_bytes: int
    path: Path | None
    last_accessed: datetime
    last_modified: datetime
    revisions: int
    complete: bool


# ---- environment ---------------------------------------------------------


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


# ---- search and details --------------------------------------------------


def _license(info) -> str | None:
    for tag in info.tags or []:
        if tag.startswith("license:"):
            return tag.split(":", 1)[1]
    card = info.card_data
    value = getattr(card, "license", None) if card is not None else None
    return value if isinstance(value, str) else None


def _params_and_size(info) -> tuple[int | None, int | None]:
    st = info.safetensors
    if not st:
        return None, None
    size = sum(int(count * _DTYPE_BYTES[dtype]) for dtype, count in st.parameters.items() if dtype in _DTYPE_BYTES)
    return int(st.total), size or None


def _is_mlx(info) -> bool:
    return (info.library_name == "mlx" or info.id.startswith("mlx-community/") or "mlx" in (info.tags or []))


def _summary(info) -> ModelSummary:
    params, size = _params_and_size(info)
    return ModelSummary(
        repo_id=info.id,
        downloads=info.downloads or 0,
        likes=info.likes or 0,
        params=params,
        size_bytes=size,
        license=_license(info),
        gated=bool(info.gated),
        is_mlx=_is_mlx(info),
        last_modified=info.last_modified,
    )


def search_models(query: str, sort: str = "downloads", limit: int = 30, api: HfApi | None = None) -> list[ModelSummary]:
    """Text-generation models whose id contains ``query``, best first by ``sort``
    (``downloads``, ``likes``, ``trending`` or ``recent``)."""
    if sort not in SORTS:
        raise UserError(f"unknown sort {sort!r}: use one of {', '.join(SORTS)}")
    if limit < 1:
        raise UserError("the search limit must be at least 1")
    if is_offline():
        raise _offline_error("searching models")
    api = api or default_api()
    with _hub_errors(None, api):
        infos = api.list_models(search=query or None, filter="text-generation", sort=SORTS[sort],
                                limit=limit, expand=_SEARCH_FIELDS)
        return [_summary(info) for info in infos]


def mlx_conversion_hint(repo_id: str) -> str | None:
    """What to do with a checkpoint that is not an MLX conversion (None for MLX repos)."""
    org, _, name = repo_id.partition("/")
    if org == "mlx-community" or name.lower().endswith("-mlx") or "-mlx-" in name.lower():
        return None
    return (
        f"{repo_id} is not an MLX conversion. It loads as it is when mlx-lm supports its architecture; "
        f"an MLX version downloads smaller and loads faster: look for mlx-community/{name} "
        f"(for example mlx-community/{name}-4bit), or convert it with "
        f"`mlx_lm.convert --hf-path {repo_id} -q`."
    )


def _unsafe_name(name: str) -> bool:
    """True for a repo file name that could land outside the cache folder."""
    if not name or "\x00" in name or name.startswith(("/", "\\")):
        return True
    win = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or win.is_absolute() or win.drive:
        return True
    return ".." in name.replace("\\", "/").split("/")


def is_selected(name: str) -> bool:
    """Whether a download fetches this repo file (see ALLOW_PATTERNS)."""
    if "/" in name or "\\" in name or name.lower().endswith(NEVER_SUFFIXES):
        return False
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOW_PATTERNS)


def repo_problems(repo_id: str, names: list[str]) -> list[str]:
    """Why a repo with these files cannot be downloaded (empty list: it can)."""
    unsafe = [n for n in names if _unsafe_name(n)]
    if unsafe:
        shown = ", ".join(repr(n) for n in unsafe[:3])
        return [f"{repo_id} lists files with unsafe names ({shown}) that could write outside the cache; "
                "it is not downloaded"]
    problems = []
    root = [n for n in names if "/" not in n]
    if not any(fnmatch.fnmatchcase(n, "model*.safetensors") for n in root):
        if any(n.lower().endswith(PICKLE_SUFFIXES) for n in names):
            problems.append(
                f"{repo_id} has only pickle weights (.bin/.pt), which can run code when loaded; only safetensors "
                "models are downloaded. Look for a safetensors or MLX version (mlx-community/…) of this model."
            )
        elif any(n.lower().endswith(".gguf") for n in names):
            problems.append(f"{repo_id} has GGUF files only: download one and run `mlx-lora models import-gguf FILE`")
        else:
            problems.append(f"{repo_id} has no model*.safetensors weights that mlx-lm can load")
    if "config.json" not in root:
        problems.append(f"{repo_id} has no config.json, so it is not a model mlx-lm can load")
    return problems


def _card_summary(info) -> str | None:
    card = info.card_data
    if card is None:
        return None
    parts = []
    for label, key in (("base model", "base_model"), ("languages", "language"), ("datasets", "datasets")):
        value = getattr(card, key, None)
        if value:
            parts.append(f"{label}: {', '.join(value) if isinstance(value, list) else value}")
    return "; ".join(parts) or None


def _download_order(files: list[RemoteFile]) -> list[RemoteFile]:
    # config.json last: a snapshot that has it was downloaded to the end
    return sorted(files, key=lambda f: (f.name == "config.json", f.name))


def model_details(repo_id: str, revision: str | None = None, api: HfApi | None = None) -> ModelDetails:
    """Files (with sizes), license, gating and size of a repo, and which files a
    download would fetch."""
    _check_repo_id(repo_id)
    if is_offline():
        raise _offline_error(f"details of {repo_id}")
    api = api or default_api()
    with _hub_errors(repo_id, api):
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    files = tuple(RemoteFile(s.rfilename, s.size) for s in info.siblings or [])
    problems = tuple(repo_problems(repo_id, [f.name for f in files]))
    chosen = () if problems else tuple(_download_order([f for f in files if is_selected(f.name)]))
    params, size = _params_and_size(info)
    return ModelDetails(
        repo_id=repo_id,
        commit=info.sha,
        files=files,
        download_files=chosen,
        download_bytes=sum(f.size or 0 for f in chosen),
        license=_license(info),
        gated=bool(info.gated),
        params=params,
        size_bytes=size,
        is_mlx=_is_mlx(info),
        last_modified=info.last_modified,
        card_summary=_card_summary(info),
        problems=problems,
    )


# ---- download ------------------------------------------------------------


class _FileProgress:
    """Just enough of a tqdm bar for huggingface_hub's ``http_get``/``xet_get``:
    each ``update(n)`` becomes a :class:`DownloadProgress` event and a cancel
    check. Raising :class:`Cancelled` here unwinds ``hf_hub_download``, which
    deletes its ``.incomplete`` file. Subclassed per file by :meth:`for_file`."""

    job: "_DownloadJob"
    filename: str

    @classmethod
    def for_file(cls, job: "_DownloadJob", filename: str) -> type["_FileProgress"]:
        # A class, not a closure: huggingface_hub looks for `update_transfer` on
        # the class to route Xet's transfer bytes through one bar.
        return type("FileProgress", (cls,), {"job": job, "filename": filename})

    def __init__(self, *args, total: int | None = None, initial: int = 0, **kwargs) -> None:
        self.total = total
        self.n = initial
        self.job.file_bytes(self.filename, self.n, total)

    def update(self, n: int | float | None = 1) -> None:
        self.n += int(n or 0)
        self.job.file_bytes(self.filename, max(self.n, 0), self.total)
        self.job.check_stop()

    def update_transfer(self, n: int | float | None = 1) -> None:
        self.job.check_stop()

    def __enter__(self) -> "_FileProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def close(self) -> None:
        pass

    def refresh(self, *args, **kwargs) -> None:
        pass

    def set_postfix_str(self, *args, **kwargs) -> None:
        pass

    set_transfer_postfix_str = set_description = set_description_str = set_postfix_str


class _DownloadJob:
    def __init__(self, repo_id: str, files: list[RemoteFile], reporter: Reporter, should_stop: Callable[[], bool]):
        self.repo_id = repo_id
        self.reporter = reporter
        self.should_stop = should_stop
        self.sizes = {f.name: f.size or 0 for f in files}
        self.total = sum(self.sizes.values())
        self.finished = 0  # bytes of files already in place
        self._last: DownloadProgress | None = None

    def check_stop(self) -> None:
        if self.should_stop():
            raise Cancelled(f"download of {self.repo_id} cancelled")

    def _emit(self, event: DownloadProgress) -> None:
        if event != self._last:
            self._last = event
            self.reporter.emit(event)

    def file_bytes(self, filename: str, done: int, total: int | None) -> None:
        total = total or self.sizes.get(filename, 0)
        self._emit(DownloadProgress(self.repo_id, filename, done, total, self.finished + done, self.total))

    def file_done(self, filename: str) -> None:
        size = self.sizes[filename]
        self._emit(DownloadProgress(self.repo_id, filename, size, size, self.finished + size, self.total))
        self.finished += size


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def download_model(
    repo_id: str,
    revision: str | None = None,
    reporter: Reporter = NullReporter(),
    should_stop: Callable[[], bool] = never_stop,
    api: HfApi | None = None,
) -> Path:
    """Download a model repo into the Hugging Face cache and return its snapshot
    folder. Offline (``HF_HUB_OFFLINE``) or with the Hub unreachable, a complete
    cached copy is returned instead. Raises :class:`Cancelled` when
    ``should_stop()`` turns true (checked per file and per 1 MiB received)."""
    _check_repo_id(repo_id)
    if is_offline():
        return cached_model_path(repo_id, revision)
    api = api or default_api()
    with _hub_errors(repo_id, api):
        try:
            info = api.model_info(repo_id, revision=revision, files_metadata=True)
        except (httpx2.TransportError, OfflineModeIsEnabled) as exc:
            cached = _cached_or_none(repo_id, revision)
            if cached is None:
                raise
            log.warning("cannot reach the Hub (%s); using the downloaded copy of %s", type(exc).__name__, repo_id)
            return cached
    commit = info.sha
    if not commit or not _COMMIT.match(commit):
        raise UserError(f"{repo_id}: the Hub did not say which commit to download; try again later")

    files = [RemoteFile(s.rfilename, s.size) for s in info.siblings or []]
    problems = repo_problems(repo_id, [f.name for f in files])
    if problems:
        raise UserError(problems[0])
    if info.gated and not _token_of(api):
        raise UserError(
            f"{repo_id} is gated: accept its terms at {api.endpoint}/{repo_id} while logged in to the Hub, "
            "then log in with `hf auth login` or set HF_TOKEN"
        )
    chosen = _download_order([f for f in files if is_selected(f.name)])

    cache = hub_cache_dir()
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    snapshot = storage / "snapshots" / commit
    missing = sum(f.size or 0 for f in chosen if not (snapshot / f.name).exists())
    free = _free_bytes(cache)
    if missing > free:
        raise UserError(
            f"{repo_id} needs {_gb(missing)} in {cache} but only {_gb(free)} is free: "
            "free some space (`mlx-lora models rm …`) or point HF_HOME at a larger disk"
        )

    # See DOWNLOAD_CHUNK_BYTES. A library global, read per chunk; any value works.
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, DOWNLOAD_CHUNK_BYTES)
    job = _DownloadJob(repo_id, chosen, reporter, should_stop)
    log.info("downloading %d files (%s) of %s@%s into %s", len(chosen), _gb(job.total), repo_id, commit[:8], cache)
    with _hub_errors(repo_id, api):
        for f in chosen:
            job.check_stop()
            api.hf_hub_download(repo_id, f.name, revision=commit, cache_dir=str(cache),
                                tqdm_class=_FileProgress.for_file(job, f.name))
            job.file_done(f.name)
    # Every file is in: only now does the branch/tag point at this snapshot.
    ref = revision or constants.DEFAULT_REVISION
    if ref != commit:
        atomic.write_text(storage / "refs" / ref, commit)
    return snapshot


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# ---- the cache -----------------------------------------------------------


def _snapshot_complete(folder: Path) -> bool:
    """A snapshot folder holding a whole model: config.json (downloaded last) and
    all its safetensors shards, every link resolving to a blob."""
    if not (folder / "config.json").is_file():
        return False
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return bool(shards) and all((folder / shard).is_file() for shard in shards)
    return any(p.is_file() for p in folder.glob("model*.safetensors"))


def _storage(repo_id: str) -> Path:
    return hub_cache_dir() / repo_folder_name(repo_id=repo_id, repo_type="model")


def cached_model_path(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of a fully downloaded repo, without any network use.
    ``revision`` None means ``main``, else the newest complete snapshot."""
    _check_repo_id(repo_id)
    storage = _storage(repo_id)
    ref = revision or constants.DEFAULT_REVISION
    candidates: list[Path] = []
    if _COMMIT.match(ref):
        candidates.append(storage / "snapshots" / ref)
    elif (storage / "refs" / ref).is_file():
        candidates.append(storage / "snapshots" / (storage / "refs" / ref).read_text().strip())
    if revision is None and (storage / "snapshots").is_dir():
        others = [p for p in (storage / "snapshots").iterdir() if p.is_dir() and p not in candidates]
        candidates += sorted(others, key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in candidates:
        if _snapshot_complete(folder):
            return folder
    what = f"{repo_id}@{revision}" if revision else repo_id
    if is_offline():
        raise UserError(
            f"{what} is not downloaded (no complete copy in {hub_cache_dir()}) and HF_HUB_OFFLINE is set: "
            f"unset HF_HUB_OFFLINE and run `mlx-lora models download {repo_id}`"
        )
    raise UserError(f"{what} is not downloaded (no complete copy in {hub_cache_dir()}): "
                    f"run `mlx-lora models download {repo_id}`")


def _cached_or_none(repo_id: str, revision: str | None) -> Path | None:
    try:
        return cached_model_path(repo_id, revision)
    except UserError:
        return None


def _scan():
    try:
        info = scan_cache_dir(hub_cache_dir())
    except CacheNotFound:
        return None
    for warning in info.warnings:
        log.debug("cache scan: %s", warning)
    return info


def _main_snapshot(repo) -> Path | None:
    refs = repo.refs
    if constants.DEFAULT_REVISION in refs:
        return refs[constants.DEFAULT_REVISION].snapshot_path
    revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
    return revisions[0].snapshot_path if revisions else None


def list_cached() -> list[CachedModel]:
    """Model repos in the Hugging Face cache, by repo id."""
    info = _scan()
    if info is None:
        return []
    out = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        path = _main_snapshot(repo)
        out.append(CachedModel(
            repo_id=repo.repo_id,
            size_bytes=repo.size_on_disk,
            path=path,
            last_accessed=datetime.fromtimestamp(repo.last_accessed, tz=timezone.utc),
            last_modified=datetime.fromtimestamp(repo.last_modified, tz=timezone.utc),
            revisions=len(repo.revisions),
            complete=path is not None and _snapshot_complete(path),
        ))
    return sorted(out, key=lambda m: m.repo_id.lower())


def delete_cached(repo_id: str) -> int:
    """Remove every revision of a repo from the cache; returns the bytes freed."""
    _check_repo_id(repo_id)
    storage = _storage(repo_id)
    info = _scan()
    repo = next((r for r in info.repos if r.repo_type == "model" and r.repo_id == repo_id), None) if info else None
    if repo is None and not storage.exists():
        raise UserError(f"{repo_id} is not in the Hugging Face cache ({hub_cache_dir()})")
    freed = 0
    if repo is not None and repo.revisions:
        strategy = info.delete_revisions(*(r.commit_hash for r in repo.revisions))
        freed = strategy.expected_freed_size
        strategy.execute()
    if storage.exists():
        # what the strategy does not cover: a repo with no snapshot yet (a first
        # download that was cancelled), leftover .incomplete blobs
        freed += sum(p.stat().st_size for p in storage.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(storage)
    return freed
