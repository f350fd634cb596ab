"""Events across a process boundary: every registered event class survives
``to_json`` → ``json.loads`` → ``Event.from_dict`` as an equal object. The classes come from the
registry after importing every engine module, so a new event is covered without touching this file."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
import types
import typing

import pytest

import mlx_lora
from mlx_lora.events import Event, EventDecodeError, Progress, registered_events
from mlx_lora.run_events import RUN_STATUS, TERMINAL_EVENTS, RunStopped, StepReport


def all_event_classes() -> dict[str, type]:
    for module in pkgutil.walk_packages(mlx_lora.__path__, "mlx_lora."):
        importlib.import_module(module.name)
    return registered_events()


def sample(annotation, optional_as_none: bool = False):
    """A value of the annotated type that JSON changes in form (tuples, non-ASCII text, dicts)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if optional_as_none and type(None) in args:
            return None
        return sample(next(a for a in args if a is not type(None)))
    if origin is tuple:
        return tuple(sample(args[0]) for _ in range(2)) if args[-1] is Ellipsis else tuple(map(sample, args))
    if origin is dict or annotation is dict:
        return {"model.layers.0.self_attn.q_proj": 3} if args[1:] == (int,) else {"min_top1_agreement": 0.5}
    values = {int: 7, float: 0.25, str: "naïve text", bool: True}
    assert annotation in values, f"teach sample() to make a {annotation!r}"
    return values[annotation]


def build(cls: type, optional_as_none: bool = False):
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: sample(hints[f.name], optional_as_none) for f in dataclasses.fields(cls)})


EVENT_CLASSES = all_event_classes()


def test_the_registry_holds_every_engine_event():
    assert {"progress", "run_started", "step_report", "run_finished", "run_stopped", "run_failed",
            "download_progress", "export_verified"} <= set(EVENT_CLASSES)
    assert all(cls.kind == kind for kind, cls in EVENT_CLASSES.items())


@pytest.mark.parametrize("kind", sorted(EVENT_CLASSES))
@pytest.mark.parametrize("optional_as_none", [False, True])
def test_every_event_round_trips_through_json(kind, optional_as_none):
    event = build(EVENT_CLASSES[kind], optional_as_none)
    back = Event.from_dict(json.loads(event.to_json()))
    assert type(back) is type(event) and back == event
    # the tuple fields came back as tuples (JSON made them lists)
    for field in dataclasses.fields(event):
        assert type(getattr(back, field.name)) is type(getattr(event, field.name)), field.name


def test_keys_from_a_newer_engine_are_ignored_and_missing_defaults_filled():
    line = {"event": "progress", "job": "train", "message": "loading", "colour": "blue"}
    assert Event.from_dict(line) == Progress("train", "loading")
    old = {"event": "run_stopped", "step": 3, "run_dir": "r", "checkpoint": None, "reason": "stopped"}
    assert Event.from_dict(old) == RunStopped(3, "r", None, "stopped", forced=False)  # before `forced` existed


def test_what_is_not_an_event_is_refused_by_name():
    with pytest.raises(EventDecodeError, match="unknown event kind 'step_reprot'"):
        Event.from_dict({"event": "step_reprot", "step": 1})
    with pytest.raises(EventDecodeError, match="unknown event kind None"):
        Event.from_dict({"step": 1})
    with pytest.raises(EventDecodeError, match="step_report.*missing"):
        Event.from_dict({"event": "step_report", "step": 1})
    assert isinstance(EventDecodeError("x"), ValueError)


def test_two_classes_cannot_share_a_kind():
    with pytest.raises(TypeError, match="already taken by mlx_lora.run_events.StepReport"):
        @dataclasses.dataclass(frozen=True)
        class StepReport(Event):  # noqa: F811 (the clash is the point)
            step: int
    assert registered_events()["step_report"] is globals()["StepReport"]


def test_the_terminal_events_and_their_statuses_are_one_list():
    assert TERMINAL_EVENTS == tuple(RUN_STATUS)
    assert {cls.kind: status for cls, status in RUN_STATUS.items()} == {
        "run_finished": "finished", "run_stopped": "stopped", "run_failed": "failed"}
