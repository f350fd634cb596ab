"""The Train page driven by the supervisor running the fake trainer: the form bound to
TrainConfig (presets, model/data from the app state, floats), start, live tiles and
charts, crash banner with resume, stop, settings files, copy command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from PySide6.QtGui import QGuiApplication

from app.controllers.app_state import AppState
from app.controllers.training import TrainingController, smoothed
from app.pages.train_page import TrainPage
from app.jobs.training_supervisor import TrainingSupervisor
from mlx_lora.config import TrainConfig

FAKE = Path(__file__).with_name("fake_trainer.py")


def make_page(qtbot, tmp_path, *extra):
    started = []

    def command_for(config_path=None, resume_dir=None):
        started.append(config_path)
        argv = [sys.executable, str(FAKE), "--run-dir", str(resume_dir or tmp_path), *extra]
        return argv + (["--start-step", "5"] if resume_dir else [])

    state = AppState()
    controller = TrainingController(state, TrainingSupervisor(command_for=command_for))
    page = TrainPage(controller)
    qtbot.addWidget(page)
    page.resize(1100, 700)
    page.show()
    state.select_dataset(str(tmp_path / "data.jsonl"))
    page.started_configs = started
    return page, controller


def test_the_form_follows_the_app_state_and_presets(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path)
    controller.state.select_model("org/model", "Model")
    config = page.config()
    assert config.model.model == "org/model" and config.data.data == str(tmp_path / "data.jsonl")
    page.preset_box.setCurrentText("Quick test")
    from mlx_lora.presets import preset

    assert page.config().schedule.iters == preset("Quick test")["iters"]
    assert page.config().model.model == "org/model"  # a preset keeps the model
    assert page.preset_box.currentText() == "Quick test"
    page.form.editor("adapter", "rank").setValue(32)  # editing by hand: no preset any more
    assert page.preset_box.currentText() == "Custom"
    assert not page.form.advanced_panel.isVisible()
    assert page.form.editor("adapter", "alpha").text() == "16"  # not "16.000000"
    assert page.form.editor("optimizer", "learning_rate").text() in ("0.001", "0.0001")


def test_a_run_saves_the_config_and_fills_the_tiles_and_charts(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path, "--steps", "10")
    page.form.editor("schedule", "iters").setValue(10)
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    with qtbot.waitSignal(controller.run_ended, timeout=15_000) as ended:
        page.start_button.click()
    assert ended.args[0] == "finished"
    saved = TrainConfig.from_yaml(page.started_configs[0])  # written with the engine's save
    assert saved == page.config()
    assert page.tiles["step"].value.text() == "10 / 10"
    assert page.tiles["val"].value.text() != "–"
    assert page.tiles["memory"].value.text() == "1.25 GB"
    assert page.progress.value() == page.progress.maximum() == 10
    charts = page.charts.widget  # redrawn at most every REDRAW_MS: the last points may come a moment later
    qtbot.waitUntil(lambda: len(charts.valid.getData()[0] if charts.valid.getData()[0] is not None else []) == 2, timeout=2000)
    x, _ = charts.raw.getData()
    assert list(x) == list(range(1, 11))
    assert len(charts.lr.getData()[0]) == 10
    assert "run started" in page.log_view.toPlainText()
    assert not page.banner.isVisible()
    assert not page.resume_button.isVisible()  # nothing to resume after a finished run


def test_crash_shows_a_banner_and_offers_resume(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path, "--steps", "50", "--kill-self-at", "7")
    with qtbot.waitSignal(controller.crashed, timeout=15_000):
        page.start_button.click()
    assert page.banner.isVisible() and "memory" in page.banner.text() and "resume" in page.banner.text()
    assert page.resume_button.isVisible()
    # listening for the end before Resume: the resumed trainer may crash again (step 7) before
    # a wait started after its first step would begin
    with qtbot.waitSignal(controller.run_ended, timeout=15_000):
        with qtbot.waitSignal(controller.step_reported, timeout=15_000) as step:
            page.resume_button.click()
    assert step.args[0].step == 6


def test_stop_button_stops_the_run(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path, "--steps", "100000", "--step-seconds", "0.01")
    page.start_button.click()
    qtbot.waitUntil(lambda: len(controller.history.steps) >= 2, timeout=15_000)
    assert page.stop_button.isEnabled() and not page.start_button.isEnabled()
    assert not page.form.isEnabled()
    with qtbot.waitSignal(controller.run_ended, timeout=15_000) as ended:
        page.stop_button.click()
    assert ended.args[0] == "stopped"
    assert page.start_button.isEnabled() and page.resume_button.isVisible()
    assert page.tiles["eta"].value.text() == "–"  # no "remaining 1 min 04" after Stop
    for k in range(200):  # the log is far longer than the view: Resume follows its end again
        page._append_log(f"line {k}")
    bar = page.log_view.verticalScrollBar()
    bar.setValue(0)  # the reader scrolled up
    page._append_log("another line")
    assert bar.value() == 0  # reading is not interrupted
    with qtbot.waitSignal(controller.step_reported, timeout=15_000):
        page.resume_button.click()
    qtbot.waitUntil(lambda: bar.value() == bar.maximum(), timeout=5000)
    with qtbot.waitSignal(controller.run_ended, timeout=15_000):
        controller.stop()


def test_copy_command_is_the_exact_cli_equivalent(qtbot, tmp_path):
    """Parsing the copied command with the real CLI parser gives the form's config back."""
    import argparse

    from mlx_lora.cli.config_flags import add_config_arguments, config_from_args

    page, _ = make_page(qtbot, tmp_path)
    page.preset_box.setCurrentText("Quality")
    page.form.editor("model", "grad_checkpoint").setChecked(True)
    page.form.editor("data", "mask_prompt").setChecked(False)
    page.form.editor("optimizer", "learning_rate").setValue(3e-5)
    page.form.editor("adapter", "targets").setText("q, v")
    page.copy_button.click()
    command = QGuiApplication.clipboard().text()
    argv = shlex.split(command)
    assert argv[:2] == ["mlx-lora", "train"] and "--no-mask-prompt" in argv and "--learning-rate" in argv
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert config_from_args(parser.parse_args(argv[2:])) == page.config()


def test_settings_round_trip_through_yaml(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    page, _ = make_page(qtbot, tmp_path)
    page.form.editor("adapter", "rank").setValue(24)
    path = tmp_path / "saved.yaml"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    page.save_button.click()
    assert TrainConfig.from_yaml(path).adapter.rank == 24
    page.form.editor("adapter", "rank").setValue(4)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    page.load_button.click()
    assert page.config().adapter.rank == 24


def test_smoothing_starts_at_the_first_value():
    assert smoothed([2.0, 2.0, 2.0]) == [2.0, 2.0, 2.0]
    assert smoothed([]) == []


def test_a_relative_data_path_is_saved_absolute(qtbot, tmp_path, monkeypatch):
    """The trainer runs in its own folder: the config it is given names the data absolutely."""
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "d.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    page, controller = make_page(qtbot, tmp_path, "--steps", "2")
    controller.state.select_dataset("sets/d.jsonl")
    with qtbot.waitSignal(controller.run_ended, timeout=15_000):
        page.start_button.click()
    assert TrainConfig.from_yaml(page.started_configs[0]).data.data == str(tmp_path / "sets" / "d.jsonl")

