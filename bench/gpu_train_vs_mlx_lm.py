"""Our trainer next to mlx-lm's on a GPU (CUDA or Metal): a 1B Llama-shape model
with random bf16 weights, synthetic long-tailed chats. A first probe for the
performance issue, not its harness yet.

    python bench/gpu_train_vs_mlx_lm.py --tokenizer DIR [--iters 40] [--only ours|mlx-lm]

DIR holds the demo model's tokenizer files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json, generation_config.json; `mlx-lora models demo` prints
the folder). Both trainers: LoRA rank 16 (scale 2) on every linear layer of all 16
layers, batch 8, max length 1024, Adam 1e-4, the model's own dtype (bf16). Each
runs in its own process through the code strings of bench/train_vs_mlx_lm.py
(ours with compute_dtype "auto" instead of float32). Prints tokens/s per report
window (10 steps; the first is warm-up) and the peak memory.

On the H200 the tree's MLX came as cp312 wheels (mlx, mlx-cuda-13 split in two
parts to fit a call's carry limit, mlx-lm, platformdirs, gguf) installed with
`pip install --no-deps --target /tmp/site`, PYTHONPATH=/tmp/site:.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = dict(rank=16, scale=2.0, num_layers=16, batch_size=8, max_seq_length=1024, learning_rate=1e-4)
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8,
                num_hidden_layers=16, head_dim=64, tie_word_embeddings=True)


def make_model(folder: Path, tokenizer_dir: Path) -> Path:
    import mlx.core as mx

    from tests.tiny import make_tiny_model

    if (folder / "config.json").exists():
        return folder
    make_tiny_model(folder, tokenizer_dir, **LLAMA_1B)
    weights = mx.load(str(folder / "model.safetensors"))
    mx.save_safetensors(str(folder / "model.safetensors"), {k: v.astype(mx.bfloat16) for k, v in weights.items()})
    config = json.loads((folder / "config.json").read_text())
    config["torch_dtype"] = "bfloat16"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def make_chats(folder: Path, count: int = 2000) -> Path:
    """Long-tailed lengths: most answers short, a tail up to 900 words."""
    rng = random.Random(0)
    words = "the ship sails over stars maps treasure wind and sea captain crew island gold north south".split()

    def n_words() -> int:
        return int(min(900, rng.lognormvariate(4.2, 0.9)))

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as fh:
        for _ in range(count):
            question = " ".join(rng.choice(words) for _ in range(max(5, n_words() // 4)))
            answer = " ".join(rng.choice(words) for _ in range(max(5, n_words())))
            fh.write(json.dumps({"messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}]}) + "\n")
    shutil.copy(folder / "train.jsonl", folder / "valid.jsonl")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--only", choices=["ours", "mlx-lm"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-bench"))
    args = parser.parse_args()

    import mlx_lora  # noqa: F401
    import mlx.core as mx

    import bench.train_vs_mlx_lm as cpu_bench

    print("device", mx.default_device(), flush=True)
    model = make_model(args.work / "llama1b", args.tokenizer)
    data = make_chats(args.work / "chats")
    trainers = {"ours": cpu_bench.OURS.replace('compute_dtype="float32"', 'compute_dtype="auto"'),
                "mlx-lm": cpu_bench.MLX_LM}
    for name, code in trainers.items():
        if args.only and name != args.only:
            continue
        start = time.time()
        result = cpu_bench.run(code, str(model), str(data), str(args.work / f"run-{name}-{time.time():.0f}"),
                               str(args.iters), "10", json.dumps(SETTINGS))
        steady = result["windows"][1:]
        print(f"{name}: tokens/s {sum(steady) / len(steady):.0f} (windows {[round(w) for w in result['windows']]}), "
              f"peak {result['peak_gb']:.1f} GB, loss {result['final_loss']:.3f}, wall {time.time() - start:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
