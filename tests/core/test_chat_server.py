"""The chat child's protocol (mlx_lora.chat.server.serve): JSON commands in, the engine's
events out as JSON lines that Event.from_dict reads back; a stop that arrives before its
answer starts still stops it; a failure is an event and the server keeps serving."""

from __future__ import annotations

import io
import json

import mlx_lora  # noqa: F401
from mlx_lora.chat.server import ChatAnswered, ChatFailed, ChatLoaded, serve
from mlx_lora.chat.session import ChatDelta, ChatPrompt, ChatSettings
from mlx_lora.events import Event
from tests.core.test_chat_helpers import tiny_run, user  # noqa: F401


def run(commands: list[dict]) -> list[Event]:
    out = io.StringIO()
    assert serve(io.StringIO("".join(json.dumps(c) + "\n" for c in commands)), out) == 0
    return [Event.from_dict(json.loads(line)) for line in out.getvalue().splitlines()]


def test_load_answer_stop_and_failures_over_json_lines(tiny_run):
    settings = vars(ChatSettings(temperature=0.0, max_tokens=3)) | {"seed": 1}
    plan = [["base", user("Hi"), False], ["tuned", user("Hi"), True]]
    events = run([
        {"command": "answer", "id": 9, "plan": plan, "settings": settings},  # nothing loaded yet
        {"command": "load", "model": None, "adapter": str(tiny_run)},
        {"command": "stop", "id": 2},  # read before answer 2 starts: it must still count
        {"command": "answer", "id": 1, "plan": plan, "settings": settings, "chat_template": "chatml"},
        {"command": "answer", "id": 2, "plan": plan, "settings": settings},
        {"command": "quit"},
    ])
    kinds = [type(e) for e in events]
    assert kinds[0] is ChatFailed and "no chat model is loaded" in events[0].message and events[0].id == 9
    loaded = next(e for e in events if isinstance(e, ChatLoaded))
    assert loaded.adapter == str(tiny_run) and loaded.label
    first = events[kinds.index(ChatLoaded) + 1:]
    assert isinstance(first[0], ChatPrompt) and "<|im_start|>user\nHi<|im_end|>" in first[0].text
    deltas = [e for e in first[1:7]]
    assert [d.side for d in deltas] == ["base", "tuned"] * 3 and all(isinstance(d, ChatDelta) for d in deltas)
    answered = [e for e in events if isinstance(e, ChatAnswered)]
    assert [a.id for a in answered] == [1, 2]
    assert answered[0].answers["tuned"] == "".join(d.text for d in deltas if d.side == "tuned")
    stopped = [e for e in events[events.index(answered[0]) + 1:] if isinstance(e, ChatDelta)]
    assert {(d.side, d.finish_reason, d.token_count) for d in stopped} == {("base", "cancelled", 0),
                                                                           ("tuned", "cancelled", 0)}
