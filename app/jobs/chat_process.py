"""Where the chat model lives: a child process (the default), or a thread of the app.

:class:`ChatProcess` runs ``python -m mlx_lora.chat.server`` and talks JSON lines with it:
commands on its stdin, events (``Event.from_dict``: the engine's own ChatLoaded, ChatDelta,
ChatPrompt, ChatAnswered, ChatFailed, Progress) on its stdout, read by ``QProcess`` on the
GUI thread's event loop as the training supervisor does. Why a process: loading a model in
the app stalled the window ~140 ms — ``tokenizers`` parses tokenizer.json holding the GIL,
which no thread of ours can avoid — and a crash or an out-of-memory abort while chatting
then costs the chat, not the app (bench/RESULTS.md has the before/after). The child is
started on the first command and kept: loading another adapter on the same base is then
only the adapter's load.

:class:`ChatThread` runs the same :class:`~mlx_lora.chat.server.ChatServer` on one kept
thread of this process (``MLX_LORA_CHAT_IN_PROCESS=1``, and the tests that stand a fake
session in for the model). Both have the same methods and signals, so the controller does
not know which it has.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

from PySide6.QtCore import QCoreApplication, QObject, QProcess, QProcessEnvironment, QThreadPool, Signal

from app.jobs.workers import Job

log = logging.getLogger(__name__)


def _import_events() -> None:
    """The modules whose events the child sends (``Event.from_dict`` knows imported classes)."""
    import mlx_lora.chat.server  # noqa: F401
    import mlx_lora.chat.session  # noqa: F401


class ChatProcess(QObject):
    event_received = Signal(object)  # an mlx_lora.events.Event
    crashed = Signal(str)  # the child ended while it had work: plain words
    log_line = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        _import_events()
        self._process: QProcess | None = None
        self._busy = False
        self._stderr = ""
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.kill)

    def command(self, command: dict) -> None:
        """Send a command (load / answer); starts the child first when it is not running."""
        if self._process is None:
            self._launch()
        self._busy = command.get("command") in ("load", "answer")
        self._process.write((json.dumps(command, ensure_ascii=False) + "\n").encode("utf-8"))

    def stop(self, answer_id: int) -> None:
        if self._process is not None:
            self._process.write((json.dumps({"command": "stop", "id": answer_id}) + "\n").encode("utf-8"))

    def kill(self) -> None:
        """End the child now (at quit: no orphan survives the app)."""
        process, self._process = self._process, None
        if process is not None and process.state() != QProcess.ProcessState.NotRunning:
            process.kill()
            process.waitForFinished(3000)

    @property
    def pid(self) -> int | None:
        return (self._process.processId() or None) if self._process is not None else None

    # -- internals -------------------------------------------------------------------
    def _launch(self) -> None:
        process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        process.setProcessEnvironment(env)
        process.readyReadStandardOutput.connect(self._on_stdout)
        process.readyReadStandardError.connect(self._on_stderr)
        process.finished.connect(self._on_finished)
        self._process, self._stderr = process, ""
        process.start(sys.executable, ["-m", "mlx_lora.chat.server"])

    def _on_stdout(self) -> None:
        from mlx_lora.chat.server import ChatAnswered, ChatFailed, ChatLoaded
        from mlx_lora.events import Event, EventDecodeError

        process = self._process
        while process is not None and process.canReadLine():
            line = bytes(process.readLine()).decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = Event.from_dict(json.loads(line))
            except (json.JSONDecodeError, EventDecodeError, AttributeError, TypeError):
                self.log_line.emit(line)  # a library printed to stdout
                continue
            if isinstance(event, (ChatLoaded, ChatAnswered, ChatFailed)):
                self._busy = False
            self.event_received.emit(event)

    def _on_stderr(self) -> None:
        if self._process is None:
            return
        text = bytes(self._process.readAllStandardError()).decode("utf-8", "replace")
        self._stderr = (self._stderr + text)[-16_000:]
        for line in text.splitlines():
            if line.strip():
                self.log_line.emit(line)

    def _on_finished(self, exit_code: int, _status) -> None:
        process = self.sender()
        if process is not self._process:  # killed at quit
            return
        self._on_stdout()
        self._process = None
        process.deleteLater()
        if self._busy:
            self._busy = False
            lines = [line for line in self._stderr.splitlines() if line.strip()]
            self.crashed.emit(f"The chat process ended (exit code {exit_code}): "
                              f"{lines[-1] if lines else 'no error message'}. Load the model again.")


class ChatThread(QObject):
    """The same server on one kept thread of this process (see the module docstring)."""

    event_received = Signal(object)
    crashed = Signal(str)
    log_line = Signal(str)

    def __init__(self, server=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        from mlx_lora.chat.server import ChatServer

        self.server = server or ChatServer()
        self._stopped: set[int] = set()
        self._lock = threading.Lock()
        # One thread, kept alive, for every MLX call: mlx-lm makes its generation stream on import, in
        # whichever thread imports it, and MLX keeps per-thread stream state.
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._pool.setExpiryTimeout(-1)
        self._jobs: list[Job] = []

    def command(self, command: dict) -> None:
        job = Job(self._run, command, name=str(command.get("command")))
        job.event_emitted.connect(self.event_received)
        job.done.connect(lambda: self._jobs.remove(job) if job in self._jobs else None)
        self._jobs.append(job)
        job.start(self._pool)

    def stop(self, answer_id: int) -> None:
        with self._lock:
            self._stopped.add(answer_id)

    def kill(self) -> None:
        pass

    pid = None

    def _run(self, reporter, _should_stop, command: dict) -> None:
        from mlx_lora.chat.server import ChatFailed
        from app.jobs.workers import describe_exception

        kind, answer_id = command.get("command"), int(command.get("id", 0))
        try:
            if kind == "load":
                reporter.emit(self.server.load(reporter, command.get("model"), command.get("adapter"),
                                               command.get("chat_template", "model")))
            else:
                reporter.emit(self.server.answer(reporter, lambda: answer_id in self._stopped, answer_id,
                                                 command["plan"], command["settings"],
                                                 command.get("chat_template", "model")))
        except Exception as exc:  # noqa: BLE001 — reported as the child reports it
            if not _is_user_error(exc):
                log.exception("chat %s failed", kind)
            reporter.emit(ChatFailed(str(kind), describe_exception(exc), answer_id))


def _is_user_error(exc: BaseException) -> bool:
    from mlx_lora.errors import UserError

    return isinstance(exc, UserError)


def make_chat_worker(parent: QObject | None = None):
    """The child process, unless ``MLX_LORA_CHAT_IN_PROCESS=1`` asks for a thread of the app."""
    if os.environ.get("MLX_LORA_CHAT_IN_PROCESS") == "1":
        return ChatThread(parent=parent)
    return ChatProcess(parent)
