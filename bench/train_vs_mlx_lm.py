"""Our trainer next to mlx-lm's, on the demo model on this CPU.

    .venv/bin/python bench/train_vs_mlx_lm.py [--iters 25] [--warmup 5] [--repeats 1]

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
SETTINGS = dict(rank=8, scale=2.0, num_layers=16, batch_size=4, max_seq_length=256, learning_rate=1e-4)

OURS = r"""
import json, resource, sys
import mlx_lora  # OpenBLAS preload before mlx.core
import mlx.core as mx
from mlx_lora.config import TrainConfig
from mlx_lora.events import RecordingReporter
from mlx_lora.train import StepReport, train
model, data, run_dir, iters, window, s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
config = TrainConfig().replace(
    model=model, data=data, run_dir=run_dir, iters=iters, steps_per_report=window, steps_per_eval=10**6,
    save_every=10**6, valid_ratio=0.0, rank=s["rank"], alpha=s["scale"] * s["rank"], num_layers=s["num_layers"],
    batch_size=s["batch_size"], max_seq_length=s["max_seq_length"], learning_rate=s["learning_rate"],
    lr_schedule="constant", max_grad_norm=0.0, mask_prompt=True, compute_dtype="float32")
recorder = RecordingReporter()
result = train(config, recorder)
reports = recorder.of(StepReport)
print("RESULT " + json.dumps({
    "windows": [r.tokens_per_second for r in reports],
    "peak_gb": max(r.peak_memory_gb for r in reports),
    "max_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    "final_loss": result.final_loss}))
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
real_tokens = []  # per iteration: non-padding tokens in the batch
def counting_batches(**kwargs):
    for batch, lengths in iterate_batches(**kwargs):
        real_tokens.append(int(np.array(lengths)[:, 1].sum()))
        yield batch, lengths
windows = []
class Callback(TrainingCallback):
    def on_train_loss_report(self, info):
        seconds = window / info["iterations_per_second"]
        done = len(windows) * window
        windows.append(sum(real_tokens[done:done + window]) / seconds)
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
    "windows": windows, "peak_gb": mx.get_peak_memory() / 1e9,
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


def run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-4000:])
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=25, help="steps per run (default 25)")
    parser.add_argument("--window", type=int, default=5, help="steps per report window; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each trainer, alternated")
    args = parser.parse_args()
    data = str(REPO / "resources" / "datasets" / "pirate")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        model = Path(tmp) / "demo-fp32"
        subprocess.run([sys.executable, "-c", FP32_COPY, str(model)], check=True, cwd=REPO)
        results: dict[str, list[dict]] = {"ours": [], "mlx-lm": []}
        for repeat in range(args.repeats):
            for name, code in (("ours", OURS), ("mlx-lm", MLX_LM)):
                run_dir = str(Path(tmp) / f"{name}-{repeat}")
                print(f"running {name} ({repeat + 1}/{args.repeats})…", file=sys.stderr, flush=True)
                results[name].append(run(code, str(model), data, run_dir, str(args.iters), str(args.window),
                                         json.dumps(SETTINGS)))

    def summary(name: str) -> dict:
        runs = results[name]
        throughput = [w for r in runs for w in r["windows"][1:]]  # the first window is warm-up
        return {"tokens/s": statistics.mean(throughput), "peak": max(r["peak_gb"] for r in runs),
                "rss": max(r["max_rss_gb"] for r in runs), "loss": statistics.mean(r["final_loss"] for r in runs)}

    ours, theirs = summary("ours"), summary("mlx-lm")
    print(f"\nDemo model (SmolLM2-135M) dequantised to fp32, pirate dataset, LoRA rank {SETTINGS['rank']} on the "
          f"last {SETTINGS['num_layers']} layers, batch {SETTINGS['batch_size']}, max length "
          f"{SETTINGS['max_seq_length']}, {args.iters} steps ({args.window} warm-up) × {args.repeats}, CPU + OpenBLAS.\n")
    print("| measure | mlx-lm trainer | ours | ours / mlx-lm |")
    print("|---|---|---|---|")
    print(f"| dataset tokens/s (no padding) | {theirs['tokens/s']:.1f} | {ours['tokens/s']:.1f} | "
          f"{ours['tokens/s'] / theirs['tokens/s']:.2f}× |")
    print(f"| peak MLX memory while training (GB) | {theirs['peak']:.2f} | {ours['peak']:.2f} | "
          f"{ours['peak'] / theirs['peak']:.2f}× |")
    print(f"| max RSS of the process (GB) | {theirs['rss']:.2f} | {ours['rss']:.2f} | "
          f"{ours['rss'] / theirs['rss']:.2f}× |")
    print(f"| training loss of the last window | {theirs['loss']:.3f} | {ours['loss']:.3f} | (different batches) |")


if __name__ == "__main__":
    main()
