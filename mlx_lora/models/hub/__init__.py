"""Models on the Hugging Face Hub: search, details, download into the standard
Hugging Face cache, and the list/delete side of that cache.

Everything goes through ``huggingface_hub`` (``HfApi``, ``hf_hub_download``,
``scan_cache_dir``, ``get_token``); this package adds the policy around it:

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
- **The server's headers are checked before they become paths.** huggingface_hub
  files blobs under the ``ETag`` and snapshots under ``X-Repo-Commit`` without
  checking them; :mod:`.guard` hooks its HTTP client so an answer whose headers
  are not hex digests (or name another commit than the one pinned) is refused
  before anything is written, and checks that every downloaded file lies inside
  the repo's storage. ``refs/*`` content that is not a commit hash is ignored.
- **The token** comes from huggingface_hub (``HF_TOKEN``, then its token store).
  It is never logged, and any library text that goes into a message is scrubbed.

Modules: :mod:`.common` (environment, endpoint, token, error messages),
:mod:`.guard` (what the server's headers may say),
:mod:`.files` (which files a download takes, which repos it refuses),
:mod:`.search` (search and details), :mod:`.download` (download with progress
and cancel), :mod:`.cache` (find, list and delete cached models). Import from
the package; the names below are its interface.
"""

from __future__ import annotations

from mlx_lora.models.hub.cache import CachedModel, _snapshot_complete, cached_model_path, delete_cached, list_cached
from mlx_lora.models.hub.common import HubUnreachable, _hub_errors, default_api, hub_cache_dir, hub_endpoint, \
    hub_reachable, is_offline
from mlx_lora.models.hub.download import DOWNLOAD_CHUNK_BYTES, DownloadProgress, _free_bytes, download_model
from mlx_lora.models.hub.files import ALLOW_PATTERNS, NEVER_SUFFIXES, PICKLE_SUFFIXES, RemoteFile, is_selected, \
    repo_problems
from mlx_lora.models.hub.search import SORTS, ModelDetails, ModelSummary, mlx_conversion_hint, model_details, \
    search_models

# `_free_bytes`, `_hub_errors` and `_snapshot_complete` are private, but tests use
# them through the package (download_model looks `_free_bytes` up here).
__all__ = [
    "ALLOW_PATTERNS", "DOWNLOAD_CHUNK_BYTES", "NEVER_SUFFIXES", "PICKLE_SUFFIXES", "SORTS",
    "CachedModel", "DownloadProgress", "HubUnreachable", "hub_reachable", "ModelDetails", "ModelSummary", "RemoteFile",
    "cached_model_path", "default_api", "delete_cached", "download_model", "hub_cache_dir", "hub_endpoint",
    "is_offline", "is_selected", "list_cached", "mlx_conversion_hint", "model_details", "repo_problems",
    "search_models",
]
