"""The Chat page's controller: one model in memory (the base a run trained on, with
the run's adapter or checkpoint on it), streaming answers from a chat worker.

The model lives in a child process (:class:`app.jobs.chat_process.ChatProcess`, running
:mod:`mlx_lora.chat.server`): loading it there cannot stall the window (in the app's
process the tokenizer's parse held the GIL ~140 ms), and a crash costs the chat, not the
app. Commands go to it as JSON lines; its events (the engine's ``ChatLoaded``,
``ChatPrompt``, ``ChatDelta``, ``ChatAnswered``, ``ChatFailed``) come back on the GUI
thread's event loop and become this controller's signals. ``stop`` asks the worker,
which checks between every two tokens (a cancel costs at most one token per side).
Base and tuned answer at once with the same model, a token of each in turn: the adapter
is switched off for the base's steps. The chat template is the one config's
``data.chat_template`` (:attr:`ChatController.chat_template`).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.controllers.app_state import AppState
from app.jobs.chat_process import make_chat_worker
from app.jobs.workers import Job
from mlx_lora.chat.server import vocab_built_once as _vocab_built_once  # noqa: F401  (tests import it here)

BASE, TUNED = "base", "tuned"


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    base_spec: str
    adapter: str | None  # the adapter folder, or None for the base alone
    label: str
    notes: tuple[str, ...]


def _list_runs(reporter, should_stop):
    from mlx_lora.run_history import list_runs

    return [run for run in list_runs() if run.checkpoints]


class ChatController(QObject):
    runs_listed = Signal(list)  # [RunSummary] with at least one adapter
    loading = Signal(str)  # what is being loaded
    model_loaded = Signal(object)  # LoadedModel
    answer_started = Signal(str)  # side
    delta_received = Signal(str, object)  # side, ChatDelta
    prompt_rendered = Signal(object)  # ChatPrompt: the tuned side's prompt as the model reads it
    answer_finished = Signal(dict)  # {side: (text, last ChatDelta)}
    busy_changed = Signal(bool)
    load_cancelled = Signal()
    failed = Signal(str)

    def __init__(self, state: AppState, worker=None) -> None:
        super().__init__()
        self.state = state
        self.loaded: LoadedModel | None = None
        self.worker = worker if worker is not None else make_chat_worker(self)
        self.worker.event_received.connect(self._on_event)
        self.worker.crashed.connect(self._on_crashed)
        self._doing: str | None = None  # "load" | "answer" while the worker works for us
        self._answer_ids = itertools.count(1)
        self._answer_id = 0
        self._last: dict = {}  # side -> last ChatDelta of the answer in progress
        self._list_job: Job | None = None
        self.conversations: dict[str, list[dict]] = {BASE: [], TUNED: []}
        self._pending_sides: list[str] = []

    # -- state -----------------------------------------------------------------------
    @property
    def chat_template(self) -> str:
        """The one config's ``data.chat_template`` (the Chat page's picker edits it there)."""
        return self.state.config.data.chat_template

    def set_chat_template(self, name: str) -> None:
        self.state.update_config(chat_template=name)

    def is_busy(self) -> bool:
        return self._doing is not None

    def is_answering(self) -> bool:
        return self._doing == "answer"

    # -- actions ---------------------------------------------------------------------
    def refresh_runs(self) -> None:
        if self._list_job is not None:
            return
        job = Job(_list_runs, name="list runs")
        job.finished.connect(self.runs_listed.emit)
        job.failed.connect(self.failed)
        job.done.connect(lambda: setattr(self, "_list_job", None))
        self._list_job = job
        job.start()

    def load(self, adapter: str | Path | None) -> None:
        """Load the adapter's base with the adapter on it (a run folder, best/ or
        checkpoints/step-N), or the app's selected model alone when ``adapter`` is None."""
        if self._doing is not None:
            return
        adapter = str(adapter) if adapter else None
        base = None if adapter else self.state.model
        self.loading.emit(Path(adapter).name if adapter else self.state.model_label)
        self._begin("load")
        self.worker.command({"command": "load", "model": base, "adapter": adapter,
                             "chat_template": self.chat_template})

    def send(self, text: str, settings, compare: bool) -> None:
        """Ask the tuned model (and the base, when ``compare``) to answer ``text``. Each side
        keeps its own conversation; both sample with the same seed."""
        if self._doing is not None or self.loaded is None or not text.strip():
            return
        if settings.seed is None:  # one seed for both sides, chosen here so the answer can be repeated
            settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        sides = [BASE, TUNED] if compare and self.loaded.adapter else [TUNED]
        plan = []
        for side in sides:
            self.conversations[side].append({"role": "user", "content": text})
            plan.append([side, list(self.conversations[side]), side == TUNED])
        self._pending_sides = sides
        self._answer_id = next(self._answer_ids)
        self._last = {}
        self._begin("answer")
        self.worker.command({"command": "answer", "id": self._answer_id, "plan": plan,
                             "settings": dataclasses.asdict(settings), "chat_template": self.chat_template})
        for side in sides:
            self.answer_started.emit(side)

    def stop(self) -> None:
        if self._doing == "answer":
            self.worker.stop(self._answer_id)

    def is_loading(self) -> bool:
        return self._doing == "load"

    def cancel_load(self) -> None:
        """Stop a load in progress. The chat child is ended (mid-load it holds nothing worth
        keeping) and started again by the next command; on the thread fallback, which cannot
        be interrupted, the load runs on and its result is dropped."""
        if self._doing != "load":
            return
        self._drop_load = self.worker.pid is None  # a thread: its ChatLoaded/ChatFailed still comes
        self.worker.kill()
        self._end()
        self.loaded = None
        self.load_cancelled.emit()

    def clear(self) -> None:
        self.conversations = {BASE: [], TUNED: []}

    # -- internals -----------------------------------------------------------------------
    def _begin(self, what: str) -> None:
        self._doing = what
        self.busy_changed.emit(True)

    def _end(self) -> str | None:
        """The work is over; the controller is free before anyone hears the result (a listener
        that acts on model_loaded at once — a test, a queued send — finds it free)."""
        doing, self._doing = self._doing, None
        if doing is not None:
            self.busy_changed.emit(False)
        return doing

    def _on_event(self, event) -> None:
        from mlx_lora.chat.server import ChatAnswered, ChatFailed, ChatLoaded
        from mlx_lora.chat.session import ChatDelta, ChatPrompt

        if isinstance(event, ChatDelta):
            self._last[event.side] = event
            self.delta_received.emit(event.side, event)
        elif isinstance(event, ChatPrompt):
            self.prompt_rendered.emit(event)
        elif isinstance(event, (ChatLoaded, ChatFailed)) and getattr(self, "_drop_load", False) and \
                self._doing is None:
            self._drop_load = False  # the cancelled load's late result
        elif isinstance(event, ChatLoaded):
            self._end()
            self.loaded = LoadedModel(event.base_spec, event.adapter, event.label, tuple(event.notes))
            self.clear()
            self.model_loaded.emit(self.loaded)
        elif isinstance(event, ChatAnswered):
            self._end()
            self._on_answered({side: (text, self._last.get(side)) for side, text in event.answers.items()})
        elif isinstance(event, ChatFailed):
            doing = self._end()
            if doing == "answer":
                self._on_answered({})
            self.failed.emit(event.message)

    def _on_crashed(self, message: str) -> None:
        doing = self._end()
        self.loaded = None  # the model went with the process
        if doing == "answer":
            self._on_answered({})
        self.failed.emit(message)

    def _on_answered(self, answers: dict) -> None:
        for side in self._pending_sides:
            if side in answers:
                self.conversations[side].append({"role": "assistant", "content": answers[side][0]})
            elif self.conversations[side] and self.conversations[side][-1]["role"] == "user":
                self.conversations[side].pop()  # never answered (cancelled before its turn, or failed)
        self._pending_sides = []
        self.answer_finished.emit(answers)
