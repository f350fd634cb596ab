"""Our trainer next to mlx-lm's, on the demo model on this CPU.

    .venv/bin/python bench/train_vs_mlx_lm.py [--iters 25] [--window 5] [--repeats 1]
    .venv/bin/python bench/train_vs_mlx_lm.py --data long-tailed --batch-size 8 --max-seq-length 1024 \
        --worst-first [--ours '{"max_batch_tokens": 2048}']

Both runs use the same settings: the demo model dequantised to one fp32 folder
(so neither spends time dequantising, and both compute in fp32 through
OpenBLAS — each process imports mlx_lora first), the pirate sample dataset
with prompt masking, LoRA rank 8 (scale 2) on all linear layers of the last 16
layers, batch 4, max length 256, Adam at 1e-4, no validation during the timed
steps. mlx-lm runs its own ``mlx_lm.tuner.trainer.train`` (compiled step,
random batches padded to a multiple of 32) exactly as ``mlx_lm.lora`` sets it
up; only its batch iterator is wrapped to count the real (non-padding) tokens.

Each trainer runs in its own process, one after the other (``--repeats``
alternates them). Throughput is measured over the steps after ``--warmup``:
dataset tokens (prompt + answer, no padding) per second and examples per
second, from each trainer's own report windows. Peak memory is MLX's peak
allocation during training (``mx.get_peak_memory``, reset before the first
step) and the process's maximum RSS. Prints a markdown table with ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SETTINGS = dict(rank=8, scale=2.0, num_layers=16, batch_size=4, max_seq_length=256, learning_rate=1e-4)

OURS = r"""
import json, resource, sys, time
started = time.perf_counter()
import mlx_lora  # OpenBLAS preload before mlx.core
import mlx.core as mx
import numpy as np
from mlx_lora.config import TrainConfig
from mlx_lora.events import RecordingReporter
from mlx_lora.train import RunStarted, StepReport, train
from mlx_lora.train.batches import BatchPlan, micro_batches, padded_tokens
from mlx_lora.train.packing import PackedPlan
model, data, run_dir, iters, window, s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
from mlx_lora.train import evaluate
from mlx_lora.methods import lora
from mlx_lora.train import prepare
from mlx_lora.train import memory_guard
rows = []  # per step: (examples, real tokens)
def counting_micro_batches(indices, lengths, cap):  # the loop's one call per step (no accumulation here)
    flat = indices[indices >= 0] if indices.ndim == 2 else indices  # a packed batch: rows of examples
    rows.append((len(flat), int(lengths[flat].sum())))
    return micro_batches(indices, lengths, cap)
for name, value in s.get("module", {}).items():  # e.g. {"lora.CAST_LORA": false}: module settings to measure
    module, attr = name.split(".")
    setattr({"evaluate": evaluate, "lora": lora, "prepare": prepare, "memory_guard": memory_guard}[module], attr, value)
class WorstFirst(PackedPlan if s.get("ours", {}).get("pack") else BatchPlan):  # the batch with the most padded tokens comes first: its peak counts
    def epoch(self, epoch):
        batches = list(super().epoch(epoch))
        if epoch == 0:
            worst = max(range(len(batches)), key=lambda i: padded_tokens(batches[i], self.lengths))
            batches.insert(0, batches.pop(worst))
            self._cache = {0: batches}
        return batches
config = TrainConfig().replace(
    model=model, data=data, run_dir=run_dir, iters=iters, steps_per_report=window, steps_per_eval=10**6,
    save_every=10**6, valid_ratio=0.0, rank=s["rank"], alpha=s["scale"] * s["rank"], num_layers=s["num_layers"],
    batch_size=s["batch_size"], max_seq_length=s["max_seq_length"], learning_rate=s["learning_rate"],
    lr_schedule="constant", max_grad_norm=0.0, mask_prompt=True, compute_dtype=s.get("compute_dtype", "float32"),
    **s.get("ours", {}))
class Recorder(RecordingReporter):
    load_peak_gb, loaded_at = None, started
    def emit(self, event):
        if isinstance(event, RunStarted):  # the setup's count of cut batches is not a step
            rows.clear()
            self.load_peak_gb = mx.get_peak_memory() / 1e9  # loading (and quantising) the base: reset next
            self.loaded_at = time.perf_counter()
        super().emit(event)
recorder = Recorder()
result = train(config, recorder, batch_plan=WorstFirst if s.get("worst_first") else BatchPlan,
               micro_batches=counting_micro_batches, **s.get("train", {}))  # e.g. {"compiled": false}
reports = recorder.of(StepReport)
examples, seconds, window_rows = [], [], []
for k, r in enumerate(reports):
    part = rows[k * window:(k + 1) * window]
    seconds.append(sum(t for _, t in part) / r.tokens_per_second)
    window_rows.append(sum(n for n, _ in part))
    examples.append(window_rows[-1] / seconds[-1])
print("RESULT " + json.dumps({
    "windows": [r.tokens_per_second for r in reports], "examples": examples, "rows": window_rows,
    "peak_gb": max((r.peak_memory_gb for r in reports), default=None),
    "status": result.status, "reason": result.reason,
    "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    "final_loss": result.final_loss, "load_peak_gb": recorder.load_peak_gb,
    "load_s": recorder.loaded_at - started, "first_window_s": seconds[0] if seconds else None}))
"""

MLX_LM = r"""
import json, resource, sys, time
import mlx_lora  # OpenBLAS preload before mlx.core
import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from pathlib import Path
from mlx_lm.utils import load
from mlx_lm.tuner.datasets import CacheDataset, ChatDataset
from mlx_lm.tuner.trainer import TrainingArgs, TrainingCallback, iterate_batches, train
from mlx_lm.tuner.utils import linear_to_lora_layers
model_path, data, run_dir, iters, window, s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
np.random.seed(0); mx.random.seed(0)
model, tokenizer = load(model_path)
model.freeze()
linear_to_lora_layers(model, s["num_layers"], {"rank": s["rank"], "scale": s["scale"], "dropout": 0.0})
records = [json.loads(l) for l in (Path(data) / "train.jsonl").read_text().splitlines() if l.strip()]
dataset = CacheDataset(ChatDataset(records, tokenizer, mask_prompt=True))
real_tokens, rows = [], []  # per iteration: non-padding tokens and examples in the batch
def counting_batches(**kwargs):
    if s.get("worst_first"):  # a batch holding the longest examples first (width max_seq_length): its peak counts
        longest = sorted(range(len(dataset)), key=lambda i: -len(dataset[i][0]))[:kwargs["batch_size"]]
        first = next(iterate_batches(**{**kwargs, "dataset": [dataset[i] for i in longest]}))
        real_tokens.append(int(np.array(first[1])[:, 1].sum())); rows.append(first[0].shape[0])
        yield first
    for batch, lengths in iterate_batches(**kwargs):
        real_tokens.append(int(np.array(lengths)[:, 1].sum())); rows.append(batch.shape[0])
        yield batch, lengths
windows, examples = [], []
class Callback(TrainingCallback):
    def on_train_loss_report(self, info):
        seconds = window / info["iterations_per_second"]
        done = len(windows) * window
        windows.append(sum(real_tokens[done:done + window]) / seconds)
        examples.append(sum(rows[done:done + window]) / seconds)
        self.loss = info["train_loss"]
callback = Callback()
args = TrainingArgs(batch_size=s["batch_size"], iters=iters, steps_per_report=window, steps_per_eval=10**6,
                    steps_per_save=10**6, max_seq_length=s["max_seq_length"],
                    adapter_file=str(Path(run_dir) / "adapters.safetensors"))
Path(run_dir).mkdir(parents=True, exist_ok=True)
mx.reset_peak_memory()
train(model=model, optimizer=optim.Adam(learning_rate=s["learning_rate"]), train_dataset=dataset, val_dataset=None,
      args=args, iterate_batches=counting_batches, training_callback=callback)
print("RESULT " + json.dumps({
    "windows": windows, "examples": examples, "rows": [sum(rows[k * window:(k + 1) * window]) for k in range(len(windows))],
    "peak_gb": mx.get_peak_memory() / 1e9,
    "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "final_loss": callback.loss}))
"""

FP32_COPY = r"""
import json, shutil, sys
import mlx_lora
import mlx.core as mx
from pathlib import Path
from mlx.utils import tree_flatten
from mlx_lm.utils import dequantize_model, load
from mlx_lora.models.demo import demo_model_path
src, out = demo_model_path(), Path(sys.argv[1])
model, _ = load(str(src))
model = dequantize_model(model)
model.set_dtype(mx.float32)
out.mkdir(parents=True, exist_ok=True)
mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
config = json.loads((src / "config.json").read_text())
for key in ("quantization", "quantization_config"):
    config.pop(key, None)
config["torch_dtype"] = "float32"
(out / "config.json").write_text(json.dumps(config, indent=2))
for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
    if (src / name).exists():
        shutil.copy(src / name, out / name)
"""


def run(code: str, *args: str, python: str | None = None, timeout: float | None = None) -> dict:
    try:
        proc = subprocess.run([python or sys.executable, "-c", code, *args], capture_output=True, text=True,
                              cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise SystemExit(f"timed out after {timeout:.0f} s; its last output: {out[-1500:]}")
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=25, help="steps per run (default 25)")
    parser.add_argument("--window", type=int, default=5, help="steps per report window; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each trainer, alternated")
    parser.add_argument("--data", choices=("pirate", "long-tailed"), default="pirate",
                        help="the pirate sample set, or bench/long_tailed.py's synthetic chats")
    parser.add_argument("--examples", type=int, default=2000,
                        help="long-tailed: how many chats (400 at batch 8 is one 50-step epoch with --iters 50)")
    parser.add_argument("--batch-size", type=int, default=SETTINGS["batch_size"])
    parser.add_argument("--max-seq-length", type=int, default=SETTINGS["max_seq_length"])
    parser.add_argument("--num-layers", type=int, default=SETTINGS["num_layers"])
    parser.add_argument("--ours", default="{}", help='extra settings for our trainer, JSON, e.g. '
                                                     '\'{"max_batch_tokens": 2048}\'')
    parser.add_argument("--worst-first", action="store_true",
                        help="each trainer starts with its largest batch, so the peak memory is its worst case")
    parser.add_argument("--only", choices=("ours", "mlx-lm"))
    args = parser.parse_args()
    settings = {**SETTINGS, "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
                "num_layers": args.num_layers, "ours": json.loads(args.ours), "worst_first": args.worst_first}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        if args.data == "pirate":
            data = str(REPO / "resources" / "datasets" / "pirate")
        else:
            from bench.long_tailed import make_chats

            data = str(make_chats(Path(tmp) / "long-tailed", args.examples))
        model = Path(tmp) / "demo-fp32"
        subprocess.run([sys.executable, "-c", FP32_COPY, str(model)], check=True, cwd=REPO)
        results: dict[str, list[dict]] = {"ours": [], "mlx-lm": []}
        for repeat in range(args.repeats):
            for name, code in (("ours", OURS), ("mlx-lm", MLX_LM)):
                if args.only and name != args.only:
                    continue
                run_dir = str(Path(tmp) / f"{name}-{repeat}")
                print(f"running {name} ({repeat + 1}/{args.repeats})…", file=sys.stderr, flush=True)
                results[name].append(run(code, str(model), data, run_dir, str(args.iters), str(args.window),
                                         json.dumps(settings)))
                print(json.dumps(results[name][-1]), file=sys.stderr, flush=True)
    print_table(results, settings, args)


def summary(runs: list[dict]) -> dict:
    throughput = [w for r in runs for w in r["windows"][1:]]  # the first window is warm-up
    examples = [w for r in runs for w in r["examples"][1:]]
    # every step, the first window too: over a whole epoch (--examples × batch = --iters) each
    # trainer then sees the same examples once
    seconds = [n / e for r in runs for n, e in zip(r.get("rows", []), r["examples"])]
    return {"tokens/s": statistics.mean(throughput), "examples/s": statistics.mean(examples),
            "all examples/s": sum(sum(r.get("rows", [])) for r in runs) / sum(seconds) if seconds else float("nan"),
            "peak": max(r["peak_gb"] for r in runs), "rss": max(r["max_rss_gb"] for r in runs),
            "loss": statistics.mean(r["final_loss"] for r in runs)}


def print_table(results: dict[str, list[dict]], settings: dict, args) -> None:
    names = [n for n in ("mlx-lm", "ours") if results[n]]
    rows = {n: summary(results[n]) for n in names}
    print(f"\nDemo model (SmolLM2-135M) dequantised to fp32, {args.data} dataset, LoRA rank {settings['rank']} on "
          f"the last {settings['num_layers']} layers, batch {settings['batch_size']}, max length "
          f"{settings['max_seq_length']}, {args.iters} steps ({args.window} warm-up) × {args.repeats}, CPU + "
          f"OpenBLAS; ours with {settings['ours'] or 'defaults'}{', largest batch first' * args.worst_first}.\n")
    print("| measure | " + " | ".join(names) + (" | ours / mlx-lm |" if len(names) == 2 else " |"))
    print("|---|" + "---|" * (len(names) + (len(names) == 2)))
    for key, label, fmt in (("examples/s", "examples/s (after the first window)", "{:.2f}"),
                            ("all examples/s", "examples/s over every step", "{:.2f}"),
                            ("tokens/s", "dataset tokens/s (no padding)",
                                                                     "{:.1f}"),
                            ("peak", "peak MLX memory while training (GB)", "{:.2f}"),
                            ("rss", "max RSS of the process (GB)", "{:.2f}"),
                            ("loss", "training loss of the last window", "{:.3f}")):
        cells = [fmt.format(rows[n][key]) for n in names]
        ratio = ""
        if len(names) == 2:
            ratio = " (different batches) |" if key == "loss" else f" {rows['ours'][key] / rows['mlx-lm'][key]:.2f}× |"
        print(f"| {label} | " + " | ".join(cells) + " |" + ratio)


if __name__ == "__main__":
    main()
