"""Where a QLoRA step's time and memory go, without the trainer: a stack of Llama-8B-shaped
blocks (q, k, v, o and the gated MLP, 4096 wide, 14,336 MLP; no attention mixing, which is the
same in every variant) with a trainable vector in each, forward and backward on 4 x 1024 tokens
in bf16, through four kinds of linear layer:

- ``dense``: bf16 weights (the LoRA-on-bf16 reference);
- ``kernels``: MLX's ``QuantizedLinear`` (4-bit), its quantised matmul both ways;
- ``dequantize``: mlx_lora/methods/tensors/qmatmul.py's ``DequantizedMatmulLinear``;
- ``hybrid``: qmatmul.py's ``DequantizedBackwardLinear`` (the kernel forward, dense backward);

each also with MLX's memory limit set just above the resident weights (``-limit``), and the
backward's untransposed quantised product (``dy @ W``, which the CUDA backend only has a naive
kernel for) timed alone. Each variant runs in its own process.

    PYTHONPATH=/tmp/site:. python bench/gpu_qmm_probe.py [--layers 8] [--tokens 4096] [--json F]
    .venv/bin/python bench/gpu_qmm_probe.py --smoke      # tiny shapes, to try it on a CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ["dense", "kernels", "dequantize", "hybrid", "kernels-limit", "dequantize-limit", "hybrid-limit"]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import mlx_lora  # OpenBLAS preload on a CPU
import mlx.core as mx, mlx.nn as nn
from mlx_lora.methods.tensors.qmatmul import dequantized_matmul_layers
variant, D, F, KV, L, T, headroom = sys.argv[2], *map(int, sys.argv[3:8]), float(sys.argv[8])
kind, _, limit = variant.partition("-")
class Block(nn.Module):
    def __init__(s):
        super().__init__()
        s.q, s.k, s.v, s.o = (nn.Linear(D, D, bias=False), nn.Linear(D, KV, bias=False),
                              nn.Linear(D, KV, bias=False), nn.Linear(D, D, bias=False))
        s.gate, s.up, s.down = nn.Linear(D, F, bias=False), nn.Linear(D, F, bias=False), nn.Linear(F, D, bias=False)
        s.a = mx.zeros((D,))
    def __call__(s, x):
        h = x + s.a
        q, k, v = s.q(h), s.k(h), s.v(h)
        x = x + s.o(q * (k.sum(-1, keepdims=True) + v.sum(-1, keepdims=True)) * 1e-3)
        return x + s.down(nn.silu(s.gate(x)) * s.up(x))
class Stack(nn.Module):
    def __init__(s):
        super().__init__(); s.layers = [Block() for _ in range(L)]
    def __call__(s, x):
        for layer in s.layers:
            x = layer(x)
        return x
mx.random.seed(0)
model = Stack()
model.set_dtype(mx.bfloat16)
if kind != "dense":
    nn.quantize(model, 64, 4)
    if kind in ("dequantize", "hybrid"):
        dequantized_matmul_layers(model, forward="kernel" if kind == "hybrid" else "dequantize")
model.freeze()
for layer in model.layers:
    layer.unfreeze(keys=["a"])
x = (mx.random.normal((T, D)) * 0.1).astype(mx.bfloat16)
mx.eval(model.parameters(), x)
resident = mx.get_active_memory()
if limit:
    mx.set_memory_limit(int(resident + headroom * 1e9))
def loss(m, x):
    return (m(x).astype(mx.float32) ** 2).mean()
step = nn.value_and_grad(model, loss)
def timed(fn, n=3):
    fn()
    fn()
    mx.reset_peak_memory()
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return sorted(times)[n // 2], mx.get_peak_memory()
step_s, step_peak = timed(lambda: mx.eval(step(model, x)))
forward_s, _ = timed(lambda: mx.eval(loss(model, x)))
out = {"variant": variant, "resident_gb": resident / 1e9, "step_s": step_s, "forward_s": forward_s,
       "step_peak_over_resident_gb": (step_peak - resident) / 1e9,
       "limit_gb": (resident + headroom * 1e9) / 1e9 if limit else None}
if kind == "kernels":  # the backward's dy @ W alone: the untransposed quantised product
    w = model.layers[0].down
    dy = (mx.random.normal((T, D)) * 0.1).astype(mx.bfloat16)
    dense_w = mx.dequantize(w.weight, w.scales, w.biases, group_size=64, bits=4).astype(mx.bfloat16)
    mx.eval(dy, dense_w)
    out["dy_W_quantised_s"], _ = timed(lambda: mx.eval(mx.quantized_matmul(dy, w.weight, w.scales, w.biases,
                                                                          transpose=False, group_size=64, bits=4)))
    out["dy_W_dense_s"], _ = timed(lambda: mx.eval(dy @ dense_w))
    out["x_WT_quantised_s"], _ = timed(lambda: mx.eval(mx.quantized_matmul(
        (mx.random.normal((T, F)) * 0.1).astype(mx.bfloat16), w.weight, w.scales, w.biases, transpose=True,
        group_size=64, bits=4)))
print("RESULT " + json.dumps(out), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--headroom", type=float, default=2.0, help="GB above the resident weights for -limit runs")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    D, F, KV = (256, 512, 64) if args.smoke else (4096, 14336, 1024)
    tokens = 64 if args.smoke else args.tokens
    headroom = 0.01 if args.smoke else args.headroom
    results = []
    for variant in args.variants.split(","):
        proc = subprocess.run([sys.executable, "-c", CHILD, str(REPO), variant, str(D), str(F), str(KV), str(args.layers),
                               str(tokens), str(headroom)], capture_output=True, text=True, timeout=300)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"{variant}: failed (rc {proc.returncode}): {proc.stderr[-800:]}", flush=True)
            continue
        results.append(json.loads(lines[-1][7:]))
        print(json.dumps(results[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    dense = next((r for r in results if r["variant"] == "dense"), None)
    print(f"\n{args.layers} Llama-8B-shaped blocks, {tokens} tokens, bf16, forward + backward (input gradients)\n")
    print("| variant | step s | × dense speed | forward s | step peak over resident GB | resident GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        speed = f"{dense['step_s'] / r['step_s']:.2f}×" if dense else ""
        print(f"| {r['variant']} | {r['step_s']:.4f} | {speed} | {r['forward_s']:.4f} | "
              f"{r['step_peak_over_resident_gb']:.2f} | {r['resident_gb']:.2f} |")
    for r in results:
        if "dy_W_quantised_s" in r:
            print(f"\ndown_proj alone: dy @ W quantised {r['dy_W_quantised_s'] * 1e3:.2f} ms, dense "
                  f"{r['dy_W_dense_s'] * 1e3:.2f} ms; x @ W.T quantised {r['x_WT_quantised_s'] * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
