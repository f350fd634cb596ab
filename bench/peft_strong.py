"""torch + PEFT as its careful users run it: the strong baseline of bench/gpu_train_vs_mlx_lm.py.

    python bench/peft_strong.py MODEL DATA RUN_DIR ITERS WINDOW SETTINGS_JSON

(bench/gpu_train_vs_mlx_lm.py runs it as ``--only peft-strong``; the arguments and the
RESULT line are those of its naive PEFT loop.) Same model, data, batches (seed 0, the
largest batch first), LoRA (rank 16, scale 2, every linear layer, no dropout), AdamW
(1e-4, no weight decay) and loss (the answer's tokens) as the naive loop; what changes is
how the step runs, each piece one that Hugging Face's own docs recommend:

- **padding-free packing**: each batch concatenated into one row by transformers'
  ``DataCollatorWithFlattening``, positions restarting per example (transformers builds
  the block-diagonal mask from the packed ``position_ids`` for sdpa and flex attention;
  flash attention gets the sequence boundaries). Used when the data's lengths vary
  (``pack: "auto"``); on the fixed-length set the batches hold no padding and stay
  ``B x L`` (one packed row would make sdpa compute a dense ``BL x BL`` mask).
- **attention**: ``flash_attention_2`` if the ``flash_attn`` package imports, else
  ``sdpa`` (``attn`` picks one: sdpa, flex_attention, flash_attention_2).
- **Liger kernels** (``liger-kernel``): RoPE, RMSNorm, SwiGLU and the fused linear
  cross-entropy (no logits tensor); else cut-cross-entropy's ``linear_cross_entropy``
  for the loss if it imports; else transformers' loss.
- **bf16 autocast** over the float32 LoRA weights PEFT makes (as ``Trainer(bf16=True)``),
  fused AdamW, and **torch.compile** of the forward and loss (``compile: "step"``;
  ``"layers"`` compiles each decoder layer; ``"none"``).

Each optional piece is tried; when the run fails (an error, or a loss that is not finite or
passes twice the first step's plus one: the H200's first run went to 4e27 with Liger and
the compiled step together), the piece the traceback points at
(else the next in the order compile, liger, cce, attention, fused-adamw, autocast) is
turned off (attention falls back to sdpa), one NOTE line says so and why, and the run starts again from a fresh
model. The RESULT line lists what was used (``used``) and the notes.
"""

import gc
import json
import math
import random
import sys
import time
import traceback
from pathlib import Path

import torch

NOTES: list[str] = []


def note(message: str) -> None:
    NOTES.append(message)
    print("NOTE " + message, flush=True)


def short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:300] + ("…" if len(text) > 300 else "")


class Liger:
    """Liger's llama patches, undoable (it replaces module attributes of modeling_llama)."""

    NAMES = ("apply_rotary_pos_emb", "LlamaRMSNorm", "LlamaMLP")

    def __init__(self) -> None:
        from transformers.models.llama import modeling_llama

        self.module = modeling_llama
        self.saved = {name: getattr(modeling_llama, name) for name in self.NAMES}
        self.forward = modeling_llama.LlamaForCausalLM.forward

    def apply(self) -> None:
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, fused_linear_cross_entropy=True)

    def undo(self) -> None:
        for name, value in self.saved.items():
            setattr(self.module, name, value)
        self.module.LlamaForCausalLM.forward = self.forward


def load_examples(tok, data: str, max_len: int) -> list[tuple[list[int], int]]:
    def encode(messages, **kwargs):
        out = tok.apply_chat_template(messages, tokenize=True, **kwargs)
        return list(out["input_ids"] if hasattr(out, "keys") else out)  # transformers 5 returns a BatchEncoding

    examples = []
    for line in (Path(data) / "train.jsonl").read_text().splitlines():
        messages = json.loads(line)["messages"]
        ids = encode(messages)[:max_len]
        prompt = len(encode(messages[:-1], add_generation_prompt=True))
        examples.append((ids, prompt))
    return examples


def make_batches(examples, s) -> list[list[int]]:
    """The naive loop's batches, in its order."""
    random.seed(0)
    order = list(range(len(examples)))
    random.shuffle(order)
    size = s["batch_size"]
    batches = [order[i:i + size] for i in range(0, len(order) - size + 1, size)]
    if s.get("worst_first"):
        batches.insert(0, sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))[:size])
    return batches


def collate(chosen, pack: bool, flash: bool, pad_id: int) -> dict:
    if pack:
        from transformers import DataCollatorWithFlattening

        collator = DataCollatorWithFlattening(return_flash_attn_kwargs=flash, return_tensors="pt")
        return collator([{"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]} for ids, prompt in chosen])
    width = max(len(ids) for ids, _ in chosen)
    input_ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
    labels = torch.full((len(chosen), width), -100, dtype=torch.long)
    attention = torch.zeros((len(chosen), width), dtype=torch.long)
    for row, (ids, prompt) in enumerate(chosen):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        labels[row, prompt:len(ids)] = torch.tensor(ids[prompt:])
    batch = {"input_ids": input_ids, "labels": labels}
    if not bool(attention.all()):  # no mask when there is no padding: sdpa then runs is_causal (flash kernels)
        batch["attention_mask"] = attention
    return batch


def train(plan: dict, model_path: str, examples, batches, iters: int, window: int, s: dict, device: str, tok) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    liger = Liger()
    liger.undo()
    if plan["liger"]:
        liger.apply()
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16, attn_implementation=plan["attn"])
        model.config.use_cache = False
        model = model.to(device)
        model = get_peft_model(model, LoraConfig(r=s["rank"], lora_alpha=s["rank"] * s["scale"], lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
        model.train()
        causal_lm = model.base_model.model  # LlamaForCausalLM, its layers wrapped by PEFT
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s["learning_rate"], weight_decay=0.0,
                                      **({"fused": True} if plan["fused-adamw"] else {}))
        if plan["cce"]:
            from cut_cross_entropy import linear_cross_entropy

        def forward_loss(batch: dict) -> torch.Tensor:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=plan["autocast"]):
                if plan["cce"]:  # the loss from the last hidden states and the head's weight, no logits
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    hidden = causal_lm.model(**inputs).last_hidden_state
                    return linear_cross_entropy(hidden, causal_lm.lm_head.weight, batch["labels"], shift=True)
                return model(**batch).loss  # Liger's forward when patched: fused linear cross-entropy

        step_loss = forward_loss
        if plan["compile"] == "step":
            step_loss = torch.compile(forward_loss, dynamic=True if plan["pack"] else None)
        elif plan["compile"] == "layers":
            for layer in causal_lm.model.layers:
                layer.compile(dynamic=True if plan["pack"] else None)

        pad_id = tok.pad_token_id or 0
        flash = plan["attn"] == "flash_attention_2"
        cuda = device == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        windows, examples_s, losses, step_s = [], [], [], []
        real = rows = 0
        start = time.perf_counter()
        for step in range(iters):
            chosen = [examples[i] for i in batches[step % len(batches)]]
            batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                     for k, v in collate(chosen, plan["pack"], flash, pad_id).items()}
            t0 = time.perf_counter()
            loss = step_loss(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())  # synchronises
            if not math.isfinite(losses[-1]) or losses[-1] > 2 * losses[0] + 1:  # a speed-up that breaks training
                raise FloatingPointError(f"diverged: loss {losses[-1]:.4g} at step {step + 1} "
                                         f"(first step {losses[0]:.4g})")
            step_s.append(time.perf_counter() - t0)
            real += sum(len(ids) for ids, _ in chosen)
            rows += len(chosen)
            if (step + 1) % window == 0:
                seconds = time.perf_counter() - start
                windows.append(real / seconds)
                examples_s.append(rows / seconds)
                real = rows = 0
                start = time.perf_counter()
        return {"windows": windows, "examples": examples_s,
                "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else 0.0,
                "reserved_gb": torch.cuda.max_memory_reserved() / 1e9 if cuda else 0.0, "max_rss_gb": 0,
                "final_loss": sum(losses[-window:]) / window, "first_step_s": step_s[0],
                "used": {k: v for k, v in plan.items()}, "notes": NOTES}
    finally:
        liger.undo()


def blame(plan: dict, text: str) -> str | None:
    """The optional piece a failure's traceback points at, else the next one still on."""
    hints = (("compile", ("torch/_dynamo", "torch/_inductor", "torch._dynamo", "torch._inductor")),
             ("liger", ("liger_kernel",)), ("cce", ("cut_cross_entropy",)),
             ("attn", ("flash_attn", "flex_attention", "flash_attention")), ("fused-adamw", ("_fused_adam",)))
    on = [k for k in ("compile", "liger", "cce", "attn", "fused-adamw", "autocast") if plan[k] not in (False, "none", "sdpa")]
    for key, needles in hints:
        if key in on and any(n in text for n in needles):
            return key
    return on[0] if on else None


def main() -> None:
    model_path, data, run_dir, iters, window, s = (sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                                                   int(sys.argv[5]), json.loads(sys.argv[6]))
    want = {"pack": "auto", "attn": "auto", "compile": "step", "liger": True, "cce": True, "fused-adamw": True,
            "autocast": True, **s.get("strong", {})}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__} on {device}", flush=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    examples = load_examples(tok, data, s["max_seq_length"])
    batches = make_batches(examples, s)

    plan = dict(want)
    if plan["pack"] == "auto":
        plan["pack"] = len({len(ids) for ids, _ in examples}) > 1
    note(f"packing: {'on (DataCollatorWithFlattening, one row per batch)' if plan['pack'] else 'off'}")
    if plan["attn"] == "auto":
        try:
            import flash_attn  # noqa: F401

            plan["attn"] = "flash_attention_2"
        except Exception as exc:
            note(f"flash_attention_2: skipped (flash_attn does not import: {short(exc)}); sdpa")
            plan["attn"] = "sdpa"
    if plan["liger"]:
        try:
            if device != "cuda":
                raise RuntimeError("Liger's Triton kernels need a GPU")
            import liger_kernel.transformers  # noqa: F401
        except Exception as exc:
            note(f"liger: skipped ({short(exc)})")
            plan["liger"] = False
    if plan["liger"]:
        plan["cce"] = False  # Liger's fused linear cross-entropy is the loss
    elif plan["cce"]:
        try:
            if device != "cuda":
                raise RuntimeError("cut-cross-entropy's Triton kernels need a GPU")
            from cut_cross_entropy import linear_cross_entropy  # noqa: F401
        except Exception as exc:
            note(f"cce: skipped ({short(exc)})")
            plan["cce"] = False
    if plan["fused-adamw"] and device != "cuda":
        plan["fused-adamw"] = False
    if not plan["compile"]:
        plan["compile"] = "none"

    result = None
    for _attempt in range(8):
        try:
            result = train(plan, model_path, examples, batches, iters, window, s, device, tok)
        except Exception as exc:
            text = traceback.format_exc()
            culprit = blame(plan, text)
            if culprit is None:
                raise
            fallback = {"compile": "none", "attn": "sdpa"}.get(culprit, False)
            note(f"{culprit}={plan[culprit]}: failed ({short(exc)}); again with {culprit}={fallback}")
            plan[culprit] = fallback
        if result is not None:
            break
        gc.collect()  # out of the except block: the failed run's frames (its model) are gone
        if device == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()
    if result is None:
        raise SystemExit("peft-strong: gave up after 8 attempts")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
