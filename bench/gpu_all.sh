#!/bin/bash
# Every H200 comparison of bench/RESULTS.md's "Training performance" in one command, after
# bench/gpu_setup.sh: long-tailed 1B (ours with and without the token cap, mlx-lm, PEFT),
# fixed-length 1B, fixed-length 8B against PEFT, and one step's memory per variant.
#   PYTHONPATH=/tmp/site:. bash bench/gpu_all.sh [TOKENIZER_DIR]
# About 15 minutes on an H200 (the first process of a fresh machine also builds MLX's
# CUDA kernels, ~1 minute).
set -u
tokenizer=${1:-.whl/small}
run() { echo "\$ $*"; "$@"; echo; }
run python bench/gpu_train_vs_mlx_lm.py --tokenizer "$tokenizer" --iters 50 --variants no-cap,cap-2048,fp32-lora
run python bench/gpu_train_vs_mlx_lm.py --tokenizer "$tokenizer" --data fixed --batch-size 4 --iters 30
run python bench/gpu_train_vs_mlx_lm.py --tokenizer "$tokenizer" --shape 8b --data fixed --batch-size 4 --iters 20 \
    --window 5 --only ours,peft --variants cap-1024
run python bench/gpu_memory_probe.py --steps 3
