"""Typed events and the reporter they go to.

Long jobs (download, validation, training, export) take a ``reporter`` with one
``emit(event)`` method. The CLI plugs in a progress printer, the app a Qt signal
bridge, tests a :class:`RecordingReporter`. Events are small frozen dataclasses;
``to_dict`` gives the JSON form used by ``--json-events`` and ``metrics.jsonl``.
Domain modules define their own events by subclassing :class:`Event`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, Protocol


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclasses.dataclass(frozen=True)
class Event:
    """Base class of every event; ``kind`` is the class name in snake_case."""

    @property
    def kind(self) -> str:
        return _snake(type(self).__name__)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, ensure_ascii=False)


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...


class NullReporter:
    """Drops every event, so jobs never ask "is anyone listening?"."""

    def emit(self, event: Event) -> None:
        pass


class RecordingReporter:
    """Keeps every event, for tests."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def of(self, cls: type) -> list:
        return [e for e in self.events if isinstance(e, cls)]


class CallbackReporter:
    def __init__(self, callback: Callable[[Event], None]) -> None:
        self._callback = callback

    def emit(self, event: Event) -> None:
        self._callback(event)


class FanOutReporter:
    def __init__(self, *reporters: Reporter) -> None:
        self._reporters = reporters

    def emit(self, event: Event) -> None:
        for reporter in self._reporters:
            reporter.emit(event)


def never_stop() -> bool:
    return False


@dataclasses.dataclass(frozen=True)
class Progress(Event):
    """Generic progress of a job step (import, download, export…). ``total`` 0 = unknown."""

    job: str
    message: str
    done: float = 0
    total: float = 0
