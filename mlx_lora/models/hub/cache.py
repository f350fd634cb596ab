"""The list/delete side of the Hugging Face cache, without any network use:
:func:`cached_model_path` finds the snapshot folder of a complete download,
:func:`list_cached` lists the model repos in the cache (:class:`CachedModel`)
and :func:`delete_cached` removes one with all its revisions and leftovers. A
snapshot counts as complete only when its config.json (downloaded last) and all
its safetensors shards are there."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from huggingface_hub import constants, scan_cache_dir
from huggingface_hub.errors import CacheNotFound
from huggingface_hub.file_download import repo_folder_name

from mlx_lora.errors import UserError
from mlx_lora.models.hub.common import _COMMIT, _check_repo_id, _check_revision, hub_cache_dir, is_offline, log

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


def _read_ref(path: Path) -> str | None:
    """The commit a ``refs/<revision>`` file names, or None. Content that is not
    a commit hash (``../../elsewhere``, written by a hostile endpoint or by hand)
    is never used as a snapshot path: it could point outside the cache."""
    try:
        content = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not _COMMIT.fullmatch(content):
        log.warning("ignoring %s: it holds %r, not a commit hash", path, content[:60])
        return None
    return content


def cached_model_path(repo_id: str, revision: str | None = None) -> Path:
    """The snapshot folder of a fully downloaded repo, without any network use.
    ``revision`` None means ``main``, else the newest complete snapshot."""
    _check_repo_id(repo_id)
    _check_revision(revision)
    storage = _storage(repo_id)
    ref = revision or constants.DEFAULT_REVISION
    candidates: list[Path] = []
    if _COMMIT.fullmatch(ref):
        candidates.append(storage / "snapshots" / ref)
    elif (commit := _read_ref(storage / "refs" / ref)) is not None:
        candidates.append(storage / "snapshots" / commit)
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
