"""Data-parallel training over ``mx.distributed``: what each rank does differently.

Started by ``mlx.launch`` (or ``mlx-lora train --hostfile FILE``, which runs it,
:mod:`mlx_lora.cli.launch`), every process runs the same :func:`~mlx_lora.train.train`;
``mx.distributed.init()`` tells it its rank and the world size (the ring backend
over TCP, or MPI / NCCL where those are set up). With one process every method
here is the identity, so the single-machine loop is unchanged.

- **Data**: the global batch order is the single-process one (a function of
  (seed, epoch), :class:`~mlx_lora.train.batches.BatchPlan`); each rank takes
  every ``size``-th example of each global micro-batch (:meth:`World.share`).
  Within a batch the examples have similar lengths, so the shares cost about
  the same. A share can be empty (a last batch smaller than the world).
- **Gradients**: each rank sums its per-token losses and their gradients
  (``MaskedLoss`` returns sums); :meth:`World.sum_step` all-sums gradients,
  loss, token counts and the non-padding token count. The loop divides by the
  global token count, so the update and the reported loss are the
  single-process token means, however the tokens fall on the ranks (mlx-lm
  averages per-rank means instead, which weighs a rank's tokens by its share).
- **Stopping**: ``should_stop`` becomes a collective (:meth:`World.collective_stop`):
  every rank asks at the same points of the loop, and all of them see "stop"
  when any one of them was asked to, so they drop the same partial step.
- **Writing**: rank 0 alone writes the run folder, ``metrics.jsonl``,
  checkpoints and events; the others report to a ``NullReporter``.
- **Start and resume**: rank 0's trainable weights and optimiser state are
  copied to every rank (:meth:`World.broadcast`) after setup, so the ranks
  start identical even if an initialisation or a checkpoint read differed.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

# Environment variables that mark a process started by a distributed launcher
# (mlx.launch sets MLX_RANK for ring/nccl/jaccl; mpirun sets OMPI_/PMI_ ones).
LAUNCHED_ENV = ("MLX_LORA_LAUNCHED", "MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def launched() -> bool:
    """True inside a process started by mlx.launch / mpirun (so it must not launch again)."""
    return any(os.environ.get(name) for name in LAUNCHED_ENV)


class World:
    """This process's place among the ranks training together (size 1 on one machine)."""

    def __init__(self, group: mx.distributed.Group | None = None) -> None:
        self.group = group if group is not None else mx.distributed.init()
        self.size = self.group.size()
        self.rank = self.group.rank()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder and reports events."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def backend(self) -> str:
        """The launcher that set this up, for the run's notes (a best guess from the environment)."""
        if os.environ.get("OMPI_COMM_WORLD_RANK") or os.environ.get("PMI_RANK"):
            return "mpi"
        if os.environ.get("NCCL_HOST_IP"):
            return "nccl"
        if os.environ.get("MLX_JACCL_COORDINATOR"):
            return "jaccl"
        return "ring"

    def notes(self, dropout: float) -> list[str]:
        """What the run's RunStarted should say about the ranks."""
        if not self.distributed:
            return []
        notes = [f"data-parallel over {self.size} processes ({self.backend()} backend): each takes its share "
                 "of every batch; rank 0 writes the run folder"]
        if dropout > 0:
            notes.append("dropout masks are drawn per process, so they differ from a one-process run's")
        return notes

    # -- data ---------------------------------------------------------------
    def share(self, indices: np.ndarray) -> np.ndarray:
        """This rank's examples of a global micro-batch: every ``size``-th, from ``rank``."""
        return indices[self.rank::self.size] if self.distributed else indices

    # -- reductions ---------------------------------------------------------
    def _all_sum(self, x: mx.array) -> mx.array:
        return mx.distributed.all_sum(x, group=self.group, stream=mx.cpu)

    def sum_step(self, model: nn.Module, grad_sum, loss_sum, tokens, real_tokens: int):
        """All-sum one step's gradient sum, loss sum, trained-token count and non-padding token
        count. ``grad_sum`` etc. are None on a rank whose shares were all empty."""
        if not self.distributed:
            return grad_sum, loss_sum, tokens, real_tokens
        if grad_sum is None:
            grad_sum = tree_map(mx.zeros_like, model.trainable_parameters())
            loss_sum = tokens = mx.array(0.0)
        # nn.average_gradients packs the leaves into ~32 MB all-reduces (one per leaf would be
        # hundreds of round trips); it divides by size, so scale back to the sum (exact for 2, 4…)
        grad_sum = tree_map(lambda g: g * self.size, nn.average_gradients(grad_sum, self.group))
        scalars = self._all_sum(mx.stack([loss_sum.astype(mx.float32), tokens.astype(mx.float32),
                                          mx.array(float(real_tokens))]))
        mx.eval(grad_sum, scalars)
        return grad_sum, scalars[0], scalars[1], int(scalars[2].item())

    def mean(self, value: float) -> float:
        """The ranks' mean of a number each computed (validation loss): every rank then holds the
        same float, so decisions made from it (best checkpoint, early stopping) agree."""
        if not self.distributed:
            return value
        return self._all_sum(mx.array(value, dtype=mx.float32)).item() / self.size

    def collective_stop(self, should_stop: Callable[[], bool]) -> Callable[[], bool]:
        """A ``should_stop`` that is true on every rank as soon as it is true on any one; each call
        is a (tiny) all-reduce, so every rank must call it at the same points — the loop does."""
        if not self.distributed:
            return should_stop

        def any_rank_stops() -> bool:
            flag = mx.array(1 if should_stop() else 0, dtype=mx.int32)
            return self._all_sum(flag).item() > 0

        return any_rank_stops

    def broadcast(self, tree: Any) -> Any:
        """Rank 0's values of a tree of arrays, on every rank (an all-sum where the others give 0)."""
        if not self.distributed:
            return tree
        flat = tree_flatten(tree)
        sent = [(k, self._all_sum(v if self.is_main else mx.zeros_like(v))) for k, v in flat]
        mx.eval([v for _, v in sent])
        return tree_unflatten(sent)

    def sync_training_state(self, model: nn.Module, optimizer) -> None:
        """Make every rank's trainable weights and optimiser state rank 0's."""
        if not self.distributed:
            return
        model.update(self.broadcast(model.trainable_parameters()))
        state = optimizer.state  # written into in place: the optimiser keeps its own references
        for path, value in tree_flatten(self.broadcast(state)):
            *parents, leaf = path.split(".")
            node = state
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node[key]
            node[int(leaf) if isinstance(node, list) else leaf] = value
        mx.eval(model.parameters(), optimizer.state)
