"""Chat as a small service over JSON lines: what the app's chat child process runs.

Loading a chat model in the app's own process stalled its window ~140 ms (the
tokenizer's parse holds the GIL; bench/RESULTS.md), so the app loads and answers
in a child, as it trains in one:

    python -m mlx_lora.chat.server

reads one JSON command per line on stdin and writes one event per line on stdout
(``Event.to_json``; the reader rebuilds them with ``Event.from_dict``):

- ``{"command": "load", "model": spec|null, "adapter": path|null, "chat_template": name}``
  → :class:`ChatLoaded` (or :class:`ChatFailed`); ``Progress`` while it loads.
- ``{"command": "answer", "id": n, "plan": [[side, messages, use_adapter], …],
  "settings": {ChatSettings fields}, "chat_template": name}`` → a ``ChatPrompt``, the
  ``ChatDelta`` of every token of every side (interleaved), then :class:`ChatAnswered`.
- ``{"command": "stop", "id": n}``: answer ``n`` stops within one token per side. It is
  read by a thread of its own, so it is heard while the main thread generates.
- ``{"command": "quit"}`` or the end of stdin: exit.

:class:`ChatServer` holds the one model and does the work; it is also what the app
runs in a thread when asked to stay in one process (tests with a stand-in session).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import sys
import threading
from typing import Any, Callable, TextIO

from mlx_lora.errors import UserError
from mlx_lora.events import Event, Reporter


@dataclasses.dataclass(frozen=True)
class ChatLoaded(Event):
    """A chat model is ready: its base, the adapter on it (None: the base alone), notes."""

    base_spec: str
    adapter: str | None
    label: str
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ChatAnswered(Event):
    """Answer ``id`` is over: each side's whole text (the last ChatDelta of each says why)."""

    id: int
    answers: dict


@dataclasses.dataclass(frozen=True)
class ChatFailed(Event):
    """A command failed: a message for the user (a UserError's text, or a summary)."""

    command: str
    message: str
    id: int = 0


@contextlib.contextmanager
def vocab_built_once():
    """While a model loads, a fast tokenizer's ``get_vocab()`` is built once and reused.

    mlx-lm's tokenizer wrapper asks for the vocabulary three times as it loads and the chat
    session once more; each call builds a 49k-entry dict in Rust holding the GIL, ~40 ms of
    CPU each (SmolLM2; ``bench/gui_responsiveness.py``'s load phase). Nothing adds tokens
    during the load, so one dict serves every caller.
    """
    try:
        from transformers.tokenization_utils_tokenizers import PreTrainedTokenizerFast
    except ImportError:  # transformers moved it: load without the cache
        yield
        return
    original = PreTrainedTokenizerFast.get_vocab
    built: dict[int, dict] = {}  # id(tokenizer) -> its vocabulary, for this load only

    def get_vocab(self):
        if id(self) not in built:
            built[id(self)] = original(self)
        return dict(built[id(self)])  # a copy, as the original returns: ~1 ms

    PreTrainedTokenizerFast.get_vocab = get_vocab
    try:
        yield
    finally:
        PreTrainedTokenizerFast.get_vocab = original


def load_session(reporter: Reporter, current, base_spec: str | None, adapter: str | None,
                 chat_template: str = "model"):
    """(chat model, session, ChatLoaded): reuses ``current`` (a ChatModel) when its base is
    the one needed — only the adapter changes then."""
    from mlx_lora.adapters import resolve_adapter
    from mlx_lora.chat.model import load_chat_model
    from mlx_lora.chat.session import ChatSession

    with vocab_built_once():
        files = resolve_adapter(adapter) if adapter else None
        wanted_base = base_spec or (files.base_model() if files is not None else None) or "demo"
        if current is not None and current.base_spec == wanted_base:
            chat_model = current
            if files is not None:
                chat_model.use_adapter(files)
            else:
                chat_model.remove_adapter()
        else:
            chat_model = load_chat_model(wanted_base, files, reporter=reporter)
        session = ChatSession(chat_model.model, chat_model.tokenizer, chat_template)
    label = files.label if files is not None else "no adapter"
    return chat_model, session, ChatLoaded(wanted_base, adapter, label, tuple(chat_model.notes))


class ChatServer:
    """One chat model in memory and the two things asked of it: load, answer.
    ``loader`` is :func:`load_session` unless a test passes a stand-in."""

    def __init__(self, loader: Callable[..., Any] = load_session) -> None:
        self._loader = loader
        self.chat_model = None
        self.session = None

    def load(self, reporter: Reporter, model: str | None, adapter: str | None,
             chat_template: str = "model") -> ChatLoaded:
        self.chat_model, self.session, loaded = self._loader(reporter, self.chat_model, model, adapter,
                                                             chat_template)
        return loaded

    def answer(self, reporter: Reporter, should_stop: Callable[[], bool], answer_id: int,
               plan: list, settings: dict | Any, chat_template: str = "model") -> ChatAnswered:
        """Stream every (side, messages, use_adapter) of ``plan`` at once, a token of each in
        turn; the reporter hears the last side's prompt (a ChatPrompt) and every ChatDelta."""
        from mlx_lora.chat.session import ChatPrompt, ChatRequest, ChatSettings

        if self.session is None:
            raise UserError("no chat model is loaded: load one first")
        if isinstance(settings, dict):
            settings = ChatSettings(**settings)
        session = self.session
        if session.chat_template != chat_template:
            session.set_chat_template(chat_template)
        side, messages, _ = plan[-1]
        reporter.emit(ChatPrompt(side, session.prompt_text(messages, settings), chat_template))
        parts: dict[str, list[str]] = {}
        requests = [ChatRequest(side, list(messages), bool(use_adapter)) for side, messages, use_adapter in plan]
        for delta in session.stream_sides(requests, settings, should_stop):
            parts.setdefault(delta.side, []).append(delta.text)
            reporter.emit(delta)
        return ChatAnswered(answer_id, {side: "".join(texts) for side, texts in parts.items()})


class _LineReporter:
    """Writes each event as one JSON line (the reader thread never writes: no lock needed)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def emit(self, event: Event) -> None:
        self.out.write(event.to_json() + "\n")
        self.out.flush()


def _failure(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "The computer ran out of memory. Try a smaller model."
    return f"Something went wrong ({type(exc).__name__}: {exc})."


def serve(lines_in: TextIO, out: TextIO, server: ChatServer | None = None) -> int:
    """Run commands from ``lines_in`` until "quit" or its end (see the module docstring)."""
    import traceback

    import mlx_lora  # noqa: F401  (BLAS before MLX)

    server = server or ChatServer()
    reporter = _LineReporter(out)
    commands: queue.Queue = queue.Queue()
    stopped: set[int] = set()  # ids of answers asked to stop (a stop can arrive before its answer starts)

    def read() -> None:
        for line in lines_in:
            try:
                command = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(command, dict) and command.get("command") == "stop":
                stopped.add(int(command.get("id", 0)))
            elif isinstance(command, dict):
                commands.put(command)
        commands.put({"command": "quit"})

    threading.Thread(target=read, name="chat-commands", daemon=True).start()
    while True:
        command = commands.get()
        kind = command.get("command")
        if kind == "quit":
            return 0
        answer_id = int(command.get("id", 0))
        try:
            if kind == "load":
                reporter.emit(server.load(reporter, command.get("model"), command.get("adapter"),
                                          command.get("chat_template", "model")))
            elif kind == "answer":
                reporter.emit(server.answer(reporter, lambda: answer_id in stopped, answer_id, command["plan"],
                                            command["settings"], command.get("chat_template", "model")))
            else:
                reporter.emit(ChatFailed(str(kind), f"unknown command {kind!r}", answer_id))
        except Exception as exc:  # noqa: BLE001 — every failure is reported; the server keeps serving
            if not isinstance(exc, UserError):
                sys.stderr.write(traceback.format_exc())
            reporter.emit(ChatFailed(str(kind), _failure(exc), answer_id))


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))
