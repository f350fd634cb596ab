"""app.jobs.workers.Job: engine functions run off the GUI thread; events, results,
user errors, unexpected errors and cancellation come back as signals."""

from __future__ import annotations

import threading

from app.jobs.workers import Job, describe_exception
from mlx_lora.errors import Cancelled, UserError
from mlx_lora.events import Progress


def test_job_reemits_events_and_returns_on_a_pool_thread(qtbot):
    threads = []

    def work(reporter, should_stop, n):
        threads.append(threading.current_thread())
        for k in range(n):
            reporter.emit(Progress("test", "working", k + 1, n))
        return n * 2

    job = Job(work, 3)
    events = []
    job.event_emitted.connect(events.append)
    with qtbot.waitSignal(job.finished, timeout=5000) as finished:
        job.start()
    assert finished.args == [6]
    qtbot.waitUntil(lambda: len(events) == 3, timeout=5000)
    assert [e.done for e in events] == [1, 2, 3]
    assert threads[0] is not threading.main_thread()


def test_user_error_message_is_passed_as_is(qtbot):
    def work(reporter, should_stop):
        raise UserError("data.jsonl:3: not valid JSON")

    job = Job(work)
    with qtbot.waitSignal(job.failed, timeout=5000) as failed:
        job.start()
    assert failed.args == ["data.jsonl:3: not valid JSON"]


def test_unexpected_error_is_summarised_in_plain_words(qtbot):
    def work(reporter, should_stop):
        raise KeyError("weights")

    job = Job(work)
    with qtbot.waitSignal(job.failed, timeout=5000) as failed:
        job.start()
    assert "Something went wrong" in failed.args[0] and "KeyError" in failed.args[0]
    assert "Traceback" not in failed.args[0]


def test_cancel_sets_should_stop_and_ends_with_cancelled(qtbot):
    started = threading.Event()
    release = threading.Event()

    def work(reporter, should_stop):
        started.set()
        release.wait(5)
        if should_stop():
            raise Cancelled()
        return "finished anyway"

    job = Job(work)
    job.start()
    qtbot.waitUntil(started.is_set, timeout=5000)
    with qtbot.waitSignal(job.cancelled, timeout=5000):
        job.cancel()
        release.set()
    assert job.is_done()


def test_describe_exception_memory():
    assert "out of memory" in describe_exception(MemoryError())
