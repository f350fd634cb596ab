"""Chat speed: our ChatSession next to mlx_lm.generate, same model, same prompt.

    .venv/bin/python bench/chat_speed.py [--model demo] [--max-tokens 128] [--repeats 3]

Both answer greedily from the same prompt tokens (our chat template render), so on
the same model object they produce the same tokens; mlx-lm runs ``stream_generate``,
the loop ``mlx_lm.generate`` wraps; runs alternate (ours then theirs, theirs then ours, …) to share whatever
else the machine is doing, and the median of ``--repeats`` is reported. Tokens per
second are end to end (prompt included) and generation only (as each reports it).
Rows: the base in float32 (what chat uses on the CPU), the same with a LoRA adapter
on it, and mlx-lm's own default load (the 4-bit model as stored) against ours.
Prints a markdown table; the goal is ours ≥ 0.95 × mlx-lm. A last row times base + tuned
answered at once (interleaved, the adapter switched off/on per step) against one after
the other: both sides' tokens per wall second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlx_lora  # noqa: E402,F401  (OpenBLAS before mlx.core)

PROMPT = "Write a long story about a pirate who finds a map to a hidden island."


def ours(session, messages, settings) -> tuple[float, float, int]:
    start = time.perf_counter()
    last = None
    for last in session.stream(messages, settings):
        pass
    seconds = time.perf_counter() - start
    return last.token_count / seconds, last.tokens_per_second, last.token_count


def theirs(model, tokenizer, prompt: list[int], max_tokens: int) -> tuple[float, float, int]:
    """mlx_lm.generate's own loop: generate() is stream_generate plus string joining;
    iterating it directly gives the token count and mlx-lm's generation speed too."""
    from mlx_lm.generate import stream_generate

    start = time.perf_counter()
    text, last = "", None
    for last in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens):  # greedy by default
        text += last.text
    seconds = time.perf_counter() - start
    return last.generation_tokens / seconds, last.generation_tps, last.generation_tokens


def both(session, messages, settings, interleaved: bool) -> tuple[float, int]:
    """Base and tuned answers (compare): total tokens of both sides / wall seconds."""
    start = time.perf_counter()
    last = {}
    for side, delta in session.compare(messages, settings, interleaved=interleaved):
        last[side] = delta
    seconds = time.perf_counter() - start
    tokens = sum(d.token_count for d in last.values())
    return tokens / seconds, tokens


def compare_both(label: str, session, settings, repeats: int) -> list[str]:
    """Both answers at once (a token of each in turn, the adapter switched per step) against
    one after the other, alternating who goes first; same greedy tokens either way."""
    messages = [{"role": "user", "content": PROMPT}]
    both(session, messages, settings, True)  # warm-up
    at_once, in_turn = [], []
    for i in range(repeats):
        order = (True, False) if i % 2 == 0 else (False, True)
        for interleaved in order:
            (at_once if interleaved else in_turn).append(both(session, messages, settings, interleaved))
    a, b = statistics.median(r[0] for r in at_once), statistics.median(r[0] for r in in_turn)
    return [f"| {label} | {at_once[0][1]} / {in_turn[0][1]} | {a:.1f} | {b:.1f} | **{a / b:.2f}×** |"]


def _median(runs: list[tuple[float, float, int]]) -> tuple[float, float, int]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[0][2]


def compare(label: str, session, settings, their_model, their_tokenizer, repeats: int) -> list[str]:
    messages = [{"role": "user", "content": PROMPT}]
    prompt = session.encode(messages, settings)
    ours(session, messages, settings)  # warm-up: compile, caches
    theirs(their_model, their_tokenizer, prompt, settings.max_tokens)
    a, b = [], []
    for i in range(repeats):
        if i % 2:  # alternate who goes first, so neither always follows the other
            b.append(theirs(their_model, their_tokenizer, prompt, settings.max_tokens))
            a.append(ours(session, messages, settings))
        else:
            a.append(ours(session, messages, settings))
            b.append(theirs(their_model, their_tokenizer, prompt, settings.max_tokens))
    (o_e2e, o_gen, o_n), (t_e2e, t_gen, t_n) = _median(a), _median(b)
    return [f"| {label} | {o_n} / {t_n} | {o_e2e:.1f} | {t_e2e:.1f} | **{o_e2e / t_e2e:.2f}×** | "
            f"{o_gen:.1f} | {t_gen:.1f} | {o_gen / t_gen:.2f}× |"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model

    settings = ChatSettings(temperature=0.0, max_tokens=args.max_tokens)
    rows = ["| model | tokens (ours / mlx-lm) | ours tok/s (end to end) | mlx_lm.generate tok/s | ratio | "
            "ours tok/s (generation) | mlx-lm tok/s (generation) | ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]

    chat = load_chat_model(args.model)
    session = ChatSession(chat.model, chat.tokenizer)
    rows += compare(f"{args.model}, float32 (chat's CPU default), same model object", session, settings,
                    chat.model, chat.tokenizer, args.repeats)

    # a LoRA adapter on all linear layers of the last 16 blocks, as `mlx-lora demo` trains
    with tempfile.TemporaryDirectory() as tmp:
        base, _ = load(str(chat.base_dir))
        base.freeze()
        keys = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
        lora = {"rank": 8, "scale": 2.0, "dropout": 0.0, "keys": keys}
        linear_to_lora_layers(base, 16, lora)
        weights = {k: 0.01 * mx.random.normal(v.shape) if k.endswith("lora_b") else v
                   for k, v in tree_flatten(base.trainable_parameters())}
        mx.save_safetensors(f"{tmp}/adapters.safetensors", weights)
        Path(f"{tmp}/adapter_config.json").write_text(
            '{"fine_tune_type": "lora", "num_layers": 16, "lora_parameters": '
            + str(lora).replace("'", '"') + '}')
        chat.use_adapter(tmp)
        rows += compare(f"{args.model} + LoRA (r 8, 16 layers, all linear), same model object", session, settings,
                        chat.model, chat.tokenizer, args.repeats)
        pair_rows = ["| base + tuned (compare) | tokens, both sides (at once / in turn) | at once tok/s (both sides) "
                     "| one after the other tok/s | ratio |", "|---|---:|---:|---:|---:|"]
        pair_rows += compare_both(f"{args.model} + the LoRA above: both at once vs one after the other", session,
                             settings, args.repeats)
        chat.remove_adapter()

    # what each does with the model as stored: mlx-lm keeps the 4-bit weights, we dequantise on the CPU
    stored, stored_tokenizer = load(str(chat.base_dir))
    rows += compare(f"{args.model}: ours (float32) vs mlx-lm's default load (as stored)", session, settings,
                    stored, stored_tokenizer, args.repeats)

    print(f"\n{PROMPT!r}, greedy, max {args.max_tokens} tokens, median of {args.repeats} alternating runs, "
          f"device {mx.default_device()}\n")
    print("\n".join(rows))
    print()
    print("\n".join(pair_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
