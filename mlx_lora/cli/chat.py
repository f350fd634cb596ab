"""``mlx-lora chat``: talk to a model, with or without an adapter, in the terminal.

    mlx-lora chat --adapter runs/my-run/best              # the run's base + its best adapter
    mlx-lora chat --model demo --prompt "Hi" --temperature 0  # one answer, then exit
    mlx-lora chat --adapter runs/my-run --compare          # base and tuned answer each turn

Interactive commands: ``/reset`` forgets the conversation, ``/exit`` (or Ctrl-D)
leaves. Ctrl-C while an answer streams stops that answer (within one token) and
keeps the chat; Ctrl-C at the prompt leaves. Answers go to stdout; the speed line
and notes go to stderr, so ``--prompt`` output can be piped.
"""

from __future__ import annotations

import signal
import sys
import threading


def register(sub) -> None:
    p = sub.add_parser("chat", help="chat with a model and its adapter in the terminal",
                       description="Chat with a base model, or with a run's adapter on it (--adapter).")
    p.add_argument("--model", help="the base model: demo, a folder, a .gguf file or org/name (default: the "
                                   "adapter's base, else demo)")
    p.add_argument("--adapter", metavar="RUN_OR_CHECKPOINT",
                   help="a run folder, its best/ folder, or checkpoints/step-N/")
    p.add_argument("--compare", action="store_true", help="answer every turn with the base and with the adapter")
    p.add_argument("--system", help="a system prompt")
    p.add_argument("--prompt", help="ask this once, print the answer and exit (no interactive chat)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 always picks the likeliest token (default 0.7)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (default 1: off)")
    p.add_argument("--min-p", type=float, default=0.0, help="min-p sampling (default 0: off)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens (default 0: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="above 1 discourages repeats (default 1)")
    p.add_argument("--max-tokens", type=int, default=512, help="longest answer in tokens (default 512)")
    p.add_argument("--seed", type=int, help="a seed for repeatable sampling")
    p.set_defaults(func=_chat)


class _StopFlag:
    """Set by Ctrl-C while an answer streams; the engine asks it between tokens."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __call__(self) -> bool:
        return self.event.is_set()


def _answer(session, messages, settings, compare: bool, out, err) -> str:
    """Stream the answer(s); returns the tuned (or only) answer's text for the history."""
    stop = _StopFlag()
    previous = signal.getsignal(signal.SIGINT)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGINT, lambda *_: stop.event.set())
    try:
        sides = session.compare(messages, settings, stop, interleaved=False) if compare else \
            (("tuned", d) for d in session.stream(messages, settings, stop))
        text, side_now = "", None
        for side, delta in sides:
            if compare and side != side_now:
                side_now = side
                out.write(f"\n[{side}] " if side == "tuned" else f"[{side}] ")
            out.write(delta.text)
            out.flush()
            if side == "tuned":
                text += delta.text
            if delta.finished:
                out.write("\n")
                reason = {"length": " (stopped at --max-tokens)", "cancelled": " (stopped)"}.get(
                    delta.finish_reason or "", "")
                err.write(f"  {delta.token_count} tokens, {delta.tokens_per_second:.1f} tokens/s{reason}\n")
                err.flush()
        return text
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _chat(args) -> int:
    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model
    from mlx_lora.errors import UserError

    settings = ChatSettings(system_prompt=args.system, temperature=args.temperature, top_p=args.top_p,
                            min_p=args.min_p, top_k=args.top_k, repetition_penalty=args.repetition_penalty,
                            max_tokens=args.max_tokens, seed=args.seed)
    if args.compare and not args.adapter:
        raise UserError("--compare needs --adapter (the base is compared with the base + adapter)")
    out, err = sys.stdout, sys.stderr
    chat_model = load_chat_model(args.model, args.adapter)
    adapter = chat_model.adapter
    err.write(f"{chat_model.base_spec}" + (f" + {adapter.label}" if adapter else "") + "\n")
    for note in chat_model.notes:
        err.write(f"  note: {note}\n")
    session = ChatSession(chat_model.model, chat_model.tokenizer)
    if args.prompt is not None:
        _answer(session, [{"role": "user", "content": args.prompt}], settings, args.compare, out, err)
        return 0

    err.write("type a message; /reset forgets the conversation, /exit leaves\n")
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            err.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history.clear()
            err.write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": text})
        reply = _answer(session, history, settings, args.compare, out, err)
        history.append({"role": "assistant", "content": reply})
