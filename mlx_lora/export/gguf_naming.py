"""llama.cpp's tensor names and rotary row order for one model, as the fused GGUF's writer
(:mod:`mlx_lora.export.gguf_export`) has them — for the files that must name the same
tensors: the GGUF adapter (:mod:`mlx_lora.export.formats.gguf_adapter`) and the importance
matrix (:mod:`mlx_lora.export.imatrix`). Not a table of its own: it asks the writer.

The writer's per-family table (``family_of`` / ``tensor_names``, the families work) is used
where the writer has it; before that, the writer's llama-family names.
"""

from __future__ import annotations

from typing import Callable

from mlx_lora.errors import UserError
from mlx_lora.export import gguf_export


def naming(config: dict) -> tuple[str, bool, Callable[[str], str]]:
    """(llama.cpp's architecture, whether attn_q / attn_k rows are permuted, mlx-lm weight name →
    llama.cpp tensor name) for a model of ``config`` (its config.json)."""
    family_of = getattr(gguf_export, "family_of", None)
    if family_of is not None:  # the per-family table
        family = family_of(config)
        return family.arch, family.permute_qk, gguf_export.tensor_names(family.arch, int(config["num_hidden_layers"]))
    arch = gguf_export.GGUF_ARCHS.get(config.get("model_type"))
    if arch is None:
        raise UserError(f"GGUF files are written for {', '.join(sorted(gguf_export.GGUF_ARCHS))} models, not "
                        f"{config.get('model_type')!r}")
    return arch, arch == "llama", gguf_export.gguf_name
