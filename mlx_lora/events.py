"""Typed events, the reporter they go to, and their JSON form.

Long jobs (download, validation, training, export) take a ``reporter`` with one
``emit(event)`` method. The CLI plugs in a progress printer, the app a Qt signal
bridge, tests a :class:`RecordingReporter`. Events are small frozen dataclasses;
``to_dict`` / ``to_json`` give the JSON form used by ``--json-events`` and
``metrics.jsonl``, and :meth:`Event.from_dict` turns it back into the same
dataclass, so a reader on the other side of a process boundary (the app's
training supervisor, the multi-machine launcher) gets the classes the engine
raised. Domain modules define their own events by subclassing :class:`Event`;
each subclass registers itself under its ``kind`` when its module is imported.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from typing import Any, ClassVar, Mapping, Protocol


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class EventDecodeError(ValueError):
    """A JSON object that is not an event this engine knows (or not a whole one)."""


# kind -> class, filled by Event.__init_subclass__; a class is known once its module is imported
_REGISTRY: dict[str, type["Event"]] = {}


@dataclasses.dataclass(frozen=True)
class Event:
    """Base class of every event; ``kind`` is the class name in snake_case."""

    kind: ClassVar[str] = "event"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = _snake(cls.__name__)
        known = _REGISTRY.get(cls.kind)
        # the same class defined again (a module reloaded) replaces itself; two classes may not share a kind
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"event kind {cls.kind!r} of {cls.__module__}.{cls.__qualname__} is already "
                            f"taken by {known.__module__}.{known.__qualname__}")
        _REGISTRY[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=str, ensure_ascii=False)

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "Event":
        """The event that ``to_dict`` / ``to_json`` wrote: JSON lists become tuples again where the
        field is a tuple, dicts stay dicts. Keys the class does not have (a newer engine's fields)
        are ignored; a missing field falls back to its default. An unknown ``event`` kind, or a
        missing field without a default, raises :class:`EventDecodeError` — there is no generic
        stand-in event, so a reader only ever holds the engine's own classes (and shows what it
        cannot read as text). The registry knows the classes whose modules are imported: a reader
        imports the modules of the events it expects (e.g. :mod:`mlx_lora.run_events`)."""
        kind = data.get("event")
        cls = _REGISTRY.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise EventDecodeError(f"unknown event kind {kind!r} (known: {', '.join(sorted(_REGISTRY))})")
        hints = _field_types(cls)
        values = {f.name: _from_json(hints[f.name], data[f.name])
                  for f in dataclasses.fields(cls) if f.name in data}
        try:
            return cls(**values)
        except TypeError as exc:  # a required field is missing
            raise EventDecodeError(f"{kind}: {exc}") from exc


def registered_events() -> dict[str, type[Event]]:
    """Every event class known so far, by kind (for tests and tools that list them)."""
    return dict(_REGISTRY)


_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (``from __future__ import annotations`` keeps strings)."""
    if cls not in _TYPES:
        _TYPES[cls] = typing.get_type_hints(cls)
    return _TYPES[cls]


def _from_json(annotation: Any, value: Any) -> Any:
    """``value`` as read from JSON, made the annotated type where JSON lost it: list -> tuple."""
    if not isinstance(value, list):
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # tuple[str, ...] | None
        tuple_types = [a for a in typing.get_args(annotation) if typing.get_origin(a) is tuple or a is tuple]
        return _from_json(tuple_types[0], value) if tuple_types else value
    if annotation is tuple:
        return tuple(value)
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            return tuple(_from_json(args[0], item) for item in value)
        return tuple(_from_json(arg, item) for arg, item in zip(args, value))
    return value


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
