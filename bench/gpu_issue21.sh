#!/bin/bash
# Issue 21 item 4 in one device call (after bench/gpu_setup.sh): ours against torch+PEFT as
# today's naive loop runs it (random batches padded to the longest) and as its careful users run
# it (bench/peft_strong.py: padding-free packing, flash attention if it imports, Liger kernels or
# cut-cross-entropy, bf16 autocast, fused AdamW, torch.compile; each piece that fails is skipped
# with a note), on the 1B shape: fixed length 4 x 1024, then the long-tailed chats (batch 8).
#   PYTHONPATH=/tmp/site:. bash bench/gpu_issue21.sh [TOKENIZER_DIR]
# About 5-7 minutes on an H200 (9 processes of 30 steps, 10 a window, the first window dropped;
# at most 150 s each). Tables on stdout; the raw results as JSON under $OUT (or /tmp).
set -u
tokenizer=${1:-.whl/small}
out=${OUT:-/tmp}
# Liger and cut-cross-entropy come in carry group g2 (bench/gpu_prepare.sh); install them if a
# machine was set up before they were on the list and their wheels are here.
if ! python -c "import liger_kernel" 2>/dev/null; then
  wheels=$(ls .whl/g2/liger_kernel-*.whl .whl/g2/cut_cross_entropy-*.whl /tmp/w/liger_kernel-*.whl \
    /tmp/w/cut_cross_entropy-*.whl 2>/dev/null)
  if [ -n "$wheels" ]; then
    python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $wheels
  else
    echo "liger-kernel is not installed and its wheel is not here: the strong baseline runs without it"
  fi
fi
python - <<'EOF'
for name in ("torch", "transformers", "peft", "triton", "liger_kernel", "cut_cross_entropy", "flash_attn"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as exc:
        print(name, "does not import:", type(exc).__name__, str(exc)[:120])
EOF
# PACK: our trainer with sequence packing joins the long-tailed table, same run ("" to leave it out):
ours_variants="--variants pack"
run() { echo "\$ $*"; local t0=$SECONDS; "$@"; echo "(took $((SECONDS - t0)) s)"; echo; }
# each trainer its own process, capped at 150 s; the strong baseline also once without
# torch.compile (a number even if compiling fails or runs past the cap)
bench="python bench/gpu_train_vs_mlx_lm.py --tokenizer $tokenizer --timeout 150"
run $bench --data fixed --batch-size 4 --iters 30 --only ours,peft,peft-strong --strong-variants no-compile \
    --json "$out/issue21-fixed.json"
run $bench --iters 30 --only ours,peft,peft-strong --strong-variants no-compile $ours_variants \
    --json "$out/issue21-long-tailed.json"
