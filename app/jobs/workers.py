"""Run engine jobs off the GUI thread and hear about them as Qt signals.

An engine job is a plain function ``job(reporter, should_stop, *args)`` (the
house convention for long work: it reports typed events to ``reporter.emit`` and
asks ``should_stop()`` between steps). :class:`Job` runs one such call on the
global ``QThreadPool`` and re-emits what happens:

- ``event_emitted(object)``: every engine event, as it is emitted;
- ``finished(object)``: the function's return value;
- ``failed(str)``: a message for the user (a ``UserError``'s text, or a
  plain-words summary of an unexpected exception; the traceback goes to the log);
- ``cancelled()``: the job raised ``Cancelled`` after :meth:`Job.cancel`.

Signals are emitted from the pool thread; Qt queues them to the receivers' (GUI)
thread, so slots run on the GUI thread and may touch widgets.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

log = logging.getLogger(__name__)

# Jobs still running, so that a Job nobody holds a reference to is not
# garbage-collected while its runnable still emits through it.
_running: set["Job"] = set()


class _SignalReporter:
    """The engine's reporter interface, forwarding to a Job's Qt signal."""

    def __init__(self, job: "Job") -> None:
        self._job = job

    def emit(self, event: Any) -> None:
        try:
            self._job.event_emitted.emit(event)
        except RuntimeError:  # the app quit while the job ran
            pass


def describe_exception(exc: BaseException) -> str:
    """What went wrong, in words a user can act on (no traceback)."""
    from mlx_lora.errors import UserError

    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "The computer ran out of memory. Try a smaller model, batch size or sequence length."
    if isinstance(exc, FileNotFoundError):
        return f"A file is missing: {exc.filename or exc}"
    if isinstance(exc, PermissionError):
        return f"Permission denied: {exc.filename or exc}"
    if isinstance(exc, OSError) and "No space left" in str(exc):
        return "The disk is full. Free some space and try again."
    text = str(exc) or type(exc).__name__
    return f"Something went wrong ({type(exc).__name__}: {text}). Details are in the log."


class _Runnable(QRunnable):
    def __init__(self, job: "Job") -> None:
        super().__init__()
        self._job = job

    def run(self) -> None:  # runs on a pool thread
        self._job._run()


class Job(QObject):
    """One call of an engine function on a pool thread.

    Connect to its signals *before* :meth:`start`: a signal emitted by the pool
    thread before anyone is connected is lost.
    """

    event_emitted = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()
    done = Signal()  # after any of finished/failed/cancelled

    def __init__(self, function: Callable[..., Any], *args: Any, name: str = "", **kwargs: Any) -> None:
        super().__init__()
        self.name = name or getattr(function, "__name__", "job")
        self._function = function
        self._args = args
        self._kwargs = kwargs
        self._stop = threading.Event()
        self._finished_flag = threading.Event()

    # -- control (GUI thread) -------------------------------------------------
    def start(self, pool: QThreadPool | None = None) -> "Job":
        _running.add(self)
        (pool or QThreadPool.globalInstance()).start(_Runnable(self))
        return self

    def cancel(self) -> None:
        """Ask the job to stop; it ends with ``cancelled`` (or ``finished`` if it was done)."""
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def is_done(self) -> bool:
        return self._finished_flag.is_set()

    # -- pool thread -------------------------------------------------------------
    def _run(self) -> None:
        from mlx_lora.errors import Cancelled

        try:
            result = self._function(_SignalReporter(self), self.should_stop, *self._args, **self._kwargs)
        except Cancelled:
            outcome = (self.cancelled, ())
        except BaseException as exc:  # noqa: BLE001 — report every failure, never kill the pool thread
            if self._stop.is_set() and not _is_user_error(exc):
                outcome = (self.cancelled, ())
            else:
                if not _is_user_error(exc):
                    log.error("job %s failed:\n%s", self.name, traceback.format_exc())
                outcome = (self.failed, (describe_exception(exc),))
        else:
            outcome = (self.cancelled, ()) if self._stop.is_set() and result is None else (self.finished, (result,))
        finally:
            self._finished_flag.set()
            _running.discard(self)
        try:
            signal, args = outcome
            signal.emit(*args)
            self.done.emit()
        except RuntimeError:
            # The Job's C++ side is gone: the app quit while this job ran. Nobody is listening.
            log.debug("job %s ended after its receiver was deleted", self.name)


def _is_user_error(exc: BaseException) -> bool:
    from mlx_lora.errors import UserError

    return isinstance(exc, UserError)


def cancel_all_and_wait(timeout_ms: int = 3000) -> bool:
    """Cancel every running job and wait for the pool to drain (used at quit)."""
    for job in list(_running):
        job.cancel()
    return QThreadPool.globalInstance().waitForDone(timeout_ms)
