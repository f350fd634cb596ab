"""``train(config, reporter, should_stop)``: one fine-tuning run, start to finish.

Read top to bottom: data (validated before the model loads), model and method,
run folder (fresh, or restored from its latest checkpoint), then the loop. A
*step* is one optimiser update over ``grad_accumulation_steps`` micro-batches. What
is optimised (sft, dpo, orpo) is an objective object that encodes, batches, scores
and validates (:mod:`mlx_lora.train.objectives`).

Exact resume: a checkpoint holds the trainable weights, the optimiser state
(moments and step count), the data cursor (epoch, batch) and the counters. The
learning rate is a function of the step, the batch order a function of (seed,
epoch), and MLX's random key (dropout) is re-seeded from (seed, step) before
every step — mlx exposes no way to set the key back, so it is made a function
of the step instead. Hence a resumed run takes exactly the steps the
uninterrupted run would have.

Stopping: ``should_stop`` is asked before every micro-batch and between
validation batches. A step cut short is dropped whole (its gradients were never
applied), so the checkpoint written on stop is the last complete step.

A non-finite loss or gradient stops the run before the update is applied:
nothing NaN is ever saved, and the latest checkpoint stays the last good one.

Collaborators (keywords of :func:`train`, for tests and bench/ to swap without patching
modules): ``batch_plan`` builds the epochs' batches (``BatchPlan(lengths, batch_size,
seed)``; with ``data.pack`` a :class:`~mlx_lora.train.packing.PackedPlan`, also given
``row_length=max_seq_length``), ``micro_batches`` cuts a batch at ``max_batch_tokens``
(:func:`~mlx_lora.train.batches.micro_batches`), ``compiled`` turns the compiled step on
or off (None: the device's choice, :mod:`mlx_lora.train.step`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from mlx_lora import backend
from mlx_lora.config import TrainConfig
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Event, NullReporter, Progress, Reporter, never_stop
from mlx_lora.train import step as step_fn
from mlx_lora.train.batches import BatchPlan, Cursor, batch_tokens, micro_batches, padded_tokens
from mlx_lora.train.distributed import World
from mlx_lora.run_events import (
    CheckpointSaved,
    EvalReport,
    RunFailed,
    RunFinished,
    RunStarted,
    RunStopped,
    StepReport,
    TERMINAL_EVENTS,
)
from mlx_lora.methods import StepHooks, method_for
from mlx_lora.train.memory_guard import MemoryGuard
from mlx_lora.train.prepare import PreparedModel, prepare_model, trained_weights
from mlx_lora.train.objectives import objective_for
from mlx_lora.train.optim import Optimizer, learning_rate_at
from mlx_lora.tree_paths import set_at
from mlx_lora.run_folder import NonFiniteError, RunFolder, check_checkpoint_fits, default_run_dir


@dataclasses.dataclass(frozen=True)
class RunResult:
    status: str  # "finished" | "stopped" | "failed"
    run_dir: Path
    step: int
    total_steps: int
    reason: str
    final_loss: float | None  # the last reported training loss
    best_val_loss: float | None
    best_step: int | None
    checkpoint: Path | None  # the latest complete checkpoint


@dataclasses.dataclass
class _Progress:
    """Everything a checkpoint must restore besides weights and optimiser state."""

    step: int = 0
    cursor: Cursor = Cursor()
    trained_tokens: int = 0
    elapsed_s: float = 0.0
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    last_eval_step: int = -1

    def to_dict(self, seed: int, learning_rate: float, data_fingerprint: str) -> dict:
        return {
            "step": self.step,
            "data": {"epoch": self.cursor.epoch, "batch": self.cursor.index, "seed": seed,
                     "fingerprint": data_fingerprint},
            "schedule": {"step": self.step, "learning_rate": learning_rate},
            "rng": {"scheme": "mx.random.seed(step_seed(seed, step)) before each step", "seed": seed},
            "trained_tokens": self.trained_tokens,
            "elapsed_s": self.elapsed_s,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "evals_since_best": self.evals_since_best,
            "last_eval_step": self.last_eval_step,
        }

    @classmethod
    def from_dict(cls, state: dict) -> "_Progress":
        return cls(step=state["step"], cursor=Cursor(state["data"]["epoch"], state["data"]["batch"]),
                   trained_tokens=state["trained_tokens"], elapsed_s=state["elapsed_s"],
                   best_val_loss=state["best_val_loss"], best_step=state["best_step"],
                   evals_since_best=state["evals_since_best"], last_eval_step=state["last_eval_step"])


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


class _Logged:
    """Sends each event to the caller's reporter and, once the run folder exists, to metrics.jsonl."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.folder: RunFolder | None = None

    def emit(self, event: Event) -> None:
        if self.folder is not None:
            try:
                self.folder.log(event)
            except UserError:
                # metrics.jsonl cannot be written (disk full): the run fails with that reason,
                # and the event that says so still reaches the caller
                if not isinstance(event, TERMINAL_EVENTS):
                    raise
        self.reporter.emit(event)


def train(config: TrainConfig, reporter: Reporter = NullReporter(),
          should_stop: Callable[[], bool] = never_stop, *, batch_plan: Callable[..., BatchPlan] = BatchPlan,
          micro_batches: Callable = micro_batches, compiled: bool | None = None) -> RunResult:
    """Run one fine-tune (or continue one, with ``config.run.resume``); see the module docstring.

    Returns how it ended. A problem the user can fix raises :class:`UserError` after a
    ``RunFailed`` event; divergence (NaN loss) returns a failed result instead.
    """
    world = World()  # several processes under mlx.launch: see mlx_lora/train/distributed.py
    out = _Logged(reporter if world.is_main else NullReporter())
    trainer = None
    try:
        if world.is_main and not (config.run.resume or config.run.run_dir):
            config = config.replace(run_dir=str(default_run_dir(config)))  # named now, to be locked first
        run = RunFolder(config.run.resume or config.run.run_dir)
        # one writer per run (a second resume would write every step twice); rank 0 writes
        with run.lock("resuming" if config.run.resume else "training") if world.is_main else nullcontext():
            trainer = _Trainer(config, out, world.collective_stop(should_stop), world, batch_plan=batch_plan,
                               micro_batches=micro_batches, compiled=compiled)
            return trainer.run()
    except UserError as exc:
        out.emit(RunFailed(trainer.progress.step if trainer else 0, str(out.folder.path) if out.folder else "",
                           _latest(out.folder), str(exc)))
        raise
    except MemoryError:
        # Python's out-of-memory (MLX's Metal one aborts the process; the app reports that)
        step = trainer.progress.step if trainer else 0
        latest = _latest(out.folder)
        out.emit(RunFailed(step, str(out.folder.path) if out.folder else "", latest,
                           f"out of memory at step {step}: try a smaller batch size, max_seq_length or model"
                           + (f"; continue with: mlx-lora train --resume {out.folder.path}" if latest else "")))
        raise
    except Exception as exc:
        out.emit(RunFailed(trainer.progress.step if trainer else 0, str(out.folder.path) if out.folder else "",
                           _latest(out.folder), f"internal error ({type(exc).__name__}: {exc}); please report it"))
        raise


def _latest(run: RunFolder | None) -> str | None:
    checkpoint = run.latest_checkpoint() if run else None
    return str(checkpoint) if checkpoint else None


class _Trainer:
    def __init__(self, config: TrainConfig, out: _Logged, should_stop: Callable[[], bool],
                 world: World | None = None, *, batch_plan: Callable[..., BatchPlan] = BatchPlan,
                 micro_batches: Callable = micro_batches, compiled: bool | None = None) -> None:
        self.config = config
        self.batch_plan, self.micro_batches, self.compiled = batch_plan, micro_batches, compiled
        self.out = out
        self.should_stop = should_stop
        self.world = world or World()
        self.progress = _Progress()
        self.last_checkpoint: Path | None = None
        self.last_checkpoint_step = -1
        self.last_loss: float | None = None
        self._setup()

    # -- setup -------------------------------------------------------------
    def _setup(self) -> None:
        from mlx_lora.data.dataset import load_splits

        config = self.config
        if not config.data.data:
            raise UserError("data (data.data, --data): choose a dataset (a folder with train.jsonl, or a .jsonl file)")
        resuming = bool(config.run.resume)
        if resuming:
            run = RunFolder(config.run.resume)
            if not run.config_path.is_file():
                raise UserError(f"{run.path}: not a run folder (no config.yaml), so it cannot be resumed")
            checkpoint = run.load_checkpoint()
        # The dataset is validated before the (slow) model load.
        self.out.emit(Progress("train", "checking the dataset"))
        data = config.data
        splits = load_splits(data.data, valid_ratio=data.valid_ratio, test_ratio=data.test_ratio,
                             seed=config.run.seed)
        self.objective = objective_for(config, splits.format)  # sft, dpo or orpo: encoding, batches, loss
        self.out.emit(Progress("train", "loading the model"))
        self.prepared: PreparedModel = prepare_model(config, self.out)
        tokenizer = self.prepared.tokenizer
        self.out.emit(Progress("train", "tokenizing the dataset"))
        self.train_set = self.objective.encode(tokenizer, splits.train, data)
        self.valid_set = self.objective.encode(tokenizer, splits.valid, data)
        self.test_count = len(splits.test)
        lengths = [len(e.tokens) for e in self.train_set.examples]
        if data.pack:  # batch_size rows of several examples (train/packing.py), attention within each
            from mlx_lora.train.packed_attention import check_supported
            from mlx_lora.train.packing import PackedPlan

            check_supported(self.prepared.model)
            plan = PackedPlan if self.batch_plan is BatchPlan else self.batch_plan
            self.plan = plan(lengths, data.batch_size, config.run.seed, row_length=data.max_seq_length)
        else:
            self.plan = self.batch_plan(lengths, data.batch_size, config.run.seed)
        accumulation = config.optimizer.grad_accumulation_steps
        self.steps_per_epoch = len(self.plan) / accumulation
        epochs = config.schedule.epochs
        self.total_steps = math.ceil(epochs * len(self.plan) / accumulation) if epochs else config.schedule.iters

        self.optimizer = Optimizer(config)
        model = self.prepared.model
        self.loss = self.objective.make_loss()
        self.loss.check(model, mx.array([self.train_set.examples[0].tokens[:64]]))
        self.optimizer.inner.init(model.trainable_parameters())
        # what the method adds around each update (AdaLoRA, ReLoRA): mlx_lora/methods/
        self.method = method_for(config.adapter.fine_tune_type)
        self.hooks = StepHooks(self.method.hooks(config, model, self.optimizer, self.total_steps, self.out.emit))
        bind = getattr(self.objective, "bind", None)  # grpo samples with the model: mlx_lora/train/grpo.py
        if bind is not None:
            self.hooks.append(bind(model, tokenizer, self.total_steps, config.run.steps_per_report, self.out.emit))
        if resuming:
            self.folder = run
            self._restore(checkpoint)
        else:
            run_dir = Path(config.run.run_dir).expanduser() if config.run.run_dir else default_run_dir(config)
            self.folder = RunFolder(run_dir)
            self.config = config = config.replace(run_dir=str(self.folder.path))
            if self.world.is_main:
                self.folder.create(config)
        self.world.sync_training_state(model, self.optimizer)
        if not self.world.is_main:
            return  # only rank 0 writes the run folder
        self.out.folder = self.folder
        if resuming:
            self.folder.cut_metrics(self.progress.step)
            self.folder.write_config(config.replace(resume=""))

    def _restore(self, checkpoint) -> None:
        model = self.prepared.model
        checkpoint = dataclasses.replace(checkpoint, weights=self.hooks.restore(dict(checkpoint.weights),
                                                                                checkpoint.method_state))
        # names AND shapes, before anything is loaded (load_weights(strict=False) checks neither)
        check_checkpoint_fits(checkpoint, dict(tree_flatten(model.trainable_parameters())),
                              dict(tree_flatten(self.optimizer.state)))
        model.load_weights(list(checkpoint.weights.items()), strict=False)
        state = self.optimizer.state
        for path, value in checkpoint.optimizer.items():
            set_at(state, path, value)
        mx.eval(model.parameters(), state)
        self.progress = _Progress.from_dict(checkpoint.state)
        self.last_checkpoint, self.last_checkpoint_step = checkpoint.path, self.progress.step
        self.data_changed = checkpoint.state["data"].get("fingerprint") != self.train_set.fingerprint()

    # -- the run -----------------------------------------------------------
    def run(self) -> RunResult:
        config, progress = self.config, self.progress
        model = self.prepared.model
        resumed = bool(config.run.resume)
        notes = list(self.prepared.notes) + self.objective.notes + self.world.notes(config.adapter.dropout)
        if self.train_set.truncated:
            notes.append(f"{self.train_set.truncated} training example(s) longer than max_seq_length "
                         f"({config.data.max_seq_length} tokens) were truncated at the end")
        cap = config.data.max_batch_tokens
        cut = sum(len(self.micro_batches(b, self.plan.lengths, cap)) > 1 for b in self.plan.epoch(0)) if cap else 0
        if cut:
            notes.append(f"{cut} of {len(self.plan)} batches per epoch pass max_batch_tokens ({cap}) and run as "
                         "several passes each (the same steps, less memory)")
        if config.data.pack and hasattr(self.plan, "examples_per_row"):
            notes.append(f"sequence packing: {self.plan.examples_per_row():.1f} examples per row of "
                         f"{config.data.max_seq_length} tokens on average, {config.data.batch_size} rows per batch")
        if self.train_set.dropped:
            notes.append(f"{self.train_set.dropped} training example(s) were left out (too long with too_long=drop, "
                         "or nothing to train on)")
        if not self.valid_set.examples:
            notes.append("no validation set: no validation loss, best checkpoint or early stopping")
        if not self.method.has_adapter and any("dequantised" in n for n in notes):
            notes.append(f"{self.method.label.lower()} of a quantised model saves full-precision weights, which "
                         "load onto the dequantised model, not the quantised one")
        if resumed:
            notes.append(f"resumed from {self.last_checkpoint.relative_to(self.folder.path)}")
            if self.data_changed:
                notes.append("the training data changed since the checkpoint: the run continues, but not in "
                             "the order the original data would have given")
        self.out.emit(RunStarted(
            step=progress.step, run_dir=str(self.folder.path), model=config.model.model,
            fine_tune_type=config.adapter.fine_tune_type, total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            trainable_parameters=self.prepared.trainable_parameters,
            total_parameters=self.prepared.total_parameters,
            train_examples=len(self.train_set.examples), valid_examples=len(self.valid_set.examples),
            test_examples=self.test_count, train_tokens=self.train_set.tokens,
            trained_tokens_per_epoch=self.train_set.trained_tokens,
            truncated_examples=self.train_set.truncated, dropped_examples=self.train_set.dropped,
            padding_fraction=round(self.plan.padding_fraction(), 4), device=backend.backend_name(),
            compute_dtype=self.prepared.compute_dtype, resumed=resumed, notes=tuple(notes),
            world_size=self.world.size))

        self.memory_guard = MemoryGuard.for_config(config)  # see train/memory_guard.py
        previous_limit = self.memory_guard.install()
        self.session_start = time.perf_counter()
        self.session_start_elapsed = progress.elapsed_s
        self.session_start_step = progress.step
        mx.reset_peak_memory()
        model.train()
        try:
            if not resumed and self.valid_set.examples:
                self._evaluate(baseline=True)  # the untrained model's validation loss, for the chart
            elif resumed and self._eval_due(progress.step) and progress.last_eval_step < progress.step:
                if self._evaluate_and_maybe_stop_early():
                    return self._finish("early stopping")
            return self._loop()
        except Cancelled:
            return self._stopped()
        finally:
            self.memory_guard.restore(previous_limit)

    def _loop(self) -> RunResult:
        config, progress = self.config, self.progress
        model = self.prepared.model
        accumulation = config.optimizer.grad_accumulation_steps
        max_norm = config.optimizer.max_grad_norm
        examples = self.train_set.examples
        # sft on a GPU: a compiled step over padded widths; else eager (see train/step.py)
        loss_and_grad, make_batch = step_fn.for_objective(model, self.loss, self.objective, self.compiled)

        update = step_fn.optimizer_update(model, self.optimizer, plain=not self.hooks,
                                           compiled=None if self.compiled is None else self.compiled and not self.hooks)

        def apply_update(grad_sum, tokens):
            grads = self.hooks.adjust_gradients(tree_map(lambda g: g / tokens, grad_sum))
            if max_norm > 0:
                grads, _ = optim.clip_grad_norm(grads, max_norm)
            update(model, grads)
            return grads

        stream = self.plan.stream(progress.cursor)
        report_loss = report_tokens = 0.0
        report_real_tokens = 0
        report_time = 0.0
        while progress.step < self.total_steps:
            step = progress.step + 1
            step_start = time.perf_counter()
            mx.random.seed(step_seed(config.run.seed, step))
            grad_sum = loss_sum = tokens = None
            real_tokens = pass_tokens = 0
            cursor = progress.cursor
            for _ in range(accumulation):
                if self.should_stop():
                    raise Cancelled()  # the partial step is dropped; progress.cursor is still its start
                cursor, indices = next(stream)
                indices = self.world.share(indices)  # this rank's part of the global batch
                if len(indices) == 0:
                    continue
                real_tokens += batch_tokens(indices, self.plan.lengths)
                for piece in self.micro_batches(indices, self.plan.lengths, config.data.max_batch_tokens):
                    pass_tokens = max(pass_tokens, padded_tokens(piece, self.plan.lengths))
                    batch = make_batch(examples, piece)
                    (micro_loss, micro_tokens), grads = loss_and_grad(model, *map(mx.array, batch))
                    if grad_sum is None:
                        grad_sum, loss_sum, tokens = grads, micro_loss, micro_tokens
                    else:
                        grad_sum = tree_map(mx.add, grad_sum, grads)
                        loss_sum, tokens = loss_sum + micro_loss, tokens + micro_tokens
                    mx.eval(grad_sum, loss_sum, tokens)
            grad_sum, loss_sum, tokens, real_tokens = self.world.sum_step(model, grad_sum, loss_sum, tokens,
                                                                          real_tokens)
            # A step that passed the memory limit is dropped before its update (every rank agrees).
            peak = mx.get_peak_memory()
            if self.world.mean(float(peak > self.memory_guard.limit)) > 0:
                return self._out_of_memory(step, peak, pass_tokens)
            # Check before updating: a NaN must never reach the weights or a checkpoint.
            grad_norm_sq = sum((g.astype(mx.float32) ** 2).sum() for _, g in tree_flatten(grad_sum))
            loss_value, token_count, grad_finite = loss_sum.item(), tokens.item(), math.isfinite(grad_norm_sq.item())
            if not (math.isfinite(loss_value) and grad_finite):
                return self._diverged(step, loss_value / max(token_count, 1), grad_finite)
            learning_rate = learning_rate_at(step, config, self.total_steps)
            self.optimizer.set_learning_rate(learning_rate)
            grads = apply_update(grad_sum, tokens)
            mx.eval(model.parameters(), self.optimizer.state)
            self.hooks.after_update(step, grads)
            progress.step, progress.cursor = step, cursor
            progress.trained_tokens += int(token_count)
            report_loss += loss_value
            report_tokens += token_count
            report_real_tokens += real_tokens
            report_time += time.perf_counter() - step_start
            progress.elapsed_s = self.session_start_elapsed + time.perf_counter() - self.session_start

            if step % config.run.steps_per_report == 0 or step == self.total_steps:
                self.last_loss = report_loss / max(report_tokens, 1)
                self._report(step, learning_rate, report_real_tokens / max(report_time, 1e-9))
                report_loss = report_tokens = 0.0
                report_real_tokens, report_time = 0, 0.0
            if self._eval_due(step) and self._evaluate_and_maybe_stop_early():
                return self._finish("early stopping")
            if step % config.run.save_every == 0 or step == self.total_steps:
                self._checkpoint()
        return self._finish("completed")

    def _report(self, step: int, learning_rate: float, tokens_per_second: float) -> None:
        progress = self.progress
        session_steps = step - self.session_start_step
        per_step = (time.perf_counter() - self.session_start) / max(session_steps, 1)
        self.out.emit(StepReport(
            step=step, total_steps=self.total_steps,
            epoch=round(step / self.steps_per_epoch, 4), loss=self.last_loss, learning_rate=learning_rate,
            tokens_per_second=round(tokens_per_second, 2), trained_tokens=progress.trained_tokens,
            peak_memory_gb=round(mx.get_peak_memory() / 1e9, 4), elapsed_s=round(progress.elapsed_s, 3),
            eta_s=round(per_step * (self.total_steps - step), 1)))

    # -- validation, checkpoints --------------------------------------------
    def _eval_due(self, step: int) -> bool:
        return bool(self.valid_set.examples) and (
            step % self.config.evaluation.steps_per_eval == 0 or step == self.total_steps)

    def _evaluate(self, baseline: bool = False) -> float:
        evaluation = self.config.evaluation
        val_loss, extra = self.objective.evaluate(self.prepared.model, self.loss, self.valid_set.examples,
                                                  self.config.data.batch_size, evaluation.val_batches,
                                                  self.config.run.seed, self.should_stop)
        val_loss = self.world.mean(val_loss)
        progress = self.progress
        best = False
        if not baseline:
            progress.last_eval_step = progress.step
            if progress.best_val_loss is None or val_loss < progress.best_val_loss - evaluation.early_stopping_min_delta:
                progress.best_val_loss, progress.best_step, progress.evals_since_best = val_loss, progress.step, 0
                best = True
            else:
                progress.evals_since_best += 1
        self.out.emit(EvalReport(progress.step, val_loss, best, progress.best_val_loss, progress.best_step, **extra))
        if best:
            self._checkpoint(best=True)
        return val_loss

    def _evaluate_and_maybe_stop_early(self) -> bool:
        self._evaluate()
        patience = self.config.evaluation.early_stopping_patience
        return bool(patience) and self.progress.evals_since_best >= patience

    def _checkpoint(self, best: bool = False) -> None:
        progress = self.progress
        if (progress.step == self.last_checkpoint_step and not best) or not self.world.is_main:
            return
        weights, adapter_config = self.hooks.saved_adapter(trained_weights(self.prepared.model),
                                                           self.prepared.adapter_config)
        optimizer_state = dict(tree_flatten(self.optimizer.state))
        learning_rate = learning_rate_at(max(progress.step, 1), self.config, self.total_steps)
        path = self.folder.save_checkpoint(progress.step, weights, adapter_config, optimizer_state,
                                        progress.to_dict(self.config.run.seed, learning_rate,
                                                         self.train_set.fingerprint()), best,
                                        self.config.run.keep_checkpoints, self.hooks.state())
        self.last_checkpoint, self.last_checkpoint_step = path, progress.step
        self.out.emit(CheckpointSaved(progress.step, str(path), best))

    # -- endings -----------------------------------------------------------
    def _result(self, status: str, reason: str) -> RunResult:
        progress = self.progress
        return RunResult(status, self.folder.path, progress.step, self.total_steps, reason, self.last_loss,
                         progress.best_val_loss, progress.best_step, self.last_checkpoint)

    def _finish(self, reason: str) -> RunResult:
        progress = self.progress
        if reason != "completed":
            reason = (f"early stopping: the validation loss has not improved for {progress.evals_since_best} "
                      f"evaluations (best {progress.best_val_loss:.4f} at step {progress.best_step})")
        try:
            self._checkpoint()
        except NonFiniteError as exc:
            return self._failed(f"{exc}; nothing was saved at step {progress.step}")
        self.hooks.finish(progress.step)
        self.out.emit(RunFinished(progress.step, str(self.folder.path), reason, self.last_loss,
                                  progress.best_val_loss, progress.best_step, round(progress.elapsed_s, 3)))
        return self._result("finished", reason)

    def _stopped(self) -> RunResult:
        progress = self.progress
        if progress.step > 0:
            self._checkpoint()
        where = self.last_checkpoint
        reason = (f"stopped at step {progress.step}; continue with: mlx-lora train --resume {self.folder.path}"
                  if where else "stopped before the first step; nothing to resume")
        self.out.emit(RunStopped(progress.step, str(self.folder.path), str(where) if where else None, reason))
        return self._result("stopped", reason)

    def _out_of_memory(self, step: int, peak: int, pass_tokens: int) -> RunResult:
        """Stopped by the memory guard: a checkpoint of the last whole step, and what to lower."""
        progress = self.progress
        reason = self.memory_guard.advice(step, peak, pass_tokens, self.config.data.max_batch_tokens)
        if progress.step > 0:
            self._checkpoint()
            reason += f"; continue with: mlx-lora train --resume {self.folder.path} --max-batch-tokens N"
        else:
            reason += "; nothing was trained yet: start again with the lower setting"
        where = self.last_checkpoint
        self.out.emit(RunStopped(progress.step, str(self.folder.path), str(where) if where else None, reason))
        return self._result("stopped", reason)

    def _diverged(self, step: int, loss: float, grad_finite: bool) -> RunResult:
        what = f"the loss was {loss}" if grad_finite else "the gradient was not finite"
        lr = self.config.optimizer.learning_rate
        where = (f"the last good checkpoint is {self.last_checkpoint} (step {self.last_checkpoint_step})"
                 if self.last_checkpoint else "no checkpoint was saved before it")
        return self._failed(f"training diverged at step {step}: {what}. The learning rate ({lr:g}) is probably "
                            f"too high: start a new run with a lower --learning-rate (e.g. {lr / 10:g}); {where}")

    def _failed(self, reason: str) -> RunResult:
        self.out.emit(RunFailed(self.progress.step, str(self.folder.path),
                                str(self.last_checkpoint) if self.last_checkpoint else None, reason))
        return self._result("failed", reason)
