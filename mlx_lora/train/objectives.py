"""What a run optimises, as one small object the loop calls: supervised fine-tuning
(``sft``, the default), a preference objective (``dpo``, ``orpo``; see
:mod:`mlx_lora.train.preference_loss`) or reinforcement learning on prompts (``grpo``; see
:mod:`mlx_lora.train.grpo`).

An objective has four parts, so the loop stays the same for all of them:

- ``encode(tokenizer, records, data_config) -> EncodedSplit``: records → examples
  (each with ``tokens`` and ``trained``, which the batch plan and the resume
  fingerprint read);
- ``make_batch(examples, indices) -> tuple of numpy arrays``: the loss's arguments;
- ``make_loss()``: ``loss(model, *batch) -> (sum, count)`` with ``check(model, inputs)``;
  gradients are divided by the step's total ``count`` (tokens for sft, pairs for
  dpo/orpo);
- ``evaluate(model, loss, examples, batch_size, num_batches, seed, should_stop)
  -> (validation loss, extra EvalReport fields)``.

``notes`` are sentences for the run's ``RunStarted`` event. An objective that needs the
model itself (grpo samples its answers with it) also has ``bind(model, tokenizer,
total_steps, steps_per_report, emit) -> StepHook``, which the loop calls once and adds
to its hooks.
"""

from __future__ import annotations

from mlx_lora.config import TrainConfig
from mlx_lora.data.records import PREFERENCE, PROMPT
from mlx_lora.errors import UserError
from mlx_lora.train.batches import encode_records, make_batch
from mlx_lora.train.evaluate import MaskedLoss, dataset_loss


class SupervisedObjective:
    """Cross-entropy on the trained tokens (the replies, with ``mask_prompt``)."""

    name = "sft"

    def __init__(self, notes: list[str] | None = None, pack_length: int = 0) -> None:
        self.notes = list(notes or [])
        self.pack_length = pack_length  # data.pack: rows of max_seq_length tokens (train/packing.py)

    def encode(self, tokenizer, records, data):
        return encode_records(tokenizer, records, data.mask_prompt, data.max_seq_length, data.too_long)

    @staticmethod
    def make_batch(examples, indices):
        return make_batch(examples, indices)

    def make_loss(self) -> MaskedLoss:
        return MaskedLoss()

    def evaluate(self, model, loss, examples, batch_size, num_batches, seed, should_stop):
        val_loss, _ = dataset_loss(model, loss, examples, batch_size, num_batches, seed, should_stop,
                                   self.pack_length)
        return val_loss, {}


def objective_for(config: TrainConfig, data_format: str):
    """The objective of ``config`` for data of ``data_format``; a preference objective on
    data without pairs is a :class:`UserError` (raised before any model loads)."""
    objective = config.preference.objective
    if objective == "grpo" or data_format == PROMPT:
        if objective != "grpo":
            raise UserError(f"objective (preference.objective, --objective): {config.data.data} holds prompt records "
                            f"(a 'prompt' and no answer to learn), which only --objective grpo trains on; "
                            f"{objective} needs {'pairs' if objective != 'sft' else 'replies'}")
        if data_format != PROMPT:
            raise UserError(f"objective (preference.objective, --objective): grpo needs prompt records, each a "
                            f"'prompt' (and the fields its rewards read, such as 'answer'), but {config.data.data} "
                            f"holds {data_format} records (e.g. resources/datasets/plus-one)")
        from mlx_lora.train.grpo import GRPOObjective

        return GRPOObjective(config)
    if objective == "sft":
        notes = []
        if data_format == PREFERENCE:
            notes.append("preference data with objective sft: training on each prompt and its chosen answer "
                         "(the rejected answers are not used; --objective dpo or orpo uses them)")
        return SupervisedObjective(notes, config.data.max_seq_length if config.data.pack else 0)
    if data_format != PREFERENCE:
        raise UserError(f"objective (preference.objective, --objective): {objective} needs preference data, "
                        f"records with 'prompt', 'chosen' and 'rejected', but {config.data.data} holds "
                        f"{data_format} records; use --objective sft for it, or a preference dataset "
                        "(e.g. resources/datasets/pirate-preference)")
    from mlx_lora.train.preference_loss import PreferenceObjective

    return PreferenceObjective(config)
