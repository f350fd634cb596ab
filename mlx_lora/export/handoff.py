"""Hand-offs of a GGUF export to the apps people run it in, without needing those apps
to write the files: :func:`modelfile` (Ollama's recipe, written beside every GGUF
export) and :func:`send_to_lmstudio` (LM Studio's models folder layout,
``<models>/<publisher>/<name>/<file>.gguf``, or an MLX folder there, written only when asked).

- Ollama's TEMPLATE is a Go template, not Jinja. The chat formats we know (ChatML, as
  SmolLM and Qwen use, and Llama 3's) get Ollama's own template for them; for any
  other the Modelfile has no TEMPLATE, and Ollama reads the GGUF's
  ``tokenizer.chat_template`` itself (it recognises the common ones). A default
  system prompt that the Jinja template inserts is found by rendering it, and becomes
  SYSTEM. The stop tokens are the chat's (``ChatSession.stop_ids``).
- LM Studio: the export's GGUF, model card and ``verification.json`` (an MLX export: its
  whole folder, which LM Studio's MLX engine runs) are copied into
  ``<models>/<publisher>/<name>/`` atomically (:func:`mlx_lora.atomic.atomic_dir`),
  where ``<models>`` is LM Studio's ``downloadsFolder`` setting when its settings file
  names one, else ``~/.lmstudio/models``. The destination rule is the export's own
  (:func:`~mlx_lora.export.destination.check_destination`): a new or empty folder or an
  earlier export of ours, never another model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from mlx_lora.errors import UserError

MODELFILE = "Modelfile"
LMSTUDIO_HOME_ENV = "LMSTUDIO_HOME"  # LM Studio's own folder (default ~/.lmstudio); tests point it elsewhere

# Ollama's templates (ollama/template/*.gotmpl) for the chat formats we recognise by their markers.
_CHATML = ("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
           "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
           "<|im_start|>assistant\n")
_LLAMA3 = ("{{- if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
           "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
           "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n")
_SYSTEM = {"chatml": re.compile(r"^<\|im_start\|>system\n(.*?)<\|im_end\|>", re.S),
           "llama3": re.compile(r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S)}


def chat_format(template: str | None) -> str | None:
    """"chatml", "llama3" or None (another format, or none)."""
    if not template:
        return None
    if "<|im_start|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template:
        return "llama3"
    return None


def _quote(text: str) -> str:
    if '"""' in text:
        raise UserError('a Modelfile cannot hold text with """ in it (the chat template or system prompt)')
    return f'"""{text}"""'


def modelfile(gguf_name: str, tokenizer, stop_ids, template: str | None, *, temperature: float = 0.7,
              num_ctx: int = 4096) -> str:
    """Ollama's Modelfile for the GGUF ``gguf_name`` beside it. ``tokenizer``: the chat's
    (mlx-lm TokenizerWrapper or a transformers tokenizer), ``template``: its Jinja chat template."""
    # mlx-lm's TokenizerWrapper holds the transformers tokenizer as _tokenizer (which holds a Rust one)
    hf = tokenizer if hasattr(tokenizer, "apply_chat_template") else tokenizer._tokenizer
    lines = [f"# Ollama: ollama create NAME -f {MODELFILE}   (written by mlx-lora-studio)", f"FROM ./{gguf_name}"]
    kind = chat_format(template)
    if kind:
        lines.append(f"TEMPLATE {_quote(_CHATML if kind == 'chatml' else _LLAMA3)}")
        try:
            rendered = hf.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                              add_generation_prompt=True)
        except Exception:  # noqa: BLE001  (a template that needs more than one message: no default system)
            rendered = ""
        found = _SYSTEM[kind].search(rendered or "")
        if found and found.group(1).strip():
            lines.append(f"SYSTEM {_quote(found.group(1))}")
    else:
        lines.append("# no TEMPLATE: Ollama uses the GGUF's own tokenizer.chat_template")
    for token_id in sorted(stop_ids):
        token = hf.convert_ids_to_tokens(int(token_id))
        if token:
            lines.append(f"PARAMETER stop {json.dumps(token, ensure_ascii=False)}")
    lines += [f"PARAMETER temperature {temperature:g}", f"PARAMETER num_ctx {int(num_ctx)}"]
    return "\n".join(lines) + "\n"


def write_modelfile(folder: Path, gguf_name: str, tokenizer, stop_ids, template: str | None,
                    num_ctx: int = 4096) -> Path:
    path = Path(folder) / MODELFILE
    path.write_text(modelfile(gguf_name, tokenizer, stop_ids, template, num_ctx=num_ctx), encoding="utf-8")
    return path


def ollama_create(export_dir: Path, name: str, ollama: str | None = None) -> tuple[str, bool]:
    """Runs ``ollama create NAME -f Modelfile`` in ``export_dir`` when ``ollama`` is on PATH.
    Returns (the command, whether it ran)."""
    export_dir = Path(export_dir)
    if not (export_dir / MODELFILE).is_file():
        raise UserError(f"{export_dir}: no {MODELFILE} here — only a GGUF export (--format gguf) has one")
    command = f"cd {export_dir} && ollama create {name} -f {MODELFILE}"
    ollama = ollama or shutil.which("ollama")
    if ollama is None:
        return command, False
    done = subprocess.run([ollama, "create", name, "-f", MODELFILE], cwd=export_dir, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"ollama create {name} failed:\n{(done.stderr or done.stdout).strip()[-2000:]}")
    return command, True


def lmstudio_models_dir() -> Path:
    """LM Studio's models folder: its settings' ``downloadsFolder``, else ``~/.lmstudio/models``."""
    home = Path(os.environ.get(LMSTUDIO_HOME_ENV) or Path.home() / ".lmstudio").expanduser()
    try:
        folder = json.loads((home / "settings.json").read_text(encoding="utf-8")).get("downloadsFolder")
    except (OSError, ValueError, AttributeError):
        folder = None
    return Path(folder).expanduser() if isinstance(folder, str) and folder else home / "models"


def _safe(part: str, what: str) -> str:
    part = re.sub(r"[^A-Za-z0-9._-]+", "-", part).strip("-.")
    if not part:
        raise UserError(f"the LM Studio {what} is empty once unsafe characters are removed")
    return part


LMSTUDIO_FORMATS = ("gguf", "mlx")  # LM Studio runs GGUF files (llama.cpp) and MLX folders (its MLX engine)
OLLAMA_FORMATS = ("gguf",)


def export_format(export_dir: Path) -> str | None:
    """The ``format`` an export of ours says it is (its verification.json), or None."""
    from mlx_lora.export.destination import MARKER, is_earlier_export

    if not is_earlier_export(export_dir):
        return None
    return json.loads((Path(export_dir) / MARKER).read_text(encoding="utf-8"))["format"]


def send_to_lmstudio(export_dir: Path, publisher: str, name: str, models_dir: Path | None = None) -> Path:
    """The GGUF or MLX export at ``export_dir`` into ``<models>/<publisher>/<name>/``; returns
    that folder. A GGUF export gives its .gguf file(s), model card and verification.json (no
    Modelfile); an MLX export, the whole folder (LM Studio's MLX engine loads it as it is)."""
    from mlx_lora import atomic
    from mlx_lora.export.destination import MARKER, check_destination

    export_dir = Path(export_dir)
    fmt = export_format(export_dir)
    ggufs = sorted(export_dir.glob("*.gguf"))
    if fmt == "gguf" and ggufs:
        files = [*ggufs, export_dir / MARKER, export_dir / "README.md"]
    elif fmt == "mlx" and (export_dir / "config.json").is_file():
        files = sorted(p for p in export_dir.iterdir() if p.is_file())
    else:
        raise UserError(f"{export_dir}: not a GGUF or MLX export of ours (no {MARKER} naming one, or no model "
                        "file) — export with --format gguf or mlx first")
    target = check_destination((models_dir or lmstudio_models_dir()) / _safe(publisher, "publisher")
                               / _safe(name, "model name"))
    with atomic.atomic_dir(target) as tmp:
        for path in files:
            if path.is_file():
                shutil.copyfile(path, tmp / path.name)
    return target
