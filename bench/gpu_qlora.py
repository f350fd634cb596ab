"""QLoRA on the GPU: LoRA on a bf16 base next to the same LoRA on a 4-bit and an 8-bit base,
with the quantised layers multiplied through MLX's quantised kernels or dequantised one layer
at a time (mlx_lora/methods/tensors/qmatmul.py), on Llama 3 8B's shape; then a 70B-shape
model (Llama 3 70B's layer shape) with a few of its 80 layers, to extrapolate its peak.

    PYTHONPATH=/tmp/site:. python bench/gpu_qlora.py --tokenizer DIR [--iters 12] [--window 4]
        [--only bf16,4bit,8bit,70b,4bit-kernels] [--smoke]

All runs: fixed-length chats of 1,024 tokens (bench/long_tailed.py's fixed set), batch 4,
LoRA rank 16 on every linear layer, max_batch_tokens 1024 (one row a pass, as the 8B row of
RESULTS.md), Adam 1e-4, bf16 compute. Each run in its own process (bench/train_vs_mlx_lm.py's
code string). "peak" is the training steps' peak (MLX's, reset after loading); "load peak"
the process's peak while loading and quantising the base. The 70B shape: 2 and 4 layers
measured (random weights, 4-bit, grad checkpointing), the 80-layer peak extrapolated from
the per-layer slope of the two.
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

from bench.gpu_train_vs_mlx_lm import LLAMA_8B, PEAK_BF16_FLOPS, SETTINGS, make_model, matmul_parameters  # noqa: E402

LLAMA_70B = dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8,
                 head_dim=128, tie_word_embeddings=False)
RUNS = {  # key: (label, settings for our trainer)
    "bf16": ("LoRA, bf16 base", {}),
    "4bit": ("QLoRA 4-bit, dequantised matmul", {"ours": {"quantize_bits": 4},
                                                  "module": {"prepare.DEQUANTIZED_MATMUL": ["cuda"]}}),
    "4bit-kernels": ("QLoRA 4-bit, MLX quantised matmul (the default)", {"ours": {"quantize_bits": 4}}),
    "8bit": ("QLoRA 8-bit, dequantised matmul", {"ours": {"quantize_bits": 8},
                                                  "module": {"prepare.DEQUANTIZED_MATMUL": ["cuda"]}}),
    "8bit-kernels": ("QLoRA 8-bit, MLX quantised matmul (the default)", {"ours": {"quantize_bits": 8}}),
    # MLX's memory limit bounds the queue of dequantised weights (past it MLX waits for queued
    # work before allocating); the guard stops a run whose step passes it
    "4bit-limit14": ("QLoRA 4-bit, dequantised matmul, memory limit 14 GB", {
        "ours": {"quantize_bits": 4, "memory_limit_gb": 14}, "module": {"prepare.DEQUANTIZED_MATMUL": ["cuda"]}}),
    "4bit-limit16": ("QLoRA 4-bit, dequantised matmul, memory limit 16 GB", {
        "ours": {"quantize_bits": 4, "memory_limit_gb": 16}, "module": {"prepare.DEQUANTIZED_MATMUL": ["cuda"]}}),
    # the quantised kernel forward (fast on sm90), dense only for the backward's dy @ W (CUDA has
    # no fast kernel for it: qmatmul.py)
    "4bit-hybrid": ("QLoRA 4-bit, kernel forward, dequantised backward", {
        "ours": {"quantize_bits": 4},
        "module": {"prepare.DEQUANTIZED_MATMUL": ["cuda"], "prepare.DEQUANTIZED_MATMUL_FORWARD": "kernel"}}),
    # the guard's line at 16 GB and MLX's own at 0.8 of it (12.8 GB), where its eval starts
    # waiting for queued work (memory_guard.THROTTLE_SHARE)
    "4bit-hybrid-throttle": ("QLoRA 4-bit, kernel forward, dequantised backward, MLX limit 12.8 GB", {
        "ours": {"quantize_bits": 4, "memory_limit_gb": 16},
        "module": {"prepare.DEQUANTIZED_MATMUL": ["cuda"], "prepare.DEQUANTIZED_MATMUL_FORWARD": "kernel",
                   "memory_guard.THROTTLE_SHARE": 0.8}}),
    "4bit-throttle": ("QLoRA 4-bit, dequantised matmul, MLX limit 12.8 GB", {
        "ours": {"quantize_bits": 4, "memory_limit_gb": 16},
        "module": {"prepare.DEQUANTIZED_MATMUL": ["cuda"], "memory_guard.THROTTLE_SHARE": 0.8}}),
    "4bit-kernels-throttle": ("QLoRA 4-bit, MLX quantised matmul, MLX limit 12.8 GB", {
        "ours": {"quantize_bits": 4, "memory_limit_gb": 16}, "module": {"memory_guard.THROTTLE_SHARE": 0.8}}),
}


def run_one(label, model, data, work, iters, window, settings):
    import bench.train_vs_mlx_lm as cpu_bench

    start = time.time()
    try:
        result = cpu_bench.run(cpu_bench.OURS, str(model), str(data), str(work / f"run-{time.time():.0f}"),
                               str(iters), str(window), json.dumps(settings))
    except SystemExit as exc:
        print(f"{label}: failed: {str(exc)[-1500:]}", flush=True)
        return None
    result["wall_s"] = time.time() - start
    print(f"{label}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--only", default="bf16,4bit,8bit,70b,4bit-kernels")
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-bench"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--70b-dequantised", dest="dequantised_70b", action="store_true",
                        help="the 70B shape through dequantised matmuls (default: MLX's quantised ones)")
    parser.add_argument("--70b-hybrid", dest="hybrid_70b", action="store_true",
                        help="the 70B shape through the kernel forward and the dequantised backward")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, to try the script on a CPU")
    args = parser.parse_args()
    only = args.only.split(",")
    small = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64)
    shape = {**LLAMA_8B, **small} if args.smoke else LLAMA_8B

    import mlx_lora  # noqa: F401
    import mlx.core as mx

    from bench.long_tailed import make_fixed_chats

    print("device", mx.default_device(), flush=True)
    data = make_fixed_chats(args.work / "fixed")
    settings = {**SETTINGS, "batch_size": 4, "ours": {"max_batch_tokens": 1024}}
    results = {}
    model = None

    def save():  # after every run: a call cut short keeps what it measured
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))

    for key in only:
        if key in RUNS:
            model = model or make_model(args.work / ("smoke-8b" if args.smoke else "llama8b"), args.tokenizer, shape)
            label, extra = RUNS[key]
            merged = {**settings, **{k: ({**settings.get(k, {}), **v} if isinstance(v, dict) else v)
                                     for k, v in extra.items()}}
            result = run_one(label, model, data, args.work, args.iters, args.window, merged)
            if result:
                results[label] = result
        elif key == "70b":
            big = {**LLAMA_70B, **small} if args.smoke else LLAMA_70B
            for layers in (2, 4):
                folder = make_model(args.work / f"llama70b-{layers}{'-smoke' if args.smoke else ''}", args.tokenizer,
                                    {**big, "num_hidden_layers": layers})
                merged = {**settings, "batch_size": 1, "num_layers": layers,
                          "ours": {"max_batch_tokens": 1024, "quantize_bits": 4, "grad_checkpoint": True}}
                if args.dequantised_70b:
                    merged["module"] = {"prepare.DEQUANTIZED_MATMUL": ["cuda"]}
                if args.hybrid_70b:
                    merged["module"] = {"prepare.DEQUANTIZED_MATMUL": ["cuda"], "prepare.DEQUANTIZED_MATMUL_FORWARD": "kernel"}
                result = run_one(f"70B shape, {layers} layers, QLoRA 4-bit, checkpointed, 1 x 1024", folder, data,
                                 args.work, 3 * args.window, args.window, merged)
                if result:
                    results[f"70b-{layers}"] = result
                save()
            if "70b-2" in results and "70b-4" in results:
                a, b = results["70b-2"]["peak_gb"], results["70b-4"]["peak_gb"]
                slope = (b - a) / 2
                results["70b-80 extrapolated"] = {"peak_gb": a + slope * 78, "per_layer_gb": slope}
        save()

    flops = 4 * matmul_parameters(shape)
    print(f"\n{'smoke' if args.smoke else '8B'} Llama-shape, random bf16, fixed 4 x 1024, LoRA r16 all linear layers, "
          f"max_batch_tokens 1024, {args.iters} steps (first {args.window} dropped).\n")
    print("| base | dataset tokens/s | MFU | peak GB | load peak GB | first window s | x bf16 speed | x bf16 peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    reference = results.get(RUNS["bf16"][0])
    for label, r in results.items():
        if "windows" not in r or label.startswith("70B"):
            continue
        tokens = statistics.mean(r["windows"][1:]) if len(r["windows"]) > 1 else r["windows"][0]
        cells = [f"{tokens:,.0f}", f"{flops * tokens / PEAK_BF16_FLOPS:.1%}", f"{r['peak_gb']:.1f}",
                 f"{r['load_peak_gb']:.1f}", f"{r['first_window_s']:.1f}"]
        if reference:
            ref_tokens = statistics.mean(reference["windows"][1:]) if len(reference["windows"]) > 1 else reference["windows"][0]
            cells += [f"{tokens / ref_tokens:.2f}x", f"{r['peak_gb'] / reference['peak_gb']:.2f}x"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for key in ("70b-2", "70b-4", "70b-80 extrapolated"):
        if key in results:
            r = results[key]
            extra = f", load peak {r['load_peak_gb']:.1f} GB, {statistics.mean(r['windows']):,.0f} tokens/s" if "windows" in r else \
                f" ({r['per_layer_gb']:.2f} GB a layer)"
            print(f"- 70B shape, {key.split('-', 1)[1]}: peak {r['peak_gb']:.1f} GB{extra}")


if __name__ == "__main__":
    main()
