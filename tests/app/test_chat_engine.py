"""The Chat page over the real engine on the tiny model (fast): base and tuned stream at once
into both panes, and the template picker changes the prompt the model reads."""

from __future__ import annotations

from app.controllers.app_state import AppState
from app.controllers.chat import BASE, TUNED, ChatController
from app.pages.chat_page import ChatPage
from tests.core.test_chat_helpers import tiny_run  # noqa: F401


def test_real_engine_streams_both_sides_and_the_picker_changes_the_rendering(qtbot, tiny_run):
    controller = ChatController(AppState())
    page = ChatPage(controller)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    with qtbot.waitSignal(controller.model_loaded, timeout=60_000):
        controller.load(str(tiny_run))
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
