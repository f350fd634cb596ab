"""Which files of a Hub repo a download takes, and which repos it refuses:
root-level ``model*.safetensors``, JSON, tokenizer files, chat templates and the
README are fetched; pickle weights and code never are; a repo with no
safetensors weights or config.json, or whose file list holds a name that could
escape the cache, is refused before anything is downloaded. Both
:mod:`.search` (details: what a download would do) and :mod:`.download` apply
this policy."""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import PurePosixPath, PureWindowsPath

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


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int | None  # bytes


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


def _download_order(files: list[RemoteFile]) -> list[RemoteFile]:
    # config.json last: a snapshot that has it was downloaded to the end
    return sorted(files, key=lambda f: (f.name == "config.json", f.name))
