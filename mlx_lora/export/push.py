"""Push an export folder to the Hugging Face Hub: ``create_repo`` (private unless asked
otherwise) then ``upload_folder``, through huggingface_hub. The token comes from
huggingface_hub (``HF_TOKEN``, then its token store); it is never logged, and
library messages are scrubbed of it before they reach ours."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from mlx_lora.errors import UserError

LOGIN = "log in with `hf auth login` (a token with write access) or set HF_TOKEN"


def _scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


@contextlib.contextmanager
def _upload_errors(repo_id: str, token: str) -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            raise UserError(f"the Hub rejected the token (401) while pushing {repo_id}: {LOGIN}") from None
        if status == 403:
            raise UserError(f"the token may not write to {repo_id} (403): use a token with write access "
                            f"to {repo_id.split('/')[0]}") from None
        raise UserError(f"the Hub answered {status} while pushing {repo_id}: "
                        f"{_scrub(str(exc).splitlines()[0], token)}") from None
    except OSError as exc:  # connection problems (httpx errors are OSErrors underneath or wrap them)
        raise UserError(f"pushing {repo_id} failed: {_scrub(str(exc), token)}") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("httpx", "httpcore")):
            raise UserError(f"cannot reach the Hub to push {repo_id} ({type(exc).__name__}): check the "
                            "connection") from None
        raise


def push_folder(folder: Path, repo_id: str, *, private: bool = True, api: HfApi | None = None,
                commit_message: str = "Upload from MLX LoRA Studio") -> str:
    """Upload ``folder`` to the model repo ``repo_id`` (created if missing). Returns the
    commit's URL."""
    from mlx_lora.models.hub import default_api, is_offline
    from mlx_lora.models.hub.common import _check_repo_id

    _check_repo_id(repo_id)
    if is_offline():
        raise UserError("pushing needs the Hugging Face Hub, but HF_HUB_OFFLINE is set; unset it to push")
    api = api or default_api()
    token = api.token if isinstance(api.token, str) else get_token()
    if not token:
        raise UserError(f"pushing to the Hub needs a token: {LOGIN}")
    with _upload_errors(repo_id, token):
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", token=token,
                                 commit_message=commit_message)
    return str(info.commit_url)
