"""The Train page driven by the supervisor running the fake trainer: start, live
tiles and charts, crash banner with resume, copy command."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtGui import QGuiApplication

from app.controllers.app_state import AppState
from app.controllers.training import TrainingController, smoothed
from app.pages.train_page import TrainPage
from app.training_supervisor import TrainingSupervisor

FAKE = Path(__file__).with_name("fake_trainer.py")


def make_page(qtbot, tmp_path, *extra):
    def command_for(config_path=None, resume_dir=None):
        argv = [sys.executable, str(FAKE), "--run-dir", str(resume_dir or tmp_path), *extra]
        return argv + (["--start-step", "5"] if resume_dir else [])

    controller = TrainingController(AppState(), TrainingSupervisor(command_for=command_for))
    page = TrainPage(controller)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    page.set_config_path(str(tmp_path / "config.yaml"))
    return page, controller


def test_a_run_fills_the_tiles_and_charts(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path, "--steps", "10")
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    with qtbot.waitSignal(controller.run_ended, timeout=15_000) as ended:
        page.start_button.click()
    assert ended.args[0] == "finished"
    assert page.tiles["step"].value.text() == "10 / 10"
    assert page.tiles["val"].value.text() != "–"
    assert page.tiles["memory"].value.text() == "1.25 GB"
    assert page.progress.value() == page.progress.maximum() == 10
    charts = page.charts.widget
    x, y = charts.raw.getData()
    assert list(x) == list(range(1, 11))
    assert len(charts.valid.getData()[0]) == 2
    assert "run started" in page.log_view.toPlainText()
    assert not page.banner.isVisible()


def test_crash_shows_a_banner_and_offers_resume(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path, "--steps", "50", "--kill-self-at", "7")
    with qtbot.waitSignal(controller.crashed, timeout=15_000):
        page.start_button.click()
    assert page.banner.isVisible() and "memory" in page.banner.text()
    assert page.resume_button.isVisible()
    with qtbot.waitSignal(controller.step_reported, timeout=15_000) as step:
        page.resume_button.click()
    assert step.args[0]["step"] == 6
    with qtbot.waitSignal(controller.run_ended, timeout=15_000):
        pass


def test_stop_button_stops_the_run(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path, "--steps", "100000", "--step-seconds", "0.01")
    page.start_button.click()
    qtbot.waitUntil(lambda: len(controller.history.steps) >= 2, timeout=15_000)
    assert page.stop_button.isEnabled() and not page.start_button.isEnabled()
    with qtbot.waitSignal(controller.run_ended, timeout=15_000) as ended:
        page.stop_button.click()
    assert ended.args[0] == "stopped"
    assert page.start_button.isEnabled()


def test_copy_command_puts_the_cli_command_on_the_clipboard(qtbot, tmp_path):
    page, _ = make_page(qtbot, tmp_path)
    page.copy_button.click()
    assert QGuiApplication.clipboard().text() == f"mlx-lora train --config {tmp_path / 'config.yaml'}"


def test_smoothing_starts_at_the_first_value():
    assert smoothed([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]
    assert smoothed([])== []
