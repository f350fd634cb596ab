"""An importance matrix for llama.cpp's K-quants, computed from the run's own training data.

llama.cpp's ``llama-imatrix`` tool runs text through the model and keeps, for every weight
matrix, the mean of the squared activations entering each of its input columns,
``imatrix[j] = Σₜ x[t, j]² / T`` over the T tokens seen (tools/imatrix/imatrix.cpp: ``acc[j] +=
x[j] * x[j]``; tools/quantize/quantize.cpp divides by the count). The quantiser then weighs
each column's rounding error by it, so the columns the data actually uses are kept more
exactly. We compute the same statistic here, in MLX, on the fused model that is about to
be quantised, from the run's training examples (the rendered chats, every token — what the
model will read and write), and hand it to ``llama_model_quantize`` through llama.h's
``llama_model_imatrix_data`` array (:func:`mlx_lora.export.llama_cpp_check.quantize_gguf`).

Names are llama.cpp's (:mod:`mlx_lora.export.gguf_naming`); the rotary row
permutation of attn_q / attn_k reorders output rows only, so the per-input-column values
need none. The token embedding is a lookup, not a matmul: it gets no entry (llama.cpp's
tool gives it none either).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_EXAMPLES = 128
MAX_TOKENS = 32768


def training_tokens(files, tokenizer) -> tuple[list[list[int]], str | None]:
    """The run's first training examples as token ids, or ([], why not)."""
    from mlx_lora.data.dataset import load_splits
    from mlx_lora.data.render import encode_example
    from mlx_lora.errors import UserError

    config = files.run_config()
    if config is None:
        return [], "the adapter comes with no run config, so its training data is unknown"
    data = config.data
    try:
        splits = load_splits(data.data, valid_ratio=data.valid_ratio, test_ratio=data.test_ratio, seed=config.run.seed)
    except (UserError, OSError) as exc:
        return [], f"the run's data ({data.data}) could not be read: {exc}"
    out, total = [], 0
    for record in splits.train[:MAX_EXAMPLES]:
        tokens = list(encode_example(tokenizer, record, mask_prompt=False).tokens)[:data.max_seq_length]
        if total + len(tokens) > MAX_TOKENS:
            break
        out.append(tokens)
        total += len(tokens)
    return (out, None) if out else ([], "the run's training split is empty")


class _Stats:
    """Σ x² per input column and the token count, per weight name (a plain holder: no module tree)."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.counts: dict[str, int] = {}


def _recorder(layer, stats: _Stats, name: str):
    """A module standing in for one linear layer: adds up x² per input column, then calls it."""
    import mlx.core as mx
    import mlx.nn as nn

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = layer

        def __call__(self, x):
            flat = x.astype(mx.float32).reshape(-1, x.shape[-1])  # (tokens, in)
            stats.sums[name] = stats.sums.get(name, 0) + (flat * flat).sum(axis=0)
            stats.counts[name] = stats.counts.get(name, 0) + flat.shape[0]
            return self.layer(x)

    return Recorder()


def importance_matrix(model, config: dict, examples: list[list[int]]) -> dict[str, Any]:
    """{llama.cpp weight name: (in,) float32 numpy} for every linear layer of ``model``
    (``config``: its config.json, for llama.cpp's names)."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    from mlx_lora.export.gguf_naming import naming

    gguf_name = naming(config)[2]

    stats = _Stats()
    modules = dict(model.named_modules())
    linears = [(path, module) for path, module in modules.items() if isinstance(module, (nn.Linear, nn.QuantizedLinear))]

    def put(path: str, module) -> None:
        parent, _, leaf = path.rpartition(".")
        setattr(modules[parent] if parent else model, leaf, module)

    try:
        for path, module in linears:
            put(path, _recorder(module, stats, gguf_name(f"{path}.weight")))
        for tokens in examples:
            mx.eval(model(mx.array([tokens])), *stats.sums.values())
    finally:
        for path, module in linears:
            put(path, module)
    return {name: np.array(total / stats.counts[name], dtype=np.float32) for name, total in stats.sums.items()}


def save(matrix: dict[str, Any], path: Path) -> Path:
    import numpy as np

    np.savez(path, **matrix)
    return path
