"""The run's own validation loss, for an export's quality report: the examples (the run's
validation split, tokenised and masked as training took the loss on them), their loss
through base+adapter and the base in MLX (float32), and the same formula for logits
another engine computed (llama.cpp's, :mod:`mlx_lora.export.llama_cpp_check`).

The loss is the training loss's: mean cross-entropy in nats over the trained target
tokens (``trained[i + 1]``: position i predicts token i + 1; the first token is never a
target). At most :data:`MAX_EXAMPLES` examples and :data:`MAX_TOKENS` tokens are scored,
the first of the split, so an export of a large run stays quick.
"""

from __future__ import annotations

from typing import Any

MAX_EXAMPLES = 32
MAX_TOKENS = 8192

Examples = list[tuple[list[int], list[bool]]]  # (tokens, trained) per example


def validation_examples(files, tokenizer) -> tuple[Examples, str | None]:
    """The run's first validation examples, or ([], why not)."""
    from mlx_lora.data.dataset import load_splits
    from mlx_lora.data.render import encode_example
    from mlx_lora.errors import UserError

    try:
        config = files.run_config()
    except UserError as exc:
        return [], f"the run's config could not be read ({exc})"
    if config is None:
        return [], "the adapter comes with no run config, so there is no validation set"
    data = config.data
    try:
        splits = load_splits(data.data, valid_ratio=data.valid_ratio, test_ratio=data.test_ratio, seed=config.run.seed)
    except (UserError, OSError) as exc:
        return [], f"the run's data ({data.data}) could not be read: {exc}"
    if not splits.valid:
        return [], "the run's data has no validation split"
    examples: Examples = []
    total = 0
    for record in splits.valid:
        encoded = encode_example(tokenizer, record, mask_prompt=data.mask_prompt)
        tokens, trained = list(encoded.tokens)[:data.max_seq_length], list(encoded.trained)[:data.max_seq_length]
        if len(tokens) < 2 or not any(trained[1:]):
            continue
        if examples and total + len(tokens) > MAX_TOKENS:
            break
        examples.append((tokens, [bool(t) for t in trained]))
        total += len(tokens)
        if len(examples) == MAX_EXAMPLES:
            break
    if not examples:
        return [], "the run's validation split has no example with trained tokens"
    return examples, None


def loss_sums(log_probs_of, examples: Examples) -> tuple[float, int]:
    """(Σ NLL, trained targets) with ``log_probs_of(tokens)`` → (L, V) log-probabilities (numpy)."""
    import numpy as np

    total, count = 0.0, 0
    for tokens, trained in examples:
        log_probs = log_probs_of(tokens)  # (L, V)
        targets = np.array(tokens[1:])
        where = np.array(trained[1:], dtype=bool)
        picked = log_probs[np.arange(len(targets)), targets]  # (L - 1,)
        total -= float(picked[where].sum())
        count += int(where.sum())
    return total, count


def mlx_losses(model, examples: Examples) -> tuple[float, float, int]:
    """(base+adapter's loss, the base's loss, trained targets) of ``examples`` in MLX."""
    import mlx.core as mx
    import numpy as np

    from mlx_lora.adapters import adapter_disabled

    def log_probs_of(tokens):
        logits = model(mx.array([tokens]))[0, :-1].astype(mx.float32)  # (L - 1, V)
        out = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        mx.eval(out)
        return np.array(out)

    tuned, count = loss_sums(log_probs_of, examples)
    with adapter_disabled(model):
        base, _ = loss_sums(log_probs_of, examples)
    return tuned / count, base / count, count


def summary(check: Any) -> str:
    """The validation-loss line of a check, for the notes."""
    kept = check.val_loss_improvement_kept
    return (f"validation loss ({check.val_tokens} trained tokens of the run's validation set): {check.check} "
            f"{check.val_loss:.4f}, base+adapter {check.val_loss_tuned:.4f}, base {check.val_loss_base:.4f}"
            + (f" — it keeps {kept:.0%} of the fine-tune's gain" if kept is not None else ""))
