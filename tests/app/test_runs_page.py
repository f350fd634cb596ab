"""The Runs page over run folders: the history table, overlaid curves of the selected
runs, reopen/resume/chat/export requests, delete after confirmation."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QMessageBox

from app.controllers.runs import RunsController
from app.pages.runs_page import COLUMNS, RunsPage
from tests.core.test_runs import EVENTS, make_run


@pytest.fixture
def page(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path / "home"))
    from mlx_lora import paths

    make_run(paths.runs_dir(), "finished-run", EVENTS + [{"event": "run_finished", "step": 2, "elapsed_s": 95}])
    make_run(paths.runs_dir(), "killed-run", EVENTS, torn=True)
    controller = RunsController()
    page = RunsPage(controller)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    with qtbot.waitSignal(controller.runs_listed, timeout=5000):
        page.show()
    return page


def cell(page, row, column):
    return page.table.item(row, COLUMNS.index(column)).text()


def test_history_table_and_overlaid_curves(qtbot, page):
    assert page.table.rowCount() == 2
    rows = {cell(page, r, "Run"): r for r in range(2)}
    r = rows["finished-run"]
    assert (cell(page, r, "Model"), cell(page, r, "Dataset"), cell(page, r, "Method")) == ("demo", "pirate", "lora")
    assert cell(page, r, "Status") == "finished" and cell(page, r, "Best val loss") == "3.500"
    assert cell(page, r, "Duration") == "1 min 35 s" and cell(page, r, "Tokens") == "80"
    assert cell(page, rows["killed-run"], "Status") == "incomplete"
    with qtbot.waitSignal(page.controller.curves_loaded, timeout=5000):
        page.select_rows([0, 1])
    curves = page.curves.widget
    assert len(curves.items) == 6  # raw train, smoothed train and validation of each run
    names = [item.name() for item in curves.items]
    assert "finished-run · train (raw)" in names and "finished-run · train (smoothed)" in names
    raw = next(i for i in curves.items if i.name() == "finished-run · train (raw)")
    assert list(raw.getData()[1]) == [4.0, 3.0]  # the real losses, not only the smoothed ones
    assert len(page.selected_runs()) == 2 and not page.open_button.isEnabled()


def test_reopen_resume_chat_export_requests(qtbot, page):
    row = next(r for r in range(2) if cell(page, r, "Run") == "killed-run")
    page.select_rows([row])
    with qtbot.waitSignal(page.open_config_requested, timeout=1000) as opened:
        page.open_button.click()
    assert opened.args[0].endswith("killed-run/config.yaml")
    assert page.resume_button.isEnabled()  # incomplete, with a step-N checkpoint
    with qtbot.waitSignal(page.resume_requested, timeout=1000) as resumed:
        page.resume_button.click()
    assert resumed.args[0].endswith("killed-run")
    with qtbot.waitSignal(page.export_requested, timeout=1000):
        page.export_button.click()
    finished = next(r for r in range(2) if cell(page, r, "Run") == "finished-run")
    page.select_rows([finished])
    assert not page.resume_button.isEnabled()


def test_delete_asks_first(qtbot, page, monkeypatch):
    page.select_rows([0])
    name = page.selected_runs()[0].name
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    page.delete_button.click()
    assert page.table.rowCount() == 2
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    with qtbot.waitSignal(page.controller.run_deleted, timeout=5000):
        page.delete_button.click()
    qtbot.waitUntil(lambda: page.table.rowCount() == 1, timeout=5000)
    assert cell(page, 0, "Run") != name


def test_best_val_loss_shows_the_untrained_one_when_that_is_all_there_is(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path / "home"))
    from mlx_lora import paths

    make_run(paths.runs_dir(), "early-stop", EVENTS[:3], torn=True)  # step 0's evaluation only
    page = RunsPage(RunsController())
    qtbot.addWidget(page)
    with qtbot.waitSignal(page.controller.runs_listed, timeout=5000):
        page.show()
    assert cell(page, 0, "Best val loss") == "4.500 (untrained)"
