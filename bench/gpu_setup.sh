#!/bin/bash
# Install MLX's CUDA build on the lent GPU machine (no network there), from wheels carried
# in the git-ignored .whl/ folder: cuda.part.aa and cuda.part.ab are the mlx-cuda-13 0.32.4
# wheel split in two (a call carries at most 64 MiB), wheels/ holds mlx 0.32.4 (cp312),
# mlx-lm 0.32.2, platformdirs and gguf, small/ the demo tokenizer's files.
#   call 1: bash bench/gpu_setup.sh      (carry .whl/cuda.part.aa: kept in /tmp/w)
#   call 2: bash bench/gpu_setup.sh      (carry .whl/cuda.part.ab, .whl/wheels, .whl/small: installs)
# then: PYTHONPATH=/tmp/site:. python bench/gpu_train_vs_mlx_lm.py --tokenizer .whl/small ...
set -e
mkdir -p /tmp/w
if [ -f .whl/cuda.part.aa ]; then cp .whl/cuda.part.aa /tmp/w/; fi
if [ -f .whl/cuda.part.ab ] && [ ! -d /tmp/site/mlx ]; then
  cat /tmp/w/cuda.part.aa .whl/cuda.part.ab > /tmp/w/mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl
  pip install -q --no-index --no-deps --target /tmp/site /tmp/w/mlx_cuda_13-*.whl .whl/wheels/*.whl
fi
if [ -d /tmp/site/mlx ]; then PYTHONPATH=/tmp/site:. python -c "import mlx.core as mx; print(mx.default_device(), mx.__version__)"; fi
