"""GGUF types judged by llama.cpp: top-1 agreement, |Δlogit|, mean KL and the adapter's effect
kept against base+adapter for every --quantize of the GGUF export, on a tiny random llama with
rows of 256 (what K-quants need). The demo model's pirate run: bench/gguf_pirate.py.

    PYTHONPATH=$PWD:/work/llama-site python bench/gguf_types.py   # needs the gguf extra
"""
import tempfile
import time
from pathlib import Path
import mlx_lora  # noqa
from mlx_lora.export import export_run
from mlx_lora.models.demo import demo_model_path
from tests.tiny import make_tiny_model
from tests.core.test_chat_helpers import make_run
tmp = Path(tempfile.mkdtemp())
base = make_tiny_model(tmp / "wide", demo_model_path(), hidden_size=256, intermediate_size=512, head_dim=64)
run = make_run(base, tmp / "run")
for q in [None, "bf16", 8, "q6_k", "q5_k_m", "q4_k_m", 4]:
    t = time.time()
    try:
        r = export_run(run, tmp / f"out-{q}", "gguf", quantize=q)
        checks = r.checks
    except Exception as e:
        checks = getattr(e, "checks", []); print(q, "FAILED", str(e)[:300])
    for c in checks:
        kept = f"{c.adapter_effect_kept:.3f}±{c.adapter_effect_kept_se:.3f}" if c.adapter_effect_kept is not None else "-"
        kl = f"{c.mean_kl:.4g}" if c.mean_kl is not None else "-"
        print(f"{str(q):7} {c.check:45} passed={c.passed} top1={c.top1_agreement:.3f} max={c.max_abs_logit_diff:.3g} "
              f"mean={c.mean_abs_logit_diff:.3g} effect={c.adapter_effect:.3g} kl={kl} kept={kept}")
    print(f"  {time.time()-t:.1f}s", flush=True)
