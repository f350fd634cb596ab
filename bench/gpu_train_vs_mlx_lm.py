"""Our trainer next to mlx-lm's and torch+PEFT's on a GPU: a Llama-shape model with random
bf16 weights (1B by default), the long-tailed chats of bench/long_tailed.py.

    python bench/gpu_train_vs_mlx_lm.py --tokenizer DIR [--iters 40] [--only ours,mlx-lm,peft]
        [--variants not-compiled,checkpoint,...] [--json OUT.json]

DIR holds the demo model's tokenizer files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json, generation_config.json). All trainers: LoRA rank 16
(scale 2) on every linear layer of all layers, batch 8, max length 1024, Adam
1e-4, bf16, the largest batch first (so each peak is its worst case). Each runs
in its own process: ours and mlx-lm's through bench/train_vs_mlx_lm.py's code
strings, PEFT through the torch loop below (random batches padded to their
longest, as Hugging Face's collator does; sdpa attention; loss on the answer
only). Throughput: dataset tokens (no padding) and examples per second over the
report windows after the first (10 steps each). ``--variants`` adds runs of our
trainer with one thing changed (see ``variants`` in main).

MFU: 4 × matmul parameters × dataset tokens/s over the H200's ~790 TFLOP/s bf16
(LoRA: no weight gradients for the base; padding and attention not counted).

On the H200 the tree's MLX came as cp312 wheels (mlx, mlx-cuda-13 split in two
parts to fit a call's carry limit, mlx-lm, platformdirs, gguf) installed with
`pip install --no-deps --target /tmp/site`, PYTHONPATH=/tmp/site:.
"""

from __future__ import annotations

import argparse
import json
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
PEAK_BF16_FLOPS = 790e12

PEFT = r"""
import json, random, sys, time
import torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model
model_path, data, run_dir, iters, window, s = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
torch.manual_seed(0); random.seed(0)
tok = AutoTokenizer.from_pretrained(model_path)
model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.bfloat16, attn_implementation="sdpa").cuda()
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
    out = model(input_ids=input_ids.cuda(), attention_mask=attention.cuda(), labels=labels.cuda())
    out.loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
    losses.append(out.loss.item())  # synchronises
    real += sum(len(ids) for ids, _ in chosen); rows += len(chosen)
    if (step + 1) % window == 0:
        seconds = time.perf_counter() - start
        windows.append(real / seconds); examples_s.append(rows / seconds)
        real = rows = 0; start = time.perf_counter()
print("RESULT " + json.dumps({"windows": windows, "examples": examples_s,
                              "peak_gb": torch.cuda.max_memory_allocated() / 1e9, "max_rss_gb": 0,
                              "final_loss": sum(losses[-window:]) / window}))
"""


def make_model(folder: Path, tokenizer_dir: Path, shape: dict) -> Path:
    import mlx.core as mx

    from tests.tiny import make_tiny_model

    if (folder / "config.json").exists():
        return folder
    make_tiny_model(folder, tokenizer_dir, **shape)
    weights = mx.load(str(folder / "model.safetensors"))
    mx.save_safetensors(str(folder / "model.safetensors"), {k: v.astype(mx.bfloat16) for k, v in weights.items()},
                        metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config))
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
    parser.add_argument("--only", default="ours,mlx-lm,peft")
    parser.add_argument("--variants", default="", help="comma-separated: not-compiled, chunk-2048, unchunked, "
                                                       "checkpoint, cap-4096, cap-2048")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-bench"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="a 2-layer 256-wide model, to try the script on a CPU")
    args = parser.parse_args()
    shape = dict(LLAMA_1B, hidden_size=256, intermediate_size=512, num_hidden_layers=2) if args.smoke else LLAMA_1B

    import mlx_lora  # noqa: F401
    import mlx.core as mx

    import bench.train_vs_mlx_lm as cpu_bench
    from bench.long_tailed import make_chats

    print("device", mx.default_device(), flush=True)
    model = make_model(args.work / ("smoke" if args.smoke else "llama1b"), args.tokenizer, shape)
    data = make_chats(args.work / "chats")
    runs = [(name, code, {}) for name, code in (("ours", cpu_bench.OURS), ("mlx-lm", cpu_bench.MLX_LM),
                                                 ("peft", PEFT)) if name in args.only.split(",")]
    variants = {"not-compiled": ("ours, not compiled", {"module": {"step.COMPILE_ON_GPU": False}}),
                "chunk-2048": ("ours, loss chunks of 2048", {"module": {"evaluate.DEFAULT_LOSS_CHUNK": 2048}}),
                "unchunked": ("ours, loss not chunked", {"module": {"evaluate.DEFAULT_LOSS_CHUNK": 0}}),
                "checkpoint": ("ours, grad_checkpoint", {"ours": {"grad_checkpoint": True}}),
                "cap-4096": ("ours, max_batch_tokens 4096", {"ours": {"max_batch_tokens": 4096}}),
                "cap-2048": ("ours, max_batch_tokens 2048", {"ours": {"max_batch_tokens": 2048}})}
    for key in filter(None, args.variants.split(",")):
        name, extra = variants[key]
        runs.append((name, cpu_bench.OURS, extra))
    results = {}
    for name, code, extra in runs:
        start = time.time()
        try:
            result = cpu_bench.run(code, str(model), str(data), str(args.work / f"run-{time.time():.0f}"),
                                   str(args.iters), str(args.window), json.dumps({**SETTINGS, **extra}))
        except SystemExit as exc:  # one trainer failing should not lose the others' numbers
            print(f"{name}: failed: {str(exc)[-1500:]}", flush=True)
            continue
        result["wall_s"] = time.time() - start
        results[name] = result
        print(f"{name}: {json.dumps(result)}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))

    flops = 4 * matmul_parameters(shape)
    base = results.get("mlx-lm")
    print(f"\n1B Llama-shape, random bf16, long-tailed chats, LoRA r16 all linear layers, batch 8, ≤1024 tokens, "
          f"{args.iters} steps (first 10 dropped), largest batch first.\n")
    print("| trainer | examples/s | dataset tokens/s | MFU | peak GB | × mlx-lm examples/s | × mlx-lm memory |"
          + (" × PEFT tokens/s |" if "peft" in results else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if "peft" in results else ""))
    for name, r in results.items():
        tokens, examples = statistics.mean(r["windows"][1:]), statistics.mean(r["examples"][1:])
        cells = [f"{examples:.1f}", f"{tokens:,.0f}", f"{flops * tokens / PEAK_BF16_FLOPS:.1%}", f"{r['peak_gb']:.1f}"]
        if base:
            cells += [f"{examples / statistics.mean(base['examples'][1:]):.2f}×", f"{r['peak_gb'] / base['peak_gb']:.2f}×"]
        if "peft" in results:
            cells.append(f"{tokens / statistics.mean(results['peft']['windows'][1:]):.2f}×")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
