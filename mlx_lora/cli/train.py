"""``mlx-lora train``, ``mlx-lora eval`` and ``mlx-lora demo``.

``train`` flags are generated from :mod:`mlx_lora.config` (one per setting) plus
``--config FILE`` and ``--json-events``. Without ``--json-events`` it prints a
progress line per report; with it, stdout carries one JSON object per event and
nothing else (anything else that would print goes to stderr), for the app's
training supervisor. SIGTERM and the first Ctrl-C ask the run to stop: it
finishes or drops the current step, writes a checkpoint and exits 0; a second
Ctrl-C interrupts at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import TextIO

from mlx_lora.events import Event


def register(sub) -> None:
    from mlx_lora.cli.config_flags import add_config_arguments

    p = sub.add_parser("train", help="fine-tune a model with LoRA, QLoRA, DoRA or full fine-tuning",
                       description="Fine-tune a model. Flags override --config, which overrides the defaults.")
    add_config_arguments(p)
    p.add_argument("--json-events", action="store_true",
                   help="print one JSON object per event on stdout (for the app), nothing else")
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="loss and perplexity of a run's adapter on its test (or other) split")
    e.add_argument("--run", required=True, metavar="RUN_DIR", help="the run folder")
    e.add_argument("--split", choices=["test", "valid", "train"], default="test", help="which split (default: test)")
    e.add_argument("--adapter", default="final", help="final (default), best, latest or step-N")
    e.add_argument("--batch-size", type=int, help="examples per batch (default: the run's)")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_eval)

    d = sub.add_parser("demo", help="a short fine-tune of the demo model on the pirate dataset, with a "
                                    "before/after answer")
    d.add_argument("--iters", type=int, default=None, help="training steps (default: 30)")
    d.add_argument("--prompt", help="the question to ask before and after")
    d.add_argument("--run-dir", help="where to write the run (default: the app's runs folder)")
    d.add_argument("--no-export", action="store_true", help="skip exporting the fused model at the end")
    d.set_defaults(func=_demo)


class ProgressPrinter:
    """One line per report, evaluation and checkpoint; the run's notes when it starts."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        from mlx_lora.events import Progress
        from mlx_lora.train import events as ev

        line = None
        if isinstance(event, Progress):
            line = f"{event.message}…"
        elif isinstance(event, ev.RunStarted):
            share = 100 * event.trainable_parameters / max(event.total_parameters, 1)
            line = (f"{'resuming' if event.resumed else 'training'} {event.model} ({event.fine_tune_type}) → "
                    f"{event.run_dir}\n  {event.trainable_parameters:,} trainable of {event.total_parameters:,} "
                    f"parameters ({share:.3f}%); {event.train_examples} train / {event.valid_examples} valid "
                    f"examples, {event.train_tokens:,} tokens; {event.total_steps} steps "
                    f"({event.steps_per_epoch:g} per epoch); padding {100 * event.padding_fraction:.1f}%; "
                    f"{event.device} {event.compute_dtype}")
            line += "".join(f"\n  note: {note}" for note in event.notes)
        elif isinstance(event, ev.StepReport):
            line = (f"step {event.step:>5}/{event.total_steps}  loss {event.loss:.4f}  lr {event.learning_rate:.2e}  "
                    f"{event.tokens_per_second:,.0f} tok/s  peak {event.peak_memory_gb:.2f} GB  "
                    f"eta {_duration(event.eta_s)}")
        elif isinstance(event, ev.EvalReport):
            line = f"step {event.step:>5}  val loss {event.val_loss:.4f}"
            if event.reward_margin is not None:  # dpo, orpo
                line += f"  reward margin {event.reward_margin:.4f}  accuracy {event.reward_accuracy:.0%}"
            line += "  (best)" if event.best else ""
        elif isinstance(event, (ev.AdapterMerged, ev.AdapterRanks)):
            line = f"step {event.step:>5}  {event.message}"
        elif isinstance(event, ev.CheckpointSaved):
            line = f"step {event.step:>5}  saved {event.path}" + ("  (best)" if event.best else "")
        elif isinstance(event, ev.RunFinished):
            line = f"finished at step {event.step} ({event.reason}) in {_duration(event.elapsed_s)}: {event.run_dir}"
            if event.best_val_loss is not None:
                line += f"\n  best val loss {event.best_val_loss:.4f} at step {event.best_step} (best/)"
        elif isinstance(event, (ev.RunStopped, ev.RunFailed)):
            line = event.reason if isinstance(event, ev.RunStopped) else f"failed: {event.reason}"
        if line:
            print(line, file=self.stream, flush=True)


class JsonLinesReporter:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, event: Event) -> None:
        self.stream.write(event.to_json() + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class StopFlag:
    """SIGTERM/SIGINT → should_stop; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def request(self) -> None:
        self.requested = True

    def install(self, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}

    def uninstall(self) -> None:
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("stopping after this step (Ctrl-C again to interrupt now)…", file=sys.stderr, flush=True)


def _train(args: argparse.Namespace) -> int:
    from mlx_lora.cli.config_flags import config_from_args
    from mlx_lora.train import train
    from mlx_lora.cli.launch import run_launched, watch_stdin_for_stop
    from mlx_lora.train.distributed import launched

    stdout = sys.stdout
    if args.json_events:
        # stdout is the event channel: everything else anyone prints goes to stderr
        reporter = JsonLinesReporter(stdout)
        sys.stdout = sys.stderr
    else:
        reporter = ProgressPrinter(stdout)
    stop = StopFlag()
    try:
        config = config_from_args(args)
        if config.run.hostfile and not launched():  # several machines: mlx.launch runs the ranks
            sys.stdout = stdout
            return run_launched(config, args.json_events, stdout)
        if launched():
            # a rank: run_launched's "stop" line arrives on stdin, and SIGTERM keeps its default (end
            # now), which is how mlx.launch ends the other ranks when one fails — a Python handler
            # would never run while the rank waits in an all-reduce for the rank that is gone
            stop.install(signals=(signal.SIGINT,))
            watch_stdin_for_stop(stop.request)
        else:
            stop.install()
        result = train(config, reporter, stop)
    finally:
        sys.stdout = stdout
        stop.uninstall()
    return 0 if result.status in ("finished", "stopped") else 1


def _eval(args: argparse.Namespace) -> int:
    from mlx_lora.train.evaluate import evaluate_run

    result = evaluate_run(args.run, split=args.split, adapter=args.adapter, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"{result.split} loss {result.loss:.4f}, perplexity {result.perplexity:.3f} "
              f"({result.examples} examples, {result.tokens} trained tokens; adapter {result.adapter})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mlx_lora.demo_run import DEFAULT_STEPS, run_demo

    stop = StopFlag()
    stop.install()
    try:
        result = run_demo(reporter=ProgressPrinter(sys.stderr), should_stop=stop,
                          iters=args.iters or DEFAULT_STEPS, prompt=args.prompt, run_dir=args.run_dir,
                          export=not args.no_export)
    finally:
        stop.uninstall()
    print(f"\nQ: {result.prompt}")
    print(f"before: {result.before}")
    print(f"after:  {result.after}")
    print(f"\nrun: {result.run.run_dir} ({result.run.status}, step {result.run.step})")
    if result.export is not None:
        check = result.export.checks[0]
        print(f"export: {result.export.out_dir} (fused MLX model; verified: top-1 agreement "
              f"{check.top1_agreement:.1%} with base+adapter on {check.prompts} prompts)")
        print(f"chat with it: mlx-lora chat --model {result.export.out_dir}")
    return 0 if result.run.status == "finished" else 1
