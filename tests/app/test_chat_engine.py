"""The Chat page over the real engine in its child process, on the tiny model: base and tuned
stream at once into both panes, Stop ends both mid-stream, the template picker changes
the prompt the model reads, and a load cancelled midway ends the child and loads again."""

from __future__ import annotations

from app.controllers.app_state import AppState
from app.controllers.chat import BASE, TUNED, ChatController
from app.pages.chat_page import ChatPage
from tests.core.test_chat_helpers import tiny_run  # noqa: F401


def test_real_engine_streams_both_sides_and_the_picker_changes_the_rendering(qtbot, tiny_run):
    controller = ChatController(AppState())  # the model in its child process, as in the app
    page = ChatPage(controller)
    qtbot.addWidget(page)
    try:
        _drive(qtbot, controller, page, tiny_run)
    finally:
        controller.worker.kill()


def _drive(qtbot, controller, page, tiny_run):
    from app.jobs.chat_process import ChatProcess

    assert isinstance(controller.worker, ChatProcess)
    page.resize(1100, 700)
    page.show()
    with qtbot.waitSignal(controller.model_loaded, timeout=120_000):
        controller.load(str(tiny_run))
    assert controller.worker.pid is not None  # loaded in the child
    page.max_tokens.setValue(4)
    page.temperature.setValue(0.0)
    arrivals = []
    controller.delta_received.connect(lambda side, delta: arrivals.append(side))
    page.input.setPlainText("Hi")
    with qtbot.waitSignal(controller.answer_finished, timeout=60_000):
        page.send_button.click()
    assert arrivals == [BASE, TUNED] * 4  # a token of each in turn
    assert page.transcripts[BASE].last_answer() and page.transcripts[TUNED].last_answer()
    assert all("4 tokens" in page.speed_labels[side].text() for side in (BASE, TUNED))
    assert "<|im_start|>user\nHi<|im_end|>" in page.prompt_view.toPlainText()  # the model's own (ChatML)

    index = page.template_box.findData("llama3")
    page.template_box.setCurrentIndex(index)
    page.template_box.activated.emit(index)
    page.input.setPlainText("Again")
    with qtbot.waitSignal(controller.answer_finished, timeout=60_000):
        page.send_button.click()
    shown = page.prompt_view.toPlainText()
    assert "<|start_header_id|>user<|end_header_id|>\n\nAgain<|eot_id|>" in shown and "<|im_end|>" not in shown

    # Stop mid-stream reaches the child while it generates: both sides end "stopped"
    page.max_tokens.setValue(5000)
    firsts = []
    controller.delta_received.connect(lambda side, delta: firsts.append(side) if len(firsts) < 4 else None)
    controller.delta_received.connect(lambda side, delta: controller.stop() if len(firsts) == 4 else None)
    page.input.setPlainText("Go on")
    with qtbot.waitSignal(controller.answer_finished, timeout=60_000) as finished:
        page.send_button.click()
    answers = finished.args[0]
    assert {answers[side][1].finish_reason for side in (BASE, TUNED)} == {"cancelled"}
    assert all(answers[side][1].token_count < 50 for side in (BASE, TUNED))


def test_a_load_cancelled_midway_ends_the_child_and_the_next_load_works(qtbot, tiny_run):
    controller = ChatController(AppState())
    page = ChatPage(controller)
    qtbot.addWidget(page)
    page.show()
    try:
        controller.load(str(tiny_run))
        assert page.cancel_load_button.isVisible() and not page.load_button.isEnabled()
        pid = controller.worker.pid
        assert pid is not None  # the child is starting (imports, then the model)
        with qtbot.waitSignal(controller.load_cancelled, timeout=5_000):
            page.cancel_load_button.click()
        assert controller.worker.pid is None and controller.loaded is None and not controller.is_busy()
        assert not page.cancel_load_button.isVisible() and page.load_button.isEnabled()
        assert page.status.text() == "Loading cancelled; no model is loaded."
        qtbot.waitUntil(lambda: not _alive(pid), timeout=5_000)  # no orphan
        with qtbot.waitSignal(controller.model_loaded, timeout=120_000):  # a fresh child loads it
            controller.load(str(tiny_run))
        assert controller.loaded.adapter == str(tiny_run)
    finally:
        controller.worker.kill()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by Qt) is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except OSError:
        return False
