"""The Chat page with a stand-in model session in a thread (the real one, in its child process, is in
test_chat_engine and test_whole_flow):
runs and adapters listed, tokens appended as they stream, base beside tuned with the
adapter off/on, Stop within one token, Clear, Copy, the sampling settings passed on."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtGui import QGuiApplication

from app.controllers.app_state import AppState
from app.controllers.chat import BASE, TUNED, ChatController
from app.jobs.chat_process import ChatThread
from mlx_lora.chat.server import ChatLoaded, ChatServer
from app.pages.chat_page import ChatPage
from mlx_lora.chat.session import ChatDelta
from tests.core.test_runs import EVENTS, make_run


class FakeSession:
    """Streams "w0 w1 …" one word per token, base and tuned in turn as the engine's
    stream_sides does; ``gate`` lets a test hold the stream, and ``hold_after`` holds it
    (clears the gate) once every side has that many tokens out."""

    def __init__(self) -> None:
        self.calls = []
        self.gate = threading.Event()
        self.gate.set()
        self.hold_after: int | None = None
        self.chat_template = "model"

    def set_chat_template(self, name):
        self.chat_template = name

    def prompt_text(self, messages, settings):
        return f"[{self.chat_template}] " + " | ".join(m["content"] for m in messages)

    def stream_sides(self, requests, settings, should_stop):
        for request in requests:
            self.calls.append((list(request.messages), settings, request.use_adapter))
        for k in range(settings.max_tokens):
            if k == self.hold_after:
                self.gate.clear()
            self.gate.wait(10)
            for request in requests:
                if should_stop():
                    for other in requests:
                        yield ChatDelta("", k, 10.0, True, "cancelled", side=other.side)
                    return
                prefix = "tuned" if request.use_adapter else "base"
                yield ChatDelta(f"{prefix}{k} ", k + 1, 10.0 + k, side=request.side)
        for request in requests:
            yield ChatDelta("", settings.max_tokens, 10.0, True, "length", side=request.side)


@pytest.fixture
def page(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path / "home"))
    from mlx_lora import paths

    make_run(paths.runs_dir(), "run-a", EVENTS + [{"event": "run_finished", "step": 2}])
    session = FakeSession()
    loads = []

    def fake_load(reporter, current, base, adapter, chat_template="model"):
        loads.append(adapter)
        return object(), session, ChatLoaded("demo", adapter, "run-a", ("a note",))

    controller = ChatController(AppState(), worker=ChatThread(ChatServer(loader=fake_load)))
    page = ChatPage(controller)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    with qtbot.waitSignal(controller.runs_listed, timeout=5000):
        page.show()
    page.session, page.loads = session, loads
    return page


def load(qtbot, page):
    with qtbot.waitSignal(page.controller.model_loaded, timeout=5000):
        page.load_button.click()


def send(qtbot, page, text):
    page.input.setPlainText(text)
    with qtbot.waitSignal(page.controller.answer_finished, timeout=10_000):
        page.send_button.click()


def test_runs_and_adapters_are_listed_and_loaded(qtbot, page):
    assert page.run_box.count() == 1 and "run-a" in page.run_box.currentText()
    assert [page.adapter_box.itemText(k) for k in range(page.adapter_box.count())] == ["final", "step-2"]
    page.adapter_box.setCurrentText("step-2")
    assert not page.send_button.isEnabled()
    load(qtbot, page)
    assert page.loads[0].endswith("checkpoints/step-2")
    assert "run-a" in page.status.text() and page.send_button.isEnabled()


def test_base_and_tuned_answer_the_same_prompt_side_by_side(qtbot, page):
    load(qtbot, page)
    page.max_tokens.setValue(3)
    page.temperature.setValue(0.0)
    page.system_prompt.setPlainText("Talk like a pirate.")
    send(qtbot, page, "Hello?")
    assert page.transcripts[BASE].isVisible() and page.transcripts[TUNED].isVisible()
    assert page.transcripts[BASE].last_answer() == "base0 base1 base2 "
    assert page.transcripts[TUNED].last_answer() == "tuned0 tuned1 tuned2 "
    assert "tuned2" in page.transcripts[TUNED].toPlainText()
    (base_msgs, settings, base_adapter), (tuned_msgs, _, tuned_adapter) = page.session.calls
    assert (base_adapter, tuned_adapter) == (False, True) and base_msgs == tuned_msgs
    assert settings.system_prompt == "Talk like a pirate." and settings.temperature == 0.0
    assert settings.seed is not None  # both sides sample with the same seed
    send(qtbot, page, "And again?")  # each side keeps its conversation
    assert [m["role"] for m in page.session.calls[-1][0]] == ["user", "assistant", "user"]
    page.copy_button.click()
    assert "Fine-tuned:" in QGuiApplication.clipboard().text()


def test_tokens_stream_in_and_stop_cancels_within_one_token(qtbot, page):
    load(qtbot, page)
    page.compare_box.setChecked(False)
    assert not page.transcripts[BASE].isVisible()
    page.max_tokens.setValue(5_000)
    page.session.hold_after = 3  # the stream waits after 3 tokens until the test lets it go on
    page.input.setPlainText("Tell me a long story")
    page.send_button.click()
    qtbot.waitUntil(lambda: page.transcripts[TUNED].last_answer().count(" ") >= 3, timeout=5000)
    assert page.stop_button.isEnabled() and not page.send_button.isEnabled()
    with qtbot.waitSignal(page.controller.answer_finished, timeout=5000):
        page.stop_button.click()
        page.session.gate.set()  # the next token's check sees the stop
    words = page.transcripts[TUNED].last_answer().split()
    assert words == ["tuned0", "tuned1", "tuned2"] and "stopped" in page.transcripts[TUNED].toPlainText()
    assert page.send_button.isEnabled()
    page.clear_button.click()
    assert page.transcripts[TUNED].toPlainText() == "" and page.controller.conversations[TUNED] == []


def test_both_panes_fill_at_once_with_live_tokens_per_second(qtbot, page):
    load(qtbot, page)
    page.max_tokens.setValue(50)
    page.session.hold_after = 2  # both sides have two tokens out, then the stream waits
    page.input.setPlainText("Tell me a story")
    page.send_button.click()
    qtbot.waitUntil(lambda: page.transcripts[BASE].last_answer() == "base0 base1 "
                    and page.transcripts[TUNED].last_answer() == "tuned0 tuned1 ", timeout=5000)
    # mid-stream: each pane shows its own count and speed
    assert page.speed_labels[BASE].text() == "2 tokens · 11.0 tokens/s"
    assert page.speed_labels[TUNED].text() == "2 tokens · 11.0 tokens/s"
    assert page.panes[BASE].isVisible() and page.panes[TUNED].isVisible()
    with qtbot.waitSignal(page.controller.answer_finished, timeout=5000):
        page.stop_button.click()
        page.session.gate.set()
    for side in (BASE, TUNED):
        assert "stopped" in page.transcripts[side].toPlainText()
        assert "tokens/s" in page.speed_labels[side].text()


def test_the_template_picker_edits_the_one_config_and_the_prompt_follows(qtbot, page):
    load(qtbot, page)
    state = page.controller.state
    index = page.template_box.findData("llama3")
    page.template_box.setCurrentIndex(index)
    page.template_box.activated.emit(index)
    assert state.config.data.chat_template == "llama3"
    page.max_tokens.setValue(1)
    send(qtbot, page, "Hi")
    assert page.session.chat_template == "llama3"
    assert page.prompt_view.toPlainText() == "[llama3] Hi"
    state.update_config(chat_template="gemma")  # another page (the Train form) changes it: the picker shows it
    assert page.template_box.currentData() == "gemma"
