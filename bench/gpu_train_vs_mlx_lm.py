"""Our trainer next to mlx-lm's and torch+PEFT's on a GPU: a Llama-shape model with random
bf16 weights (1B by default, or 8B), the long-tailed chats of bench/long_tailed.py or
chats that all fill max_seq_length (``--data fixed``).

    python bench/gpu_train_vs_mlx_lm.py --tokenizer DIR [--iters 40] [--only ours,mlx-lm,peft,peft-strong]
        [--shape 1b|8b|tiny] [--data long-tailed|fixed] [--batch-size 8]
        [--variants not-compiled,checkpoint,cap-4096+checkpoint,...]
        [--strong-variants no-compile,no-liger,flex,...] [--json OUT.json]

DIR holds the demo model's tokenizer files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json, generation_config.json). All trainers: LoRA rank 16
(scale 2) on every linear layer of all layers, batch 8, max length 1024, Adam
1e-4, bf16, the largest batch first (so each peak is its worst case). Each runs
in its own process: ours and mlx-lm's through bench/train_vs_mlx_lm.py's code
strings, PEFT through the torch loop below (random batches padded to their
longest, as Hugging Face's collator does; sdpa attention; loss on the answer
only). ``peft-strong`` is torch+PEFT as its careful users run it (bench/peft_strong.py:
padding-free packing, flash attention if it imports, Liger kernels or cut-cross-entropy,
bf16 autocast, fused AdamW, torch.compile; each tried and, when it fails, skipped with a
note). Throughput: dataset tokens (no padding) and examples per second over the
report windows after the first (10 steps each). ``--variants`` adds runs of our
trainer with one thing changed (see ``variants`` in main; ``a+b`` changes both).
The 8B shape is Llama 3 8B's with the demo tokenizer's vocabulary (49,152, not
128,256), untied.

On a CPU machine whose MLX venv lacks torch, MLX_LORA_TORCH_PYTHON names the Python of the
torch trainers (e.g. ``--shape tiny`` with the judges venv's, to try the script).

MFU: 4 × matmul parameters × dataset tokens/s over the H200's ~790 TFLOP/s bf16
(LoRA: no weight gradients for the base; padding and attention not counted).

On the H200 the tree's MLX came as cp312 wheels (mlx, mlx-cuda-13 split in two
parts to fit a call's carry limit, mlx-lm, platformdirs, gguf) installed with
`pip install --no-deps --target /tmp/site`, PYTHONPATH=/tmp/site:.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = dict(rank=16, scale=2.0, num_layers=16, batch_size=8, max_seq_length=1024, learning_rate=1e-4,
                compute_dtype="auto", worst_first=True)
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
                num_hidden_layers=16, head_dim=64, tie_word_embeddings=True)
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                num_hidden_layers=32, head_dim=128, tie_word_embeddings=False)
PEAK_BF16_FLOPS = 790e12
# the strong baseline (bench/peft_strong.py) with one piece changed: --strong-variants
STRONG_VARIANTS = {"no-compile": {"compile": "none"}, "compile-layers": {"compile": "layers"},
                   "no-liger": {"liger": False}, "no-cce": {"cce": False}, "no-pack": {"pack": False},
                   "pack": {"pack": True}, "sdpa": {"attn": "sdpa"}, "flex": {"attn": "flex_attention"},
                   "flash": {"attn": "flash_attention_2"}, "no-autocast": {"autocast": False}}

PEFT = r"""
import json, random, sys, time
import torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model
model_path, data, run_dir, iters, window, s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
torch.manual_seed(0); random.seed(0)
tok = AutoTokenizer.from_pretrained(model_path)
device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: only to try the script (--shape tiny)
model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
model = get_peft_model(model, LoraConfig(r=s["rank"], lora_alpha=s["rank"] * s["scale"], lora_dropout=0.0,
                                         target_modules="all-linear", task_type="CAUSAL_LM"))
def encode(messages, **kwargs):
    out = tok.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(out["input_ids"] if hasattr(out, "keys") else out)  # transformers 5 returns a BatchEncoding
examples = []
for line in (Path(data) / "train.jsonl").read_text().splitlines():
    messages = json.loads(line)["messages"]
    ids = encode(messages)[:s["max_seq_length"]]
    prompt = len(encode(messages[:-1], add_generation_prompt=True))
    examples.append((ids, prompt))
order = list(range(len(examples))); random.shuffle(order)
batches = [order[i:i + s["batch_size"]] for i in range(0, len(order) - s["batch_size"] + 1, s["batch_size"])]
if s.get("worst_first"):
    longest = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))[:s["batch_size"]]
    batches.insert(0, longest)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s["learning_rate"], weight_decay=0.0)
model.train()
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
windows, examples_s, real, rows, losses = [], [], 0, 0, []
start = time.perf_counter()
for step in range(iters):
    chosen = [examples[i] for i in batches[step % len(batches)]]
    width = max(len(ids) for ids, _ in chosen)
    input_ids = torch.full((len(chosen), width), tok.pad_token_id or 0, dtype=torch.long)
    labels = torch.full((len(chosen), width), -100, dtype=torch.long)
    attention = torch.zeros((len(chosen), width), dtype=torch.long)
    for row, (ids, prompt) in enumerate(chosen):
        input_ids[row, :len(ids)] = torch.tensor(ids); attention[row, :len(ids)] = 1
        labels[row, prompt:len(ids)] = torch.tensor(ids[prompt:])
    out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device), labels=labels.to(device))
    out.loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
    losses.append(out.loss.item())  # synchronises
    real += sum(len(ids) for ids, _ in chosen); rows += len(chosen)
    if (step + 1) % window == 0:
        seconds = time.perf_counter() - start
        windows.append(real / seconds); examples_s.append(rows / seconds)
        real = rows = 0; start = time.perf_counter()
print("RESULT " + json.dumps({"windows": windows, "examples": examples_s,
                              "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else 0.0,
                              "reserved_gb": torch.cuda.max_memory_reserved() / 1e9 if device == "cuda" else 0.0,
                              "max_rss_gb": 0,
                              "final_loss": sum(losses[-window:]) / window}))
"""


def make_model(folder: Path, tokenizer_dir: Path, shape: dict) -> Path:
    """A llama folder with random bf16 weights (built in bf16: the 8B would be 30 GB in float32)."""
    import shutil

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    from tests.tiny import TINY_CONFIG

    if (folder / "config.json").exists():
        return folder
    config = {**TINY_CONFIG, **shape, "torch_dtype": "bfloat16", "rope_theta": 500000.0}
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    model.set_dtype(mx.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())),
                        metadata={"format": "pt"})
    del model
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        shutil.copy(tokenizer_dir / name, folder / name)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def matmul_parameters(shape: dict, vocab: int = 49152) -> int:
    d, i, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    q, kv = shape["num_attention_heads"] * shape["head_dim"], shape["num_key_value_heads"] * shape["head_dim"]
    return layers * (2 * d * q + 2 * d * kv + 3 * d * i) + d * vocab


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--only", default="ours,mlx-lm,peft",
                        help="comma-separated: ours, mlx-lm, peft (naive: padded random batches), peft-strong "
                             "(bench/peft_strong.py: packing, Liger, torch.compile, ...)")
    parser.add_argument("--strong-variants", default="",
                        help="more peft-strong runs, each with one piece changed (a+b: both): "
                             + ", ".join(STRONG_VARIANTS))
    parser.add_argument("--shape", choices=("1b", "8b", "tiny"), default="1b",
                        help="tiny: the 1B's --smoke model (2 layers, 256 wide, examples cut at 128 tokens), "
                             "to try the script on a CPU")
    parser.add_argument("--data", choices=("long-tailed", "fixed"), default="long-tailed")
    parser.add_argument("--batch-size", type=int, default=SETTINGS["batch_size"])
    parser.add_argument("--variants", default="", help="comma-separated: not-compiled, chunk-2048, unchunked, "
                                                       "checkpoint, no-cap, cap-4096 (the default), cap-2048, cap-1024, "
                                                       "pack, fp32-lora; a+b for both")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per trainer's process (0: none); "
                                                                   "one past it is reported as failed")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-bench"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="= --shape tiny")
    args = parser.parse_args()
    args.smoke = args.smoke or args.shape == "tiny"
    full = LLAMA_8B if args.shape == "8b" else LLAMA_1B
    shape = dict(full, hidden_size=256, intermediate_size=512, num_hidden_layers=2) if args.smoke else full
    # the torch trainers' Python: this one on the GPU machine; on a CPU machine whose MLX venv has no
    # torch, e.g. MLX_LORA_TORCH_PYTHON=/work/main/.venv-judges/bin/python
    torch_python = os.environ.get("MLX_LORA_TORCH_PYTHON") or sys.executable
    settings = {**SETTINGS, "batch_size": args.batch_size}
    if args.smoke:  # on a CPU bf16 is slow: 128-token examples (the fixed set cut at 128: still fixed)
        settings["max_seq_length"] = 128

    import mlx_lora  # noqa: F401
    import mlx.core as mx

    import bench.train_vs_mlx_lm as cpu_bench
    from bench.long_tailed import make_chats, make_fixed_chats

    print("device", mx.default_device(), flush=True)
    model = make_model(args.work / (("smoke-" if args.smoke else "llama") + args.shape), args.tokenizer, shape)
    data = make_chats(args.work / "chats") if args.data == "long-tailed" else make_fixed_chats(args.work / "fixed")
    strong = (Path(__file__).parent / "peft_strong.py").read_text()
    runs = [(name, code, {}) for name, code in (("ours", cpu_bench.OURS), ("mlx-lm", cpu_bench.MLX_LM),
                                                 ("peft", PEFT), ("peft-strong", strong))
            if name in args.only.split(",")]
    for key in filter(None, args.strong_variants.split(",")):
        more = {}
        for part in key.split("+"):
            more.update(STRONG_VARIANTS[part])
        runs.append((f"peft-strong, {key}", strong, {"strong": more}))
    variants = {"not-compiled": ("ours, not compiled", {"train": {"compiled": False}}),
                "chunk-2048": ("ours, loss chunks of 2048", {"module": {"evaluate.DEFAULT_LOSS_CHUNK": 2048}}),
                "unchunked": ("ours, loss not chunked", {"module": {"evaluate.DEFAULT_LOSS_CHUNK": 0}}),
                "checkpoint": ("ours, grad_checkpoint", {"ours": {"grad_checkpoint": True}}),
                "no-cap": ("ours, max_batch_tokens 0 (no cap)", {"ours": {"max_batch_tokens": 0}}),
                "cap-4096": ("ours, max_batch_tokens 4096", {"ours": {"max_batch_tokens": 4096}}),
                "cap-2048": ("ours, max_batch_tokens 2048", {"ours": {"max_batch_tokens": 2048}}),
                "cap-1024": ("ours, max_batch_tokens 1024", {"ours": {"max_batch_tokens": 1024}}),
                "pack": ("ours, sequence packing (batch_size rows of max_seq_length)", {"ours": {"pack": True}}),
                "fp32-lora": ("ours, LoRA product in float32 (mlx-lm's layers)",
                              {"module": {"lora.CAST_LORA": False}})}
    for key in filter(None, args.variants.split(",")):
        names, extra = [], {}
        for part in key.split("+"):
            name, more = variants[part]
            names.append(name.removeprefix("ours, "))
            for field, values in more.items():
                extra[field] = {**extra.get(field, {}), **values}
        runs.append(("ours, " + " + ".join(names), cpu_bench.OURS, extra))
    results = {}
    for name, code, extra in runs:
        start = time.time()
        try:
            result = cpu_bench.run(code, str(model), str(data), str(args.work / f"run-{time.time():.0f}"),
                                   str(args.iters), str(args.window), json.dumps({**settings, **extra}),
                                   python=torch_python if name.startswith("peft") else None,
                                   timeout=args.timeout or None)
        except SystemExit as exc:  # one trainer failing should not lose the others' numbers
            print(f"{name}: failed: {str(exc)[-1500:]}", flush=True)
            continue
        result["wall_s"] = time.time() - start
        results[name] = result
        print(f"{name}: {json.dumps(result)}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))

    flops = 4 * matmul_parameters(shape)
    print(f"\n{'tiny' if args.smoke else args.shape.upper()} Llama-shape, random bf16, {args.data} chats, LoRA r16 all "
          f"linear layers, batch {args.batch_size}, ≤{settings['max_seq_length']} tokens, {args.iters} steps (first {args.window} dropped), "
          "largest batch first.\n")
    print(table(results, flops))


def steady(r: dict, key: str) -> float:
    """The mean of the report windows after the first (the first alone when there is one)."""
    return statistics.mean(r[key][1:] or r[key])


def loss_cell(r: dict, results: dict) -> str:
    """The run's final loss, flagged when it is not finite or 1.5x the naive PEFT's (or ours'): a broken run."""
    loss = r.get("final_loss")
    if loss is None:
        return ""
    ref = (results.get("peft") or results.get("ours") or {}).get("final_loss")
    broken = not math.isfinite(loss) or (ref is not None and math.isfinite(ref) and loss > 1.5 * ref)
    return f"{loss:.3g}" + (" **broken**" if broken else "")


def table(results: dict, flops: float) -> str:
    """Markdown: one row per trainer, ratios against mlx-lm, naive PEFT and the fastest strong PEFT run
    whose loss is sound."""
    base, naive = results.get("mlx-lm"), results.get("peft")
    strong_runs = [name for name in results if name.startswith("peft-strong")]
    sound = [name for name in strong_runs if "broken" not in loss_cell(results[name], results)] or strong_runs
    best = max(sound, key=lambda name: steady(results[name], "windows")) if strong_runs else None
    strong = results.get(best)
    header = "| trainer | examples/s | dataset tokens/s | MFU | peak GB | torch reserved GB | final loss |"
    header += " × mlx-lm examples/s | × mlx-lm memory |" if base else ""
    header += " × PEFT tokens/s | × PEFT memory |" if naive else ""
    header += " × strong PEFT tokens/s | × strong PEFT memory |" if strong else ""
    lines = [header, "|---" + "|---:" * (header.count("|") - 2) + "|"]
    for name, r in results.items():
        tokens, examples = steady(r, "windows"), steady(r, "examples")
        cells = [f"{examples:.1f}", f"{tokens:,.0f}", f"{flops * tokens / PEAK_BF16_FLOPS:.1%}", f"{r['peak_gb']:.1f}",
                 f"{r['reserved_gb']:.1f}" if "reserved_gb" in r else "", loss_cell(r, results)]
        for other, key in ((base, "examples"), (naive, "windows"), (strong, "windows")):
            if other:
                cells += [f"{examples / steady(other, 'examples'):.2f}×" if key == "examples"
                          else f"{tokens / steady(other, 'windows'):.2f}×",
                          f"{r['peak_gb'] / other['peak_gb']:.2f}×" if other["peak_gb"] else ""]
        lines.append(f"| {name}{' (strong: the fastest)' if name == best and len(strong_runs) > 1 else ''} | "
                     + " | ".join(cells) + " |")
    for name in strong_runs:
        r = results[name]
        lines.append(f"\n{name}: used {json.dumps(r.get('used', {}))}; first step {r.get('first_step_s', 0):.1f} s")
        lines += [f"  - {line}" for line in r.get("notes", [])]
    return "\n".join(lines)

if __name__ == "__main__":
    main()
