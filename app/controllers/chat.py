"""The Chat page's controller: one model in memory (the base a run trained on, with
the run's adapter or checkpoint on it), streaming answers in a worker thread.

Everything MLX does here runs in :class:`Job` workers: loading the base, switching
adapters (no reload when the base is the same) and generating. Each token comes
back as a ``delta_received`` signal queued to the GUI thread, so the window never
waits on the model; ``stop`` sets the job's flag, which
:meth:`ChatSession.stream_sides` checks between every two tokens (a cancel costs at most
one token per side). Base and tuned answer at once with the same model, a token of each
in turn: the adapter is switched off for the base's steps. The chat template is the one
config's ``data.chat_template`` (:attr:`ChatController.chat_template`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal

from app.controllers.app_state import AppState
from app.jobs.workers import Job

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


@contextlib.contextmanager
def _vocab_built_once():
    """While a model loads, a fast tokenizer's ``get_vocab()`` is built once and reused.

    mlx-lm's tokenizer wrapper asks for the vocabulary three times as it loads and the chat
    session once more; each call builds a 49k-entry dict in Rust *holding the GIL*, which
    stalls the GUI thread for ~40 ms of CPU each (SmolLM2; measured in
    ``bench/gui_responsiveness.py``'s load phase, where they were 4 of the 5 stalls over 50 ms).
    Nothing adds tokens during the load, so one dict serves every caller. The remaining stall
    is ``Tokenizer.from_file`` (~130 ms of CPU parsing tokenizer.json, also holding the GIL);
    only loading in another process would remove it.
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


def _load(reporter, should_stop, current, base_spec: str | None, adapter: str | None, chat_template: str = "model"):
    """(chat model, session, LoadedModel): reuses ``current`` when its base is the one needed."""
    with _vocab_built_once():
        return _load_model(reporter, current, base_spec, adapter, chat_template)


def _load_model(reporter, current, base_spec: str | None, adapter: str | None, chat_template: str = "model"):
    from mlx_lora.adapters import resolve_adapter
    from mlx_lora.chat import ChatSession, load_chat_model

    files = resolve_adapter(adapter) if adapter else None
    wanted_base = base_spec or (files.base_model() if files is not None else None) or "demo"
    if current is not None and current[0].base_spec == wanted_base:
        chat_model = current[0]
        if files is not None:
            chat_model.use_adapter(files)
        else:
            chat_model.remove_adapter()
        notes = tuple(chat_model.notes)
    else:
        chat_model = load_chat_model(wanted_base, files, reporter=reporter)
        notes = tuple(chat_model.notes)
    session = ChatSession(chat_model.model, chat_model.tokenizer, chat_template)
    label = files.label if files is not None else "no adapter"
    return chat_model, session, LoadedModel(wanted_base, adapter, label, notes)


def _answer(reporter, should_stop, session, plan, settings, chat_template: str = "model"):
    """Stream every (side, messages, use_adapter) of ``plan`` at once, a token of each in turn
    (:meth:`ChatSession.stream_sides`), rendered with ``chat_template``. The reporter hears the
    tuned side's prompt (a ChatPrompt) and every ChatDelta. Returns {side: (text, last delta)}."""
    from mlx_lora.chat import ChatPrompt, ChatRequest

    if session.chat_template != chat_template:
        session.set_chat_template(chat_template)
    side, messages, _ = plan[-1]
    reporter.emit(ChatPrompt(side, session.prompt_text(messages, settings), chat_template))
    parts: dict[str, list[str]] = {}
    last: dict = {}
    requests = [ChatRequest(side, messages, use_adapter) for side, messages, use_adapter in plan]
    for delta in session.stream_sides(requests, settings, should_stop):
        parts.setdefault(delta.side, []).append(delta.text)
        last[delta.side] = delta
        reporter.emit(delta)
    return {side: ("".join(parts[side]), last[side]) for side in last}


class ChatController(QObject):
    runs_listed = Signal(list)  # [RunSummary] with at least one adapter
    loading = Signal(str)  # what is being loaded
    model_loaded = Signal(object)  # LoadedModel
    answer_started = Signal(str)  # side
    delta_received = Signal(str, object)  # side, ChatDelta
    prompt_rendered = Signal(object)  # ChatPrompt: the tuned side's prompt as the model reads it
    answer_finished = Signal(dict)  # {side: (text, last ChatDelta)}
    busy_changed = Signal(bool)
    failed = Signal(str)

    def __init__(self, state: AppState) -> None:
        super().__init__()
        self.state = state
        self.loaded: LoadedModel | None = None
        self._model = None  # (ChatModel, ChatSession), touched only by jobs
        self._job: Job | None = None
        self._list_job: Job | None = None
        self.conversations: dict[str, list[dict]] = {BASE: [], TUNED: []}
        self._pending_sides: list[str] = []
        # One thread, kept alive, for every MLX call on the chat model: mlx-lm makes its
        # generation stream on import, in whichever thread imports it, and MLX keeps
        # per-thread stream state; one thread keeps load and generation together.
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._pool.setExpiryTimeout(-1)

    # -- state -----------------------------------------------------------------------
    @property
    def chat_template(self) -> str:
        """The one config's ``data.chat_template`` (the Chat page's picker edits it there)."""
        return self.state.config.data.chat_template

    def set_chat_template(self, name: str) -> None:
        self.state.update_config(chat_template=name)

    def is_busy(self) -> bool:
        return self._job is not None

    def is_answering(self) -> bool:
        return self._job is not None and self._job.name == "answer"

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
        if self._job is not None:
            return
        adapter = str(adapter) if adapter else None
        base = None if adapter else self.state.model
        self.loading.emit(Path(adapter).name if adapter else self.state.model_label)
        self._start(Job(_load, self._model, base, adapter, self.chat_template, name="load"), self._on_loaded)

    def send(self, text: str, settings, compare: bool) -> None:
        """Ask the tuned model (and the base, when ``compare``) to answer ``text``. Each side
        keeps its own conversation; both sample with the same seed."""
        if self._job is not None or self._model is None or not text.strip():
            return
        if compare and settings.seed is None:
            settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        sides = [BASE, TUNED] if compare and self.loaded and self.loaded.adapter else [TUNED]
        plan = []
        for side in sides:
            self.conversations[side].append({"role": "user", "content": text})
            plan.append((side, list(self.conversations[side]), side == TUNED))
        self._pending_sides = sides
        job = Job(_answer, self._model[1], plan, settings, self.chat_template, name="answer")
        job.event_emitted.connect(self._on_delta)
        self._start(job, self._on_answered)
        for side in sides:
            self.answer_started.emit(side)

    def stop(self) -> None:
        if self._job is not None and self._job.name == "answer":
            self._job.cancel()

    def clear(self) -> None:
        self.conversations = {BASE: [], TUNED: []}

    # -- internals -----------------------------------------------------------------------
    def _start(self, job: Job, on_finished) -> None:
        # The job counts as done before anyone hears its result: a listener that acts on
        # model_loaded at once (a test, a queued send) must find the controller free. The
        # Job's own ``done`` signal comes later, queued behind ``finished``.
        job.finished.connect(lambda result: self._end(job, on_finished, result))
        job.failed.connect(lambda message: self._end(job, lambda m: (
            self._on_answered({}) if job.name == "answer" else None, self.failed.emit(m)), message))
        job.cancelled.connect(lambda: self._end(job, on_finished if job.name == "answer" else None, {}))
        self._job = job
        self.busy_changed.emit(True)
        job.start(self._pool)

    def _end(self, job: Job, then, value) -> None:
        if self._job is job:
            self._job = None
            self.busy_changed.emit(False)
        if then is not None:
            then(value)

    def _on_loaded(self, result) -> None:
        chat_model, session, loaded = result
        self._model = (chat_model, session)
        self.loaded = loaded
        self.clear()
        self.model_loaded.emit(loaded)

    def _on_delta(self, event) -> None:
        from mlx_lora.chat import ChatPrompt

        if isinstance(event, ChatPrompt):
            self.prompt_rendered.emit(event)
        else:
            self.delta_received.emit(event.side, event)

    def _on_answered(self, answers: dict) -> None:
        for side in self._pending_sides:
            if side in answers:
                self.conversations[side].append({"role": "assistant", "content": answers[side][0]})
            elif self.conversations[side] and self.conversations[side][-1]["role"] == "user":
                self.conversations[side].pop()  # never answered (cancelled before its turn, or failed)
        self._pending_sides = []
        self.answer_finished.emit(answers)
