"""Sequence packing (``data.pack``) against today's length bucketing, on the demo model on this CPU.

    .venv/bin/python bench/packing.py [--examples 240] [--max-seq-length 1024] [--batch-size 8] \
        [--pack-rows 1,4] [--max-batch-tokens 4096] [--parallel]

One epoch of the same long-tailed chats (bench/long_tailed.py) for each run, in its own
process one after the other: ``bucketing`` (batches of ``--batch-size`` examples, sorted by
length inside windows, padded to their longest: the default) and ``pack, N rows`` for each
N of ``--pack-rows`` (batches of N rows of ``--max-seq-length`` tokens, examples packed end
to end, attention within each). Same model and settings otherwise: the demo model
dequantised to fp32 through OpenBLAS, LoRA rank 8 (scale 2) on the last 16 layers, Adam
1e-4, prompt masking, no validation. Measured per run: dataset tokens (no padding) per
second over the whole epoch and over the steps after the first report window, and per CPU
second (user + system time of the process's threads: on a machine shared with other jobs the
wall clock measures the load as much as the trainer; the CPU time measures the work), the share
of the passes' positions that is padding (counted on the passes the loop ran, after
``max_batch_tokens``'s cuts), MLX's peak memory and the process's maximum RSS. Prints a
markdown table with each packed run's ratio to bucketing from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys
import mlx_lora  # OpenBLAS preload before mlx.core
from mlx_lora.config import TrainConfig
from mlx_lora.events import RecordingReporter
from mlx_lora.train import RunFinished, RunStarted, StepReport, train
from mlx_lora.train.batches import micro_batches, row_lengths
model, data, run_dir, s = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
counts = {"padded": 0, "real": 0, "passes": 0, "examples": 0, "steps": 0}
def counting_micro_batches(indices, lengths, cap):
    pieces = micro_batches(indices, lengths, cap)
    for piece in pieces:
        widths = row_lengths(piece, lengths) - 1  # positions of each row
        counts["padded"] += int(widths.max()) * len(piece)
        counts["real"] += int(widths.sum())
        counts["passes"] += 1
    counts["examples"] += int((indices >= 0).sum())
    counts["steps"] += 1
    return pieces
config = TrainConfig().replace(
    model=model, data=data, run_dir=run_dir, epochs=1, steps_per_report=s["window"], steps_per_eval=10**6,
    save_every=10**6, valid_ratio=0.0, rank=8, alpha=16.0, num_layers=16, batch_size=s["batch_size"],
    max_seq_length=s["max_seq_length"], max_batch_tokens=s["max_batch_tokens"], learning_rate=1e-4,
    lr_schedule="constant", max_grad_norm=0.0, mask_prompt=True, compute_dtype="float32", pack=s["pack"])
def cpu_seconds():  # user + system time of every thread of this process
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
cpu = {}
class Recorder(RecordingReporter):
    def emit(self, event):
        if isinstance(event, RunStarted):  # the setup's count of cut batches is not a step
            counts.update(padded=0, real=0, passes=0, examples=0, steps=0)
            cpu["start"] = cpu_seconds()
        if isinstance(event, RunFinished):
            cpu["end"] = cpu_seconds()
        super().emit(event)
recorder = Recorder()
train(config, recorder, micro_batches=counting_micro_batches)
started, finished, reports = recorder.of(RunStarted)[0], recorder.of(RunFinished)[0], recorder.of(StepReport)
print("RESULT " + json.dumps({
    "tokens": started.train_tokens, "elapsed_s": finished.elapsed_s, "steps": finished.step,
    "cpu_s": cpu["end"] - cpu["start"],
    "steady_tokens_per_s": [r.tokens_per_second for r in reports[1:]],
    "padding": 1 - counts["real"] / counts["padded"], "passes": counts["passes"], "examples": counts["examples"],
    "peak_gb": max(r.peak_memory_gb for r in reports),
    "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "final_loss": reports[-1].loss}))
"""


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(err[-4000:])
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    from bench.long_tailed import make_chats
    from bench.train_vs_mlx_lm import FP32_COPY

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=240, help="long-tailed chats in the epoch")
    parser.add_argument("--max-seq-length", type=int, default=1024, help="the longest example; a packed row's length")
    parser.add_argument("--batch-size", type=int, default=8, help="bucketing: examples per batch")
    parser.add_argument("--pack-rows", default="1,4", help="packing: rows per batch, one run each")
    parser.add_argument("--max-batch-tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=2, help="steps per report window; the first is warm-up")
    parser.add_argument("--parallel", action="store_true",
                        help="run all at once, so on a machine shared with other jobs each sees the same load "
                             "(compare the CPU-time rates then; the wall clock is shared)")
    args = parser.parse_args()
    runs = [("bucketing", {"pack": False, "batch_size": args.batch_size})]
    runs += [(f"pack, {n} row{'s' * (int(n) > 1)}", {"pack": True, "batch_size": int(n)})
             for n in args.pack_rows.split(",") if n]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        data = str(make_chats(Path(tmp) / "long-tailed", args.examples))
        model = Path(tmp) / "demo-fp32"
        subprocess.run([sys.executable, "-c", FP32_COPY, str(model)], check=True, cwd=REPO)
        procs = {}
        for i, (name, extra) in enumerate(runs):
            settings = {"max_seq_length": args.max_seq_length, "max_batch_tokens": args.max_batch_tokens,
                        "window": args.window, **extra}
            print(f"running {name}…", file=sys.stderr, flush=True)
            procs[name] = start(str(model), data, str(Path(tmp) / f"run-{i}"), json.dumps(settings))
            if not args.parallel:
                results[name] = result(procs[name])
                print(json.dumps(results[name]), file=sys.stderr, flush=True)
        for name, proc in procs.items():
            if name not in results:
                results[name] = result(proc)
                print(json.dumps(results[name]), file=sys.stderr, flush=True)
    print_table(results, args)


def print_table(results: dict[str, dict], args) -> None:
    names = list(results)
    base = results["bucketing"]

    def epoch_rate(r):
        return r["tokens"] / r["elapsed_s"]

    def steady(r):
        rates = r["steady_tokens_per_s"]
        return sum(rates) / len(rates) if rates else float("nan")

    measures = [
        ("dataset tokens per CPU second over the epoch", lambda r: r["tokens"] / r["cpu_s"], "{:.1f}"),
        ("dataset tokens/s (wall clock) over the epoch", epoch_rate, "{:.1f}"),
        ("dataset tokens/s after the first window", steady, "{:.1f}"),
        ("padding share of the passes' positions", lambda r: r["padding"], "{:.3f}"),
        ("peak MLX memory (GB)", lambda r: r["peak_gb"], "{:.2f}"),
        ("max RSS of the process (GB)", lambda r: r["max_rss_gb"], "{:.2f}"),
        ("steps (passes) in the epoch", lambda r: f"{r['steps']} ({r['passes']})", "{}"),
        ("examples per step", lambda r: r["examples"] / r["steps"], "{:.1f}"),
        ("training loss of the last window", lambda r: r["final_loss"], "{:.3f}"),
    ]
    ratio_rows = {0, 1, 2, 4, 5}
    print(f"\nDemo model fp32 (CPU, OpenBLAS), {args.examples} long-tailed chats, one epoch, max length "
          f"{args.max_seq_length}, max_batch_tokens {args.max_batch_tokens}, LoRA rank 8 on the last 16 layers"
          f"{', the runs side by side' * args.parallel}.\n")
    header = "| measure | " + " | ".join(names) + " | " + " | ".join(f"{n} / bucketing" for n in names[1:]) + " |"
    print(header)
    print("|---|" + "---:|" * (2 * len(names) - 1))
    for row, (label, value, fmt) in enumerate(measures):
        cells = [fmt.format(value(results[n])) for n in names]
        ratios = [f"{value(results[n]) / value(base):.2f}×" if row in ratio_rows else "" for n in names[1:]]
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
