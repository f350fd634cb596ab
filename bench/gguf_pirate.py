"""The demo model's pirate run as GGUF, judged by llama.cpp: for each type, the export check's
figures (top-1 agreement, mean KL against base+adapter in MLX float32, the adapter's effect
kept, the validation loss through llama.cpp) and whether llama.cpp's greedy answers to the
15 held-out questions of resources/datasets/pirate are still in the tuned style ("Arr!",
"matey", "Yo ho ho!" — every training answer has them; the base's never do). Also an
export whose fuse dropped the adapter (it must be refused), q4_k_m with an importance
matrix, and the GGUF adapter on the f16 base.

    PYTHONPATH=$PWD python bench/gguf_pirate.py [--run RUN] [--types f16,q8_0,q4_k_m] [--json out.json]

(on a busy machine, MLX_LORA_LLAMA_CPP_THREADS=1: llama.cpp's spin barriers make more threads slower.)
Answers are greedy, 32 tokens at most.

Without --run it first trains the pirate run (`mlx-lora demo`'s settings: 30 steps of LoRA on
the demo model; equivalent to `mlx-lora train --model demo --data resources/datasets/pirate
--iters 30 --batch-size 4 --num-layers 16 --rank 8 --alpha 16 --learning-rate 1e-3 ...`).
Needs the gguf extra (llama-cpp-python).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlx_lora  # noqa: E402,F401
from mlx_lora import paths  # noqa: E402

TYPES = ["f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"]
QUANTIZE = {"f16": None, "bf16": "bf16", "q8_0": 8, "q6_k": "q6_k", "q5_k_m": "q5_k_m", "q4_k_m": "q4_k_m", "q4_0": 4}
MARKERS = ("Arr", "matey", "Yo ho")


def held_out_questions() -> list[str]:
    lines = (paths.sample_datasets_dir() / "pirate" / "valid.jsonl").read_text().splitlines()
    return [next(m["content"] for m in json.loads(line)["messages"] if m["role"] == "user") for line in lines]


def style(answers: list[str]) -> dict:
    return {"starts_arr": sum(a.strip().startswith("Arr") for a in answers) / len(answers),
            "any_marker": sum(any(m in a for m in MARKERS) for a in answers) / len(answers)}


def answers_of(gguf: Path, prompt_ids, stop_ids, lora: Path | None = None) -> list[str]:
    from mlx_lora.export.llama_cpp_check import llama_cpp_logits

    _, info = llama_cpp_logits(gguf, prompt_ids[:1], stop_ids=stop_ids, n_predict=32, answer=prompt_ids, lora=lora)
    return info["answers"]


def row(name: str, check, answers: list[str] | None, seconds: float, note: str = "") -> dict:
    out = {"type": name, "passed": check.passed, "status": check.status, "top1": check.top1_agreement,
           "mean_kl": check.mean_kl, "adapter_kl": check.adapter_kl, "kept": check.adapter_effect_kept,
           "kept_se": check.adapter_effect_kept_se, "top1_changes_kept": check.adapter_top1_changes_kept,
           "mean_abs": check.mean_abs_logit_diff, "adapter_effect": check.adapter_effect,
           "val_loss": check.val_loss, "val_loss_tuned": check.val_loss_tuned, "val_loss_base": check.val_loss_base,
           "seconds": round(seconds, 1), "note": note}
    if answers is not None:
        out.update(style(answers), answers=answers)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--json")
    parser.add_argument("--skip-extras", action="store_true", help="no dropped-adapter, imatrix or adapter rows")
    parser.add_argument("--extras", default="imatrix,dropped,adapter", help="which extra rows")
    parser.add_argument("--skip-base", action="store_true", help="no row for the base's own answers")
    args = parser.parse_args()

    from mlx_lora.adapters import strip_adapters
    from mlx_lora.chat import ChatSession, load_chat_model
    from mlx_lora.export import export_run, verify
    from mlx_lora.export.exporter import ExportVerificationFailed
    from mlx_lora.export.fused import load_base_float32
    from mlx_lora.export.gguf_export import write_gguf

    tmp = Path(tempfile.mkdtemp(prefix="gguf-pirate-"))
    run = Path(args.run) if args.run else None
    if run is None:
        from mlx_lora.demo_training import demo_config
        from mlx_lora.train import train

        t = time.time()
        run = Path(train(demo_config(30, tmp / "pirate-run")).run_dir)
        print(f"trained the pirate run in {time.time() - t:.0f} s: {run}", flush=True)

    chat = load_chat_model("demo", adapter=run, compute_dtype="float32")
    session = ChatSession(chat.model, chat.tokenizer)
    questions = held_out_questions()
    prompt_ids = verify.prompt_token_ids(session, tuple(questions))
    stop_ids = session.stop_ids
    rows = []

    base_gguf = tmp / "base-f16.gguf"  # the base alone, through llama.cpp, for its style
    from mlx_lora.adapters import resolve_adapter
    from mlx_lora.models.local import resolve_model

    files = resolve_adapter(run)
    base_dir = resolve_model("demo")
    config = json.loads((base_dir / "config.json").read_text())
    write_gguf(load_base_float32(base_dir, files), config, chat.tokenizer, base_dir, base_gguf, quantize=None,
               eos_ids=stop_ids, name="base")
    if not args.skip_base:
        base_answers = answers_of(base_gguf, prompt_ids, stop_ids)
        rows.append({"type": "base (f16, no adapter)", **style(base_answers), "answers": base_answers})
        print(json.dumps(rows[-1])[:300], flush=True)
    del chat, session

    for name in filter(None, args.types.split(",")):
        t = time.time()
        out = tmp / f"out-{name}"
        result = export_run(run, out, "gguf", quantize=QUANTIZE[name], torch_python=None)
        [check] = [c for c in result.checks if c.check.endswith("(loaded by llama.cpp)")]
        [gguf] = out.glob("*.gguf")
        rows.append(row(name, check, answers_of(gguf, prompt_ids, stop_ids), time.time() - t,
                        "; ".join(n for n in result.notes if n.startswith("warning"))))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)

    extras = set() if args.skip_extras else set(args.extras.split(","))
    if "imatrix" in extras:
        t = time.time()
        result = export_run(run, tmp / "out-imatrix", "gguf", quantize="q4_k_m", torch_python=None, imatrix=True)
        [check] = [c for c in result.checks if c.check.endswith("(loaded by llama.cpp)")]
        [gguf] = (tmp / "out-imatrix").glob("*.gguf")
        rows.append(row("q4_k_m + imatrix", check, answers_of(gguf, prompt_ids, stop_ids), time.time() - t))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
    if "dropped" in extras:
        t = time.time()
        try:
            export_run(run, tmp / "out-dropped", "gguf", quantize="q4_k_m", torch_python=None, fuse=strip_adapters)
            raise SystemExit("an export that dropped its adapter was written: the check is broken")
        except ExportVerificationFailed as exc:
            [check] = [c for c in exc.checks if c.check.endswith("(loaded by llama.cpp)")]
            rows.append(row("q4_k_m, adapter dropped by the fuse", check, None, time.time() - t, "refused"))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
    if "adapter" in extras:
        t = time.time()
        result = export_run(run, tmp / "out-adapter", "gguf-adapter", torch_python=None)
        answers = answers_of(base_gguf, prompt_ids, stop_ids, lora=tmp / "out-adapter" / "adapter.gguf")
        rows.append(row("adapter.gguf on the f16 base", result.checks[0], answers, time.time() - t,
                        f"against the fused f16 GGUF: max |Δlogit| {result.checks[1].max_abs_logit_diff:.3g}, "
                        f"top-1 {result.checks[1].top1_agreement:.1%}"))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)

    print("\n| GGUF | top-1 vs tuned | mean KL (nats) | effect kept | top-1 changes kept | val loss | "
          "answers starting \"Arr\" | with a pirate marker |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "top1" not in r:
            print(f"| {r['type']} | | | | | {'' } | {r['starts_arr']:.0%} | {r['any_marker']:.0%} |")
            continue
        kept = f"{r['kept']:.1%} ± {r['kept_se']:.1%}" if r["kept"] is not None else ""
        loss = f"{r['val_loss']:.3f}" if r["val_loss"] is not None else ""
        arr = f"{r['starts_arr']:.0%}" if "starts_arr" in r else r["note"]
        marker = f"{r['any_marker']:.0%}" if "any_marker" in r else ""
        print(f"| {r['type']} | {r['top1']:.1%} | {r['mean_kl']:.4f} | {kept} | {r['top1_changes_kept']:.1%} | "
              f"{loss} | {arr} | {marker} |")
    tuned = next((r for r in rows if r.get("val_loss_tuned") is not None), None)
    if tuned:
        print(f"\nvalidation loss in MLX float32: base+adapter {tuned['val_loss_tuned']:.3f}, "
              f"base {tuned['val_loss_base']:.3f}; adapter KL(tuned ‖ base) {tuned['adapter_kl']:.3f} nats")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
