"""The loss: cross-entropy over the trained positions only; validation and test loss.

:class:`MaskedLoss` returns the *sum* over trained tokens and their count, so
gradient accumulation can divide by the tokens of the whole step (every trained
token weighs the same, however the examples fall into micro-batches).
:func:`evaluate_run` is ``mlx-lora eval``: a finished run's adapter on a split of
its own dataset, as loss and perplexity.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from mlx_lora.errors import Cancelled
from mlx_lora.events import NullReporter, Reporter, never_stop
from mlx_lora.train.batches import Example, eval_batches, make_batch


def _split_head(model: nn.Module):
    """(trunk, head) when the model is ``head(trunk(inputs))`` — mlx-lm's llama, mistral, qwen…
    ``Model.__call__`` — else None."""
    trunk = getattr(model, "model", None)
    if not isinstance(trunk, nn.Module):
        return None
    args = getattr(model, "args", None)
    if getattr(args, "tie_word_embeddings", False) and hasattr(getattr(trunk, "embed_tokens", None), "as_linear"):
        return trunk, trunk.embed_tokens.as_linear
    if isinstance(getattr(model, "lm_head", None), nn.Module):
        return trunk, model.lm_head
    return None


class MaskedLoss:
    """Cross-entropy over the trained positions only: ``loss(model, inputs, targets, mask,
    positions) -> (sum over trained tokens, their count)``; inputs/targets/mask are (B, L),
    positions (N,) the flat indices where mask is 1.

    Where the model splits into trunk and head, the head (a D × V matmul and a
    softmax over V) runs only at the N trained positions instead of all B·L.
    Measured on the demo model (batch 4 × 96, 40% of positions trained, LoRA on
    8 layers, CPU): 3.2 → 2.6 s per forward+backward; on the tiny test model
    (vocabulary 49152, hidden 64) 1.0 → 0.3 s. Whether the split reproduces
    ``model(inputs)`` is checked numerically once (:meth:`check`); models it
    does not fit (logit soft-capping, scaling…) use the full logits.
    """

    def __init__(self) -> None:
        self.split = None

    def check(self, model: nn.Module, inputs: mx.array) -> bool:
        """Use the trained-positions path if it gives the same logits as the model on ``inputs``."""
        split = _split_head(model)
        if split is None:
            return False
        was_training = model.training
        model.eval()
        try:
            trunk, head = split
            full = model(inputs)
            parts = head(trunk(inputs))
            same = full.shape == parts.shape and mx.allclose(full, parts, rtol=1e-4, atol=1e-4).item()
        except Exception:  # an architecture whose trunk needs other arguments
            same = False
        finally:
            model.train(was_training)
        self.split = split if same else None
        return same

    def __call__(self, model: nn.Module, inputs: mx.array, targets: mx.array, mask: mx.array,
                 positions: mx.array) -> tuple[mx.array, mx.array]:
        if self.split is None:
            logits = model(inputs)  # (B, L, V)
            losses = nn.losses.cross_entropy(logits.astype(mx.float32), targets) * mask  # (B, L)
            return losses.sum(), mask.sum()
        trunk, head = self.split
        hidden = trunk(inputs)  # (B, L, D)
        hidden = hidden.reshape(-1, hidden.shape[-1])[positions]  # (N, D)
        logits = head(hidden)  # (N, V)
        losses = nn.losses.cross_entropy(logits.astype(mx.float32), targets.reshape(-1)[positions])  # (N,)
        return losses.sum(), mx.array(positions.size, mx.float32)


def dataset_loss(model: nn.Module, loss: MaskedLoss, examples: list[Example], batch_size: int, num_batches: int,
                 seed: int, should_stop: Callable[[], bool] = never_stop) -> tuple[float, int]:
    """(mean loss per trained token, trained tokens) over a fixed sample of batches.

    Raises :class:`Cancelled` when ``should_stop`` says so between batches."""
    was_training = model.training
    model.eval()
    total, count = mx.array(0.0), mx.array(0.0)
    try:
        for indices in eval_batches(examples, batch_size, num_batches, seed):
            if should_stop():
                raise Cancelled()
            batch = make_batch(examples, indices)
            loss_sum, tokens = loss(model, *map(mx.array, batch))
            total, count = total + loss_sum, count + tokens
            mx.eval(total, count)
    finally:
        model.train(was_training)
    tokens = int(count.item())
    return (total.item() / tokens if tokens else float("nan")), tokens


@dataclasses.dataclass(frozen=True)
class EvalResult:
    split: str
    adapter: str
    loss: float
    perplexity: float
    examples: int
    tokens: int


def evaluate_run(run_dir: str | Path, split: str = "test", adapter: str = "final",
                 reporter: Reporter = NullReporter(), batch_size: int | None = None) -> EvalResult:
    """Loss and perplexity of a run's adapter (final, best, latest or step-N) on a split of its data
    (the same split the run made: same file, ratios and seed)."""
    from mlx_lm.tuner.utils import load_adapters

    from mlx_lora.config import TrainConfig
    from mlx_lora.data.dataset import load_splits
    from mlx_lora.errors import UserError
    from mlx_lora.train.batches import encode_records
    from mlx_lora.train.methods import load_base
    from mlx_lora.train.run_folder import RunFolder

    run = RunFolder(run_dir)
    if not run.config_path.is_file():
        raise UserError(f"{run.path}: not a run folder (no config.yaml)")
    config = TrainConfig.from_yaml(run.config_path)
    folder = run.adapter_dir(adapter)
    data = config.data
    splits = load_splits(data.data, valid_ratio=data.valid_ratio, test_ratio=data.test_ratio, seed=config.run.seed)
    records = {"train": splits.train, "valid": splits.valid, "test": splits.test}[split]
    if not records:
        raise UserError(f"this run's data has no {split} split (test_ratio {data.test_ratio} and no {split}.jsonl); "
                        "use --split valid, or train with --test-ratio")
    model, tokenizer, _, _, _ = load_base(config, reporter)
    load_adapters(model, str(folder))
    encoded = encode_records(tokenizer, records, data.mask_prompt, data.max_seq_length, data.too_long)
    loss_fn = MaskedLoss()
    if encoded.examples:
        loss_fn.check(model, mx.array([encoded.examples[0].tokens]))
    loss, tokens = dataset_loss(model, loss_fn, encoded.examples, batch_size or data.batch_size, -1, config.run.seed)
    return EvalResult(split, str(folder), loss, math.exp(loss) if loss < 700 else float("inf"),
                      len(encoded.examples), tokens)
