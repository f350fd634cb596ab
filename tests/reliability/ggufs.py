"""Tiny GGUF files for tests, written with the ``gguf`` package: a whole llama
model (one block, hidden 64) that imports and loads, described as a
:class:`GGUFSpec` that a test changes (a head count of 0, no token list, a 1-D
quantised tensor …) before :func:`write_gguf` writes it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, LAYERS = 64, 4, 2, 16, 128, 1
TOKENS = ["a", "b", "c", "d", "Ġ", "ab", "<|im_start|>", "<|im_end|>"]
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" \
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


@dataclasses.dataclass
class GGUFSpec:
    """What a GGUF file holds: metadata ``key -> (value, GGUFValueType name)`` (arrays:
    ``(list, "ARRAY", item type name)``) and tensors ``name -> (numpy array, GGML type name)``."""

    metadata: dict[str, tuple]
    tensors: dict[str, tuple[Any, str]]


def tiny_spec(seed: int = 0) -> GGUFSpec:
    import numpy as np

    rng = np.random.default_rng(seed)

    def w(rows: int, cols: int):
        return (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)

    tensors: dict[str, tuple[Any, str]] = {
        "token_embd.weight": (w(len(TOKENS), HIDDEN), "F32"),
        "output_norm.weight": (np.ones(HIDDEN, dtype=np.float32), "F32"),
    }
    for i in range(LAYERS):
        tensors.update({
            f"blk.{i}.attn_q.weight": (w(HEADS * HEAD_DIM, HIDDEN), "Q8_0"),
            f"blk.{i}.attn_k.weight": (w(KV_HEADS * HEAD_DIM, HIDDEN), "F16"),
            f"blk.{i}.attn_v.weight": (w(KV_HEADS * HEAD_DIM, HIDDEN), "F16"),
            f"blk.{i}.attn_output.weight": (w(HIDDEN, HEADS * HEAD_DIM), "F16"),
            f"blk.{i}.ffn_gate.weight": (w(FFN, HIDDEN), "F16"),
            f"blk.{i}.ffn_up.weight": (w(FFN, HIDDEN), "F16"),
            f"blk.{i}.ffn_down.weight": (w(HIDDEN, FFN), "F16"),
            f"blk.{i}.attn_norm.weight": (np.ones(HIDDEN, dtype=np.float32), "F32"),
            f"blk.{i}.ffn_norm.weight": (np.ones(HIDDEN, dtype=np.float32), "F32"),
        })
    metadata = {
        "llama.block_count": (LAYERS, "UINT32"),
        "llama.context_length": (256, "UINT32"),
        "llama.embedding_length": (HIDDEN, "UINT32"),
        "llama.feed_forward_length": (FFN, "UINT32"),
        "llama.attention.head_count": (HEADS, "UINT32"),
        "llama.attention.head_count_kv": (KV_HEADS, "UINT32"),
        "llama.attention.layer_norm_rms_epsilon": (1e-5, "FLOAT32"),
        "llama.rope.dimension_count": (HEAD_DIM, "UINT32"),
        "tokenizer.ggml.model": ("gpt2", "STRING"),
        "tokenizer.ggml.pre": ("smollm", "STRING"),
        "tokenizer.ggml.tokens": (TOKENS, "ARRAY", "STRING"),
        "tokenizer.ggml.token_type": ([1] * 6 + [3, 3], "ARRAY", "INT32"),
        "tokenizer.ggml.merges": (["a b"], "ARRAY", "STRING"),
        "tokenizer.ggml.bos_token_id": (6, "UINT32"),
        "tokenizer.ggml.eos_token_id": (7, "UINT32"),
        "tokenizer.chat_template": (TEMPLATE, "STRING"),
    }
    return GGUFSpec(metadata, tensors)


def write_gguf(spec: GGUFSpec, path: Path, arch: str = "llama") -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    for key, (value, kind, *sub) in spec.metadata.items():
        sub_type = gguf.GGUFValueType[sub[0]] if sub else None
        writer.add_key_value(key, value, gguf.GGUFValueType[kind], sub_type=sub_type)
    for name, (array, kind) in spec.tensors.items():
        qtype = gguf.GGMLQuantizationType[kind]
        if kind in ("F32", "F16"):
            writer.add_tensor(name, array.astype(np.float32 if kind == "F32" else np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
