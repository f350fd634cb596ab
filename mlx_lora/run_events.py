"""The events a training run reports, in the order they come.

``RunStarted`` once, then ``StepReport`` every ``steps_per_report`` steps,
``EvalReport`` every ``steps_per_eval`` steps, ``CheckpointSaved`` after each
complete checkpoint, ``RewardReport`` (objective grpo) just before each ``StepReport``,
``AdapterMerged`` after each ReLoRA merge, ``AdapterRanks``
(AdaLoRA's final ranks) just before the end, and exactly one of ``RunFinished`` / ``RunStopped`` /
``RunFailed`` at the end (:data:`TERMINAL_EVENTS`, with the status each gives the run
in :data:`RUN_STATUS`). Every event has a ``step`` (the optimiser steps done
when it was emitted), so ``metrics.jsonl`` can be cut back to a checkpoint on
resume. Times are seconds, memory is GB (10^9 bytes).
"""

from __future__ import annotations

import dataclasses

from mlx_lora.events import Event


@dataclasses.dataclass(frozen=True)
class RunStarted(Event):
    step: int  # 0, or the checkpoint's step when resuming
    run_dir: str
    model: str
    fine_tune_type: str
    total_steps: int
    steps_per_epoch: float
    trainable_parameters: int
    total_parameters: int
    train_examples: int
    valid_examples: int
    test_examples: int
    train_tokens: int  # tokens of the training examples after max_seq_length
    trained_tokens_per_epoch: int  # of those, the tokens that carry the loss
    truncated_examples: int
    dropped_examples: int
    padding_fraction: float  # padding share of the tokens in an epoch's batches
    device: str
    compute_dtype: str
    resumed: bool
    notes: tuple[str, ...] = ()  # things a person should know, e.g. "dequantised 4-bit base to float32 for CPU"
    world_size: int = 1  # processes training together (mlx.launch, data-parallel); 1 on one machine


@dataclasses.dataclass(frozen=True)
class StepReport(Event):
    step: int
    total_steps: int
    epoch: float  # epochs done, fractional
    loss: float  # mean loss per trained token since the last report
    learning_rate: float  # of the A matrices / every weight; B matrices get lora_plus_ratio times this
    tokens_per_second: float  # non-padding tokens processed per second since the last report
    trained_tokens: int  # tokens that carried the loss, since the run began (pairs, for dpo and orpo)
    peak_memory_gb: float
    elapsed_s: float  # since the run began, across resumes
    eta_s: float


@dataclasses.dataclass(frozen=True)
class EvalReport(Event):
    step: int
    val_loss: float
    best: bool  # the best validation loss so far (step 0, the untrained baseline, never is)
    best_val_loss: float | None
    best_step: int | None
    # preference objectives (dpo, orpo) only, over the validation pairs: the mean of
    # reward(chosen) - reward(rejected), and the share of pairs where chosen wins
    reward_margin: float | None = None
    reward_accuracy: float | None = None
    # grpo only: the mean reward of one greedy answer per validation prompt (val_loss is minus it)
    val_reward: float | None = None


@dataclasses.dataclass(frozen=True)
class RewardReport(Event):
    """GRPO's rewards since the last report, over every sampled answer (mlx_lora.train.grpo)."""

    step: int
    mean_reward: float  # the summed reward, mean over the answers
    reward_std: float  # its spread over the answers
    rewards: dict[str, float]  # reward function -> its mean (weight applied)
    kl: float | None  # mean per answer token of KL(policy ‖ base) in the updates (None with grpo_beta 0)
    completion_tokens: float  # mean answer length, in tokens
    generation_s: float  # seconds spent sampling and scoring, per step
    sample_prompts: tuple[str, ...] = ()  # a few prompts of the last step…
    samples: tuple[str, ...] = ()  # …the first answer sampled for each…
    sample_rewards: tuple[float, ...] = ()  # …and its reward


@dataclasses.dataclass(frozen=True)
class CheckpointSaved(Event):
    step: int
    path: str
    best: bool  # also written to best/


@dataclasses.dataclass(frozen=True)
class AdapterMerged(Event):
    """ReLoRA merged the adapter into the base weights and restarted it."""

    step: int
    merge_index: int  # 1 for the first merge of the run
    message: str  # in plain words, for logs


@dataclasses.dataclass(frozen=True)
class AdapterRanks(Event):
    """AdaLoRA's ranks when the run ends: per adapted module, and their total against the budget."""

    step: int
    ranks: dict[str, int]  # module path (model.layers.N.self_attn.q_proj) -> rank kept
    total_rank: int
    budget: int
    initial_rank: int
    message: str  # in plain words, for logs


@dataclasses.dataclass(frozen=True)
class RunFinished(Event):
    step: int
    run_dir: str
    reason: str  # "completed" or why it stopped early
    final_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    elapsed_s: float


@dataclasses.dataclass(frozen=True)
class RunStopped(Event):
    step: int
    run_dir: str
    checkpoint: str | None  # where it can be resumed from
    reason: str
    # the app's supervisor ended a trainer that did not stop in time (SIGKILL); the engine never sets it
    forced: bool = False


@dataclasses.dataclass(frozen=True)
class RunFailed(Event):
    step: int
    run_dir: str
    checkpoint: str | None  # the last good checkpoint, if any
    reason: str  # what went wrong and what to do about it


# The one list of the events that end a run, with the status each gives it. Everyone who
# asks "has the run ended, and how?" (the loop, the CLI's launcher, the app's supervisor,
# the run history) derives from this.
RUN_STATUS: dict[type, str] = {RunFinished: "finished", RunStopped: "stopped", RunFailed: "failed"}
TERMINAL_EVENTS = tuple(RUN_STATUS)
