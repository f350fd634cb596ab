"""llama.cpp's tensor names and rotary row order for one model, as the fused GGUF's writer
(:mod:`mlx_lora.export.gguf_export`) has them — for the files that must name the same
tensors: the GGUF adapter (:mod:`mlx_lora.export.formats.gguf_adapter`) and the importance
matrix (:mod:`mlx_lora.export.imatrix`). Not a table of its own: it asks the writer.

The names come from the writer's per-family table (``family_of`` / ``tensor_names``).
"""

from __future__ import annotations

from typing import Callable

from mlx_lora.export import gguf_export


def naming(config: dict) -> tuple[str, bool, Callable[[str], str]]:
    """(llama.cpp's architecture, whether attn_q / attn_k rows are permuted, mlx-lm weight name →
    llama.cpp tensor name) for a model of ``config`` (its config.json); the writer's per-family
    table refuses a family it does not write."""
    family = gguf_export.family_of(config)
    return family.arch, family.permute_qk, gguf_export.tensor_names(family.arch, int(config["num_hidden_layers"]))
