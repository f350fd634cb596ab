"""Downloading a model repo into the standard Hugging Face cache with
:func:`download_model`: one file at a time with ``hf_hub_download``, pinned to
the commit ``model_info`` returned, after the file policy (:mod:`.files`), gating
and free-space checks; :class:`DownloadProgress` events per file and per 1 MiB
received; a cancel check between files and per chunk; ``config.json`` last and
the ``refs/<revision>`` pointer written only once every file is in. Offline, or
with the Hub unreachable, a complete cached copy is returned instead."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable

import httpx2
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.file_download import repo_folder_name

from mlx_lora import atomic
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Event, NullReporter, Reporter, never_stop
from mlx_lora.models import hub as _package
from mlx_lora.models.hub import guard
from mlx_lora.models.hub.cache import _cached_or_none, cached_model_path
from mlx_lora.models.hub.common import _COMMIT, _check_repo_id, _check_revision, _hub_errors, _token_of, default_api, \
    hub_cache_dir, is_offline, log
from mlx_lora.models.hub.files import RemoteFile, _download_order, is_selected, repo_problems

# huggingface_hub streams files in 10 MiB chunks and calls the progress bar once
# per chunk, so that is how often we can report progress and notice a cancel: 5 s
# apart at 2 MB/s. At 1 MiB it is 0.5 s. Cost: none measurable — a 300 MB file
# through the stand-in Hub on loopback ran at a median 230 MB/s with 1 MiB chunks
# and 160 MB/s with 10 MiB (4 runs each, noisy 2-core machine).
DOWNLOAD_CHUNK_BYTES = 1024 * 1024


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
    _check_revision(revision)
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
    if not commit or not _COMMIT.fullmatch(commit):
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
    # Looked up on the package, not here: tests set `hub._free_bytes` to fake a
    # full disk, as they did when the package was one module.
    free = _package._free_bytes(cache)
    if missing > free:
        raise UserError(
            f"{repo_id} needs {_gb(missing)} in {cache} but only {_gb(free)} is free: "
            "free some space (`mlx-lora models rm …`) or point HF_HOME at a larger disk"
        )

    # See DOWNLOAD_CHUNK_BYTES. A library global, read per chunk; any value works.
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, DOWNLOAD_CHUNK_BYTES)
    job = _DownloadJob(repo_id, chosen, reporter, should_stop)
    log.info("downloading %d files (%s) of %s@%s into %s", len(chosen), _gb(job.total), repo_id, commit[:8], cache)
    # guard.pinned: an answer for another commit is refused before the library
    # files it under that commit (see guard for the headers it checks).
    with _hub_errors(repo_id, api), guard.pinned(commit):
        for f in chosen:
            job.check_stop()
            path = api.hf_hub_download(repo_id, f.name, revision=commit, cache_dir=str(cache),
                                       tqdm_class=_FileProgress.for_file(job, f.name))
            guard.check_in_cache(path, snapshot, storage, f.name)
            job.file_done(f.name)
    # Every file is in: only now does the branch/tag point at this snapshot.
    ref = revision or constants.DEFAULT_REVISION
    if ref != commit:
        atomic.write_text(storage / "refs" / ref, commit)
    return snapshot


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"
