"""The memory guard: the most a training run may hold, and what it says when a step passes it.

The limit comes from the device's own figure (``mx.device_info()``): Metal's recommended
working set on a Mac, the GPU's memory on CUDA, the machine's RAM on CPU — 85% of it by
default, as Unsloth's MLX trainer caps Metal (mlx-lm users otherwise meet "Resource limit
exceeded" or an abort), or ``run.memory_limit_gb``. It is given to MLX
(``mx.set_memory_limit``: past it MLX frees its cache and waits for queued work before it
allocates), and the trainer checks each step's peak against it before the update: a step
that passed it is dropped, the run stops with a checkpoint of the step before and a named
reason — how far to lower ``max_batch_tokens`` — instead of dying in the next, larger step.
"""

from __future__ import annotations

import dataclasses
import os

DEFAULT_SHARE = 0.85
# MLX's own limit as a share of the guard's: past MLX's limit its eval waits for queued work
# before it encodes more (mlx/transforms.cpp), and a step's peak still passes that limit by what
# was in flight, so a limit below the guard's lets MLX hold the queue back before the guard
# stops the run. 1.0 (the same line) unless measured otherwise (bench/gpu_qlora.py's -throttle runs).
THROTTLE_SHARE = 1.0


def device_memory() -> tuple[int, str]:
    """(bytes, what they are) of the memory MLX computes in on this machine."""
    import mlx.core as mx

    from mlx_lora import backend

    if backend.device_kind() == "gpu":
        info = mx.device_info()
        for key, what in (("max_recommended_working_set_size", "Metal's recommended working set"),
                          ("total_memory", "the GPU's memory"), ("memory_size", "the GPU's memory")):
            if int(info.get(key) or 0) > 0:
                return int(info[key]), what
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM"


@dataclasses.dataclass(frozen=True)
class MemoryGuard:
    limit: int  # bytes
    source: str  # where the figure came from, for the messages

    @classmethod
    def for_config(cls, config) -> "MemoryGuard":
        gb = config.run.memory_limit_gb
        if gb:
            return cls(int(gb * 1e9), f"memory_limit_gb {gb:g}")
        total, what = device_memory()
        return cls(int(total * DEFAULT_SHARE), f"{DEFAULT_SHARE:.0%} of {what}, {total / 1e9:.1f} GB")

    def install(self) -> int:
        """Gives MLX the limit; returns the one it had, for :meth:`restore` when the run ends
        (the app's tests and notebooks train more than once in one process)."""
        import mlx.core as mx

        return mx.set_memory_limit(int(self.limit * THROTTLE_SHARE))

    @staticmethod
    def restore(previous: int) -> None:
        import mlx.core as mx

        mx.set_memory_limit(previous)

    def describe(self) -> str:
        return f"{self.limit / 1e9:.2f} GB ({self.source})"

    def advice(self, step: int, peak: int, pass_tokens: int, cap: int) -> str:
        """Why the run stopped at ``step`` and the max_batch_tokens that would have fitted:
        activations grow with the tokens of a pass, so the cap is scaled by limit / peak with a
        10% margin, in multiples of 64 tokens."""
        suggested = max(64, int(pass_tokens * self.limit / peak * 0.9) // 64 * 64)
        now = f"now {cap}" if cap else "now off"
        return (f"out of memory at step {step}: the step needed {peak / 1e9:.2f} GB, over the memory limit of "
                f"{self.describe()}; lower max batch tokens to {suggested} ({now}; its largest pass had "
                f"{pass_tokens} tokens), or turn on gradient checkpointing, lower the rank or quantise the base")
