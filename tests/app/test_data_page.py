"""The Data page on a small chat dataset with the demo model's tokenizer:
problems with line numbers (click → the line), token statistics and histogram,
the coloured trained/masked preview, split sizes, drag and drop."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from app.controllers.app_state import AppState
from app.controllers.data import DataController
from app.pages.data_page import DataPage


def chat(user: str, reply: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})


@pytest.fixture
def dataset(tmp_path):
    lines = [chat(f"What is {k} + {k}?", f"It is {2 * k}.") for k in range(20)]
    lines.insert(2, '{"messages": [{"role": "user", "content": "broken"')  # line 3: not JSON
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def page(qtbot, demo_model):
    controller = DataController(AppState())
    page = DataPage(controller)
    qtbot.addWidget(page)
    page.resize(1100, 750)
    page.show()
    return page


def test_problems_stats_and_preview(qtbot, page, dataset):
    controller = page.controller
    with qtbot.waitSignal(controller.stats_computed, timeout=120_000):
        with qtbot.waitSignal(controller.dataset_checked, timeout=30_000):
            page.open(str(dataset))
    assert page.problem_list.count() == 1
    item = page.problem_list.item(0)
    assert item.text().startswith("train.jsonl 3: ")
    page.problem_list.setCurrentItem(item)
    assert page.line_view.toPlainText() == '{"messages": [{"role": "user", "content": "broken"'

    assert page.tiles["examples"].value.text() == "20"
    bars = page.histogram.widget.bars
    assert bars is not None and sum(bars.opts["height"]) == 20
    assert page.histogram.widget.cutoff.value() == 2048

    qtbot.waitUntil(lambda: bool(page._spans), timeout=60_000)
    trained = "".join(s.text for s in page._spans if s.trained)
    assert "It is 0." in trained and "What is 0" not in trained
    assert "background-color:#d7f5e0" in page.preview_view.toHtml().replace(" ", "")

    page.valid_ratio.setValue(20)
    assert page.split_label.text() == "train 16 · validation 4 · test 0"


def test_mask_prompt_off_trains_the_prompt_too(qtbot, page, dataset):
    with qtbot.waitSignal(page.controller.stats_computed, timeout=120_000):
        page.open(str(dataset))
    qtbot.waitUntil(lambda: bool(page._spans), timeout=60_000)
    page._spans = []
    page.mask_prompt.setChecked(False)
    qtbot.waitUntil(lambda: bool(page._spans), timeout=60_000)
    trained = "".join(s.text for s in page._spans if s.trained)
    assert "What is 0" in trained


def test_dropping_a_file_opens_it(qtbot, page, dataset):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(dataset))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(page.controller.dataset_checked, timeout=30_000):
        page.dropEvent(event)
    assert page.controller.state.dataset == str(dataset)
