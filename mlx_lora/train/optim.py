"""The optimiser and the learning-rate schedule.

The schedule is a plain function of the step (:func:`learning_rate_at`), set on
the optimiser before each update, so a resumed run's learning rate follows from
its step alone. mlx's own warm-up (``linear_schedule`` from 0, as mlx-lm uses
it) spends the first update at learning rate 0; here update 1 of W warm-up
steps uses lr/W.

LoRA+ puts the B matrices in a second Adam whose learning rate is
``lora_plus_ratio`` times the first's (mlx's ``MultiOptimizer``). Adam runs
with bias correction (as PyTorch's and PEFT's do; mlx's default leaves it off,
which makes the first updates about 3× larger than the learning rate).
"""

from __future__ import annotations

import math

import mlx.optimizers as optim

from mlx_lora.config import TrainConfig
from mlx_lora.methods import method_for
from mlx_lora.train.prepare import is_lora_b


def learning_rate_at(step: int, config: TrainConfig, total_steps: int) -> float:
    """The learning rate of update number ``step`` (1-based); with ReLoRA re-warmed after each merge."""
    from mlx_lora.methods.tensors.relora import rewarm_factor

    schedule = config.schedule
    return _scheduled_rate(step, config, total_steps) * rewarm_factor(step, schedule.relora_every,
                                                                      schedule.relora_warmup)


def _scheduled_rate(step: int, config: TrainConfig, total_steps: int) -> float:
    peak = config.optimizer.learning_rate
    schedule = config.schedule
    t = step - 1
    if t < schedule.warmup_steps:
        return peak * (t + 1) / schedule.warmup_steps
    if schedule.lr_schedule == "constant":
        return peak
    decay_steps = max(total_steps - schedule.warmup_steps, 1)
    progress = min((t - schedule.warmup_steps) / decay_steps, 1.0)
    low = peak * schedule.min_lr_ratio
    if schedule.lr_schedule == "linear":
        return peak + (low - peak) * progress
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * progress))


def _adam(config: TrainConfig) -> optim.Optimizer:
    from mlx_lora.train.optim8bit import Adam8bit, AdamW8bit

    settings = config.optimizer
    betas = [settings.beta1, settings.beta2]
    eight = settings.state_bits == 8  # the moments in 8 bits: train/optim8bit.py
    if settings.optimizer == "adamw":
        return (AdamW8bit if eight else optim.AdamW)(learning_rate=settings.learning_rate, betas=betas,
                                                     weight_decay=settings.weight_decay, bias_correction=True)
    return (Adam8bit if eight else optim.Adam)(learning_rate=settings.learning_rate, betas=betas,
                                               bias_correction=True)


class Optimizer:
    """The run's optimiser(s) with one ``set_learning_rate`` for the schedule."""

    def __init__(self, config: TrainConfig) -> None:
        self.lora_plus_ratio = config.adapter.lora_plus_ratio
        if self.lora_plus_ratio != 1.0 and method_for(config.adapter.fine_tune_type).has_adapter:
            self.inner = optim.MultiOptimizer([_adam(config), _adam(config)], [is_lora_b])
        else:
            self.inner = _adam(config)

    def set_learning_rate(self, learning_rate: float) -> None:
        if isinstance(self.inner, optim.MultiOptimizer):
            b_group, rest = self.inner.optimizers
            b_group.learning_rate = learning_rate * self.lora_plus_ratio
            rest.learning_rate = learning_rate
        else:
            self.inner.learning_rate = learning_rate

    @property
    def state(self):
        return self.inner.state
