#!/bin/bash
# Issue 21's open measurements, one device call each (at most 10 minutes a call), after the
# set-up calls (bench/gpu_setup.sh, carrying .whl/g1 … .whl/g4; g1 + g2 are enough for MLX,
# g3 + g4 add the demo model that `test` needs):
#
#   bash bench/gpu_next.sh test     # make test-gpu, the core suite on CUDA (~210 s)
#   bash bench/gpu_next.sh probe    # bench/gpu_qmm_probe.py: where a QLoRA step's time and memory go (~2 min)
#   bash bench/gpu_next.sh qlora    # bench/gpu_qlora.py: bf16, kernels, hybrid, throttled runs at 8B (~6 min)
#   bash bench/gpu_next.sh 70b      # the 70B shape through the hybrid path (~3 min)
#   bash bench/gpu_next.sh strong   # bench/gpu_issue21.sh: ours against naive and strong torch+PEFT (~6 min)
#
# Everything it prints also lands under $OUT (the device tool brings it back).
set -u
out=${OUT:-/tmp}
export PYTHONPATH=/tmp/site:.
case "${1:-}" in
  test)
    make test-gpu SITE=/tmp/site 2>&1 | tee "$out/test-gpu.log" | tail -60 ;;
  probe)
    python bench/gpu_qmm_probe.py --json "$out/qmm-probe.json" 2>&1 | tee "$out/qmm-probe.log" ;;
  qlora)
    python bench/gpu_qlora.py --tokenizer .whl/small --iters 8 --window 4 \
      --only bf16,4bit-kernels,4bit-hybrid,4bit-hybrid-throttle,4bit-throttle,4bit-kernels-throttle \
      --json "$out/qlora.json" 2>&1 | tee "$out/qlora.log" ;;
  70b)
    python bench/gpu_qlora.py --tokenizer .whl/small --window 4 --only 70b --70b-hybrid \
      --json "$out/qlora-70b-hybrid.json" 2>&1 | tee "$out/qlora-70b.log" ;;
  strong)
    bash bench/gpu_issue21.sh .whl/small 2>&1 | tee "$out/strong.log" ;;
  *)
    echo "usage: bash bench/gpu_next.sh test|probe|qlora|70b|strong" >&2; exit 2 ;;
esac
