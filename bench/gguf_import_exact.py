"""How far the demo base's float32 weights were from the GGUF's exact values before the
import dequantised in float32, and what that did to the logits.

    PYTHONPATH=. .venv/bin/python bench/gguf_import_exact.py

"before": mlx-lm's ``dequantize_model`` (``mx.dequantize`` with the file's float16 scales
and biases: float16 arithmetic); "now": :func:`mlx_lora.models.dequant.dequantize_model`
(float32, bit for bit gguf-py's ``d·q + m``). Prints the largest weight difference and
the largest and mean logit difference on three prompts, all in float32.
"""

from __future__ import annotations

import numpy as np


def main() -> None:
    import mlx_lora  # noqa: F401  (before mlx: its BLAS set-up)
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    from mlx_lm.utils import dequantize_model as rounded_dequantize
    from mlx_lm.utils import load_model

    from mlx_lora.models.demo import demo_model_path
    from mlx_lora.models.dequant import dequantize_model

    folder = demo_model_path()
    before, _ = load_model(folder)
    rounded_dequantize(before)
    before.set_dtype(mx.float32)
    now, _ = load_model(folder)
    dequantize_model(now, mx.float32)
    old, new = dict(tree_flatten(before.parameters())), dict(tree_flatten(now.parameters()))
    worst = max((float(mx.max(mx.abs(old[k] - new[k]))), k) for k in new)
    print(f"largest weight difference, float16 vs float32 dequantisation: {worst[0]:.5f} ({worst[1]})")
    tokenizer = load_tokenizer(folder)
    diffs = []
    for text in ("The capital of France is", "Ahoy, matey! Where be the treasure?",
                 "def fibonacci(n):\n    return"):
        ids = mx.array([tokenizer.encode(text)])
        diffs.append(np.abs(np.array(before(ids)) - np.array(now(ids))).ravel())
    logits = np.concatenate(diffs)
    print(f"base logits, float16 vs float32 dequantisation: max |d| {logits.max():.4f}, mean {logits.mean():.5f}")


if __name__ == "__main__":
    main()
