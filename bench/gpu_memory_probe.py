"""Where a training step's memory goes: one compiled step (forward, backward, Adam) of a
Llama-shape model with random bf16 weights, in variants that change one thing each.

    python bench/gpu_memory_probe.py [--shape 1b|8b] [--batch 8] [--length 1024]
        [--variants mlx-lm,ours,ours-fp32-lora,...] [--steps 4]

Each variant runs in its own process (a fresh peak): the model is built in memory
(random weights, vocabulary 49,152), LoRA rank 16 on every linear layer of every
layer, every position trained, and the step is compiled as each trainer compiles
it. Prints, per variant, the peak memory of the step (``mx.get_peak_memory`` after
a reset, above the memory held before it) and its time. Variants:

- ``mlx-lm``: mlx-lm's ``default_loss`` (full logits) and its float32 LoRA layers;
- ``ours``: our loss (chunked, fused LM head + loss) and our LoRA layers (A and B cast
  to the compute dtype in the product, methods/tensors/layers.py);
- ``ours-fp32-lora``: ours with mlx-lm's LoRA layers (A in float32);
- ``mlx-lm-cast``: mlx-lm's loss with our LoRA layers;
- ``ours-ckpt``: ours with ``grad_checkpoint`` (``mx.checkpoint`` per layer);
- ``ours-limit``, ``ours-ckpt-limit``: ours (with checkpointing) and
  ``mx.set_memory_limit`` at ``--limit-gb`` above the weights (``ours-limit:6``: 6 GB) (past the limit the
  allocator waits for queued work to finish and free its buffers before allocating);
- ``ours-eager``: ours, not compiled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
               num_hidden_layers=16, head_dim=64, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
               num_hidden_layers=32, head_dim=128, tie_word_embeddings=False),
    "smoke": dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                  num_hidden_layers=2, head_dim=64, tie_word_embeddings=True),
}

PROBE = r"""
import json, sys, time
from functools import partial
import mlx_lora
import mlx.core as mx, mlx.nn as nn, mlx.optimizers as optim
from mlx.utils import tree_map
from mlx_lm.models import llama
from mlx_lm.tuner.trainer import default_loss
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lora.train.evaluate import MaskedLoss
from mlx_lora.methods.tensors.layers import cast_lora_layers
from mlx_lora.train.prepare import enable_grad_checkpoint
s = json.loads(sys.argv[1]); variant, _, limit = s["variant"].partition(":")
limit_gb = float(limit) if limit else s["limit_gb"]
config = dict(model_type="llama", rms_norm_eps=1e-5, rope_theta=500000.0, vocab_size=49152, **s["shape"])
mx.random.seed(0)
model = llama.Model(llama.ModelArgs.from_dict(config))
model.set_dtype(mx.bfloat16)
mx.eval(model.parameters())
model.freeze()
linear_to_lora_layers(model, len(model.layers), {"rank": 16, "scale": 2.0, "dropout": 0.0})
if variant != "mlx-lm" and variant != "ours-fp32-lora":
    cast_lora_layers(model)
if variant.startswith("ours-ckpt"):
    enable_grad_checkpoint(model.layers)
model.train()
B, L = s["batch"], s["length"]
tokens = mx.random.randint(0, 49152, (B, L + 1))
if variant.startswith("mlx-lm"):
    loss_fn, args = default_loss, (tokens, mx.array([[0, L + 1]] * B))
else:
    loss_fn = MaskedLoss(); assert loss_fn.check(model, tokens[:1, :32])
    args = (tokens[:, :-1], tokens[:, 1:], mx.ones((B, L)), None)
optimizer = optim.Adam(learning_rate=1e-5)
value_and_grad = nn.value_and_grad(model, loss_fn)
mean = variant.startswith("mlx-lm")  # mlx-lm's default_loss is already the mean over tokens
def step(*a):
    (value, count), grads = value_and_grad(model, *a)
    optimizer.update(model, grads if mean else tree_map(lambda g: g / count, grads))
    return value if mean else value / count
if variant != "ours-eager":
    state = [model.state, optimizer.state, mx.random.state]
    step = partial(mx.compile, inputs=state, outputs=state)(step)
mx.eval(model.parameters())
held = mx.get_active_memory()
if variant.endswith("-limit"):
    mx.set_memory_limit(int(held + limit_gb * 1e9))
mx.reset_peak_memory()
times = []
for _ in range(s["steps"]):
    start = time.perf_counter()
    value = step(*args); mx.eval(value, model.parameters(), optimizer.state)
    times.append(time.perf_counter() - start)
print("RESULT " + json.dumps({"peak_gb": (mx.get_peak_memory() - held) / 1e9, "held_gb": held / 1e9,
                              "step_s": min(times[1:] or times), "loss": value.item()}))
"""


def main() -> None:
    from bench.train_vs_mlx_lm import run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=SHAPES, default="1b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--limit-gb", type=float, default=4.0, help="ours-ckpt-limit: the limit above the weights")
    parser.add_argument("--variants", default="mlx-lm,ours,ours-fp32-lora,mlx-lm-cast,ours-limit:8,ours-ckpt")
    args = parser.parse_args()
    print(f"{args.shape}, batch {args.batch} × {args.length}, LoRA r16 on every linear layer, bf16; "
          "peak above the weights\n")
    print("| variant | peak GB | step s | tokens/s | loss |\n|---|---:|---:|---:|---:|", flush=True)
    for variant in args.variants.split(","):
        spec = dict(variant=variant, shape=SHAPES[args.shape], batch=args.batch, length=args.length,
                    steps=args.steps, limit_gb=args.limit_gb)
        try:
            r = run(PROBE, json.dumps(spec))
        except SystemExit as exc:  # one variant failing should not lose the others' numbers
            print(f"| {variant} | failed: {str(exc).strip().splitlines()[-1:]} | | | |", flush=True)
            continue
        print(f"| {variant} | {r['peak_gb']:.2f} | {r['step_s']:.3f} | {args.batch * args.length / r['step_s']:,.0f} "
              f"| {r['loss']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
