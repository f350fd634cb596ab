"""``mlx-lora train``, ``mlx-lora eval`` and ``mlx-lora demo``.

``train`` flags are generated from :mod:`mlx_lora.config` (one per setting) plus
``--config FILE`` and ``--json-events``. Without ``--json-events`` it prints a
progress line per report; with it, stdout carries one JSON object per event and
nothing else (anything else that would print goes to stderr), for the app's
training supervisor. SIGTERM and the first Ctrl-C ask the run to stop: it
finishes or drops the current step, writes a checkpoint and exits 0; a second
Ctrl-C interrupts at once. The printers and the stop flag are
:mod:`mlx_lora.cli.reporting`'s; ``--hostfile`` hands over to :mod:`mlx_lora.cli.launch`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from mlx_lora.cli.reporting import JsonLinesReporter, ProgressPrinter, StopFlag


def register(sub) -> None:
    from mlx_lora.cli.config_flags import add_config_arguments
    from mlx_lora.methods import METHODS

    labels = [m.label for m in METHODS.values()]
    p = sub.add_parser("train", help=f"fine-tune a model with {', '.join(labels[:-1])} or {labels[-1].lower()}",
                       description="Fine-tune a model. Flags override --config, which overrides the defaults.")
    add_config_arguments(p)
    p.add_argument("--json-events", action="store_true",
                   help="print one JSON object per event on stdout (for the app), nothing else")
    p.set_defaults(func=_train)

    from mlx_lora.evaluation.results import GenerationSettings

    defaults = GenerationSettings()
    e = sub.add_parser("eval", help="loss and perplexity of a run's adapter on its test (or other) split; with "
                                    "--generate, base vs tuned answers scored against the references",
                       description="Loss and perplexity of a run's adapter on a split of its data. With --generate: "
                                   "the base and the tuned model answer each example (greedy), scored against the "
                                   "reference by exact match, token F1 and ROUGE-L, with the reference's loss per "
                                   "token under each; saved in the run folder (generation_eval.json).")
    e.add_argument("--run", metavar="RUN_DIR", help="the run folder (required)")
    e.add_argument("--split", choices=["test", "valid", "train"], default=None,
                   help="which split (default: test; with --generate, a sample of validation when there is no test)")
    e.add_argument("--adapter", default="final", help="final (default), best, latest or step-N")
    e.add_argument("--batch-size", type=int, help="examples per batch (default: the run's)")
    e.add_argument("--generate", action="store_true", help="generate with base and tuned and score the answers")
    e.add_argument("--limit", type=int, default=defaults.limit,
                   help=f"--generate: examples at most, a seeded sample (default: {defaults.limit}; 0: all)")
    e.add_argument("--max-tokens", type=int, default=defaults.max_tokens,
                   help=f"--generate: new tokens per answer at most (default: {defaults.max_tokens})")
    e.add_argument("--judge", nargs="?", const="base", metavar="MODEL",
                   help="--generate: a judge model rates tuned vs base answers pairwise (the run's base when no "
                        "MODEL is named)")
    e.add_argument("--judge-prompt", metavar="FILE",
                   help="--judge: your own prompt, with {prompt} {reference} {answer_a} {answer_b} "
                        "(see --print-judge-prompt)")
    e.add_argument("--print-judge-prompt", action="store_true", help="print the default judge prompt and exit")
    e.add_argument("--json", action="store_true", help="print JSON")
    e.set_defaults(func=_eval)

    d = sub.add_parser("demo", help="a short fine-tune of the demo model on the pirate dataset, with a "
                                    "before/after answer")
    d.add_argument("--iters", type=int, default=None, help="training steps (default: 30)")
    d.add_argument("--prompt", help="the question to ask before and after")
    d.add_argument("--run-dir", help="where to write the run (default: the app's runs folder)")
    d.add_argument("--no-export", action="store_true", help="skip exporting the fused model at the end")
    d.set_defaults(func=_demo)


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
        if (config.run.hostfile or config.run.gpus > 1) and not launched():  # mlx.launch runs the ranks
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

    if args.print_judge_prompt:
        from mlx_lora.evaluation.judge import DEFAULT_PROMPT

        print(DEFAULT_PROMPT)
        return 0
    if not args.run:
        from mlx_lora.errors import UserError

        raise UserError("mlx-lora eval: --run RUN_DIR is required")
    if args.generate:
        return _eval_generate(args)
    result = evaluate_run(args.run, split=args.split or "test", adapter=args.adapter, batch_size=args.batch_size)
    if args.json:
        print(json.dumps(result.__dict__))
    else:
        print(f"{result.split} loss {result.loss:.4f}, perplexity {result.perplexity:.3f} "
              f"({result.examples} examples, {result.tokens} trained tokens; adapter {result.adapter})")
    return 0


def _eval_generate(args: argparse.Namespace) -> int:
    from mlx_lora.errors import Cancelled
    from mlx_lora.evaluation import GenerationSettings, evaluate_generation
    from mlx_lora.evaluation.results import format_result
    from mlx_lora.run_folder import RunFolder

    from mlx_lora.errors import UserError

    judge_prompt = None
    if args.judge_prompt:
        try:
            judge_prompt = open(args.judge_prompt, encoding="utf-8").read()
        except OSError as exc:
            raise UserError(f"{args.judge_prompt}: cannot read the judge prompt ({exc.strerror})") from exc
    settings = GenerationSettings(split=args.split, limit=args.limit, max_tokens=args.max_tokens,
                                  adapter=args.adapter, judge=args.judge, judge_prompt=judge_prompt)
    stop = StopFlag()
    stop.install()
    try:
        result = evaluate_generation(args.run, settings, ProgressPrinter(sys.stderr), stop)
    except Cancelled:
        print("evaluation stopped; nothing was saved", file=sys.stderr)
        return 130
    finally:
        stop.uninstall()
    saved = RunFolder(args.run).generation_eval_path
    if args.json:
        print(json.dumps({**result.to_dict(), "saved": str(saved)}, ensure_ascii=False))
    else:
        print(format_result(result))
        print(f"\nsaved: {saved}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mlx_lora.demo_training import DEFAULT_STEPS, run_demo

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
