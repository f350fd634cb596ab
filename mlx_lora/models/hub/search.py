"""Searching the Hub and describing one repo: :func:`search_models` (text
generation models, sorted by downloads, likes, trending or recency) returns
:class:`ModelSummary` records, :func:`model_details` returns a repo's files,
license, gating and size together with what a download would fetch and why it
would be refused (:class:`ModelDetails`), and :func:`mlx_conversion_hint` says
what to do with a checkpoint that is not an MLX conversion."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from huggingface_hub import HfApi

from mlx_lora.errors import UserError
from mlx_lora.models.hub.common import _check_repo_id, _hub_errors, _offline_error, _unreachable_error, default_api, \
    hub_reachable, is_offline
from mlx_lora.models.hub.files import RemoteFile, _download_order, is_selected, repo_problems

SORTS = {"downloads": "downloads", "likes": "likes", "trending": "trending_score", "recent": "last_modified"}
_SEARCH_FIELDS = ["downloads", "likes", "gated", "lastModified", "tags", "library_name", "pipeline_tag",
                  "safetensors", "cardData"]

# bytes per element of the safetensors dtypes the Hub reports in `safetensors.parameters`
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
                "F8_E8M0": 1, "F4": 0.5}


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
    if not hub_reachable(api.endpoint):  # in a second, rather than after the client's ~35 s of retries
        raise _unreachable_error(api.endpoint)
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
