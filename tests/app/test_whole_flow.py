"""The whole app with the real engine, end to end: the demo model and the pirate
sample → the Train page runs the real trainer child for 3 steps → chart points
arrive → the run finishes → the Chat page answers with the tuned adapter beside the
base → the Export page exports the adapter, verified. And a real training child
killed with SIGKILL mid-run: the app survives, says so in plain words within 5 s,
offers resume (which continues from the checkpoint), and leaves no orphan."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from app.controllers import AppContext
from app.controllers.export import ExportController
from app.main_window import MainWindow
from mlx_lora import paths
from mlx_lora.export import PROMPTS

TINY = dict(iters=3, batch_size=1, max_seq_length=128, num_layers=2, rank=4, learning_rate=1e-3,
            steps_per_report=1, steps_per_eval=3, val_batches=1, save_every=3, warmup_steps=0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ")[-1][:1] != "Z"


def make_window(qtbot, demo_model, **settings) -> MainWindow:
    # two verification prompts instead of 32, and no torch check: the same code path, seconds not minutes
    context = AppContext(export=ExportController({"prompts": PROMPTS[:2], "torch_python": None}))
    window = MainWindow(context=context)
    qtbot.addWidget(window)
    window.show()
    context.state.select_model("demo", "SmolLM2-135M-Instruct (demo)")
    context.state.select_dataset(str(paths.sample_datasets_dir() / "pirate"))
    window.show_page(2)
    page = window.train_page
    page.set_config(page.config().replace(**settings))
    return window


@pytest.mark.timeout(300)
def test_train_chat_export_with_the_real_engine(qtbot, demo_model, tmp_path):
    run_dir = paths.runs_dir() / f"flow-{tmp_path.name}"  # in the app's runs folder: the pages list it
    window = make_window(qtbot, demo_model, run_dir=str(run_dir), **TINY)
    train, ctx = window.train_page, window.context
    steps = []
    ctx.training.step_reported.connect(steps.append)
    with qtbot.waitSignal(ctx.training.run_ended, timeout=180_000) as ended:
        train.start_button.click()
    assert ended.args[0] == "finished", train.log_view.toPlainText()
    assert [s.step for s in steps] == [1, 2, 3]
    charts = train.charts.widget  # redrawn at most every REDRAW_MS
    qtbot.waitUntil(lambda: len(charts.valid.getData()[0] if charts.valid.getData()[0] is not None else []) == 2, timeout=2000)
    x, y = charts.raw.getData()
    assert list(x) == [1, 2, 3] and all(v > 0 for v in y)
    assert list(train.charts.widget.valid.getData()[0]) == [0, 3]  # baseline and final validation
    assert train.tiles["step"].value.text() == "3 / 3" and train.progress.value() == 3
    assert (run_dir / "adapters.safetensors").is_file() and (run_dir / "config.yaml").is_file()

    # -- Chat: the tuned adapter beside the base ------------------------------------------------
    chat = window.chat_page
    chat.select_run(str(run_dir))
    with qtbot.waitSignal(ctx.chat.runs_listed, timeout=10_000):
        window.show_page(3)
    qtbot.waitUntil(lambda: chat.picker.pending is None, timeout=5000)
    with qtbot.waitSignal(ctx.chat.model_loaded, timeout=120_000):
        chat.load_button.click()
    assert ctx.chat.loaded.adapter == str(run_dir)
    chat.max_tokens.setValue(6)
    chat.temperature.setValue(0.0)
    tokens = []
    ctx.chat.delta_received.connect(lambda side, delta: tokens.append((side, delta)))
    chat.input.setPlainText("Where be the treasure?")
    with qtbot.waitSignal(ctx.chat.answer_finished, timeout=120_000):
        chat.send_button.click()
    assert {side for side, _ in tokens} == {"base", "tuned"}
    assert chat.transcripts["tuned"].last_answer().strip() and chat.transcripts["base"].last_answer().strip()

    # -- Export: the mlx-lm adapter, verified -----------------------------------------------------
    export = window.export_page
    export.select_run(str(run_dir))  # the run list came when the run ended (or comes when the page shows)
    window.show_page(4)
    qtbot.waitUntil(lambda: export.picker.pending is None, timeout=5000)
    export.format_box.setCurrentIndex(export.format_box.findData("adapter"))
    out = tmp_path / "exported"
    export.out_edit.setText(str(out))
    with qtbot.waitSignal(ctx.export.export_finished, timeout=180_000) as finished:
        export.export_button.click()
    assert finished.args[0].passed
    verification = json.loads((out / "verification.json").read_text())
    assert verification["passed"] and (out / "adapters.safetensors").is_file()
    assert "✓" in export.verdict.text() and export.checks_table.item(0, 1).text() == "passed"
    assert export.reveal_button.isEnabled()


@pytest.mark.timeout(300)
def test_a_killed_trainer_is_reported_and_resumable(qtbot, demo_model, tmp_path):
    run_dir = tmp_path / "runs" / "killed"
    window = make_window(qtbot, demo_model, **{**TINY, "iters": 500, "save_every": 1, "steps_per_eval": 1000,
                                               "run_dir": str(run_dir)})
    train, training = window.train_page, window.context.training
    with qtbot.waitSignal(training.checkpoint_saved, timeout=180_000):
        train.start_button.click()
    pid = training.supervisor.pid
    assert pid and _alive(pid)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    qtbot.waitUntil(lambda: train.banner.isVisible(), timeout=5000)
    assert time.monotonic() - killed_at < 5
    text = train.banner.text()
    assert "killed" in text and "memory" in text and "resume" in text.lower()
    assert train.resume_button.isVisible() and train.start_button.isEnabled()
    assert not _alive(pid)  # reaped: no zombie, no orphan
    assert window.isVisible()  # the app survived

    checkpoint_step = int(Path(training.last_checkpoint).name.split("-")[1])
    with qtbot.waitSignal(training.step_reported, timeout=180_000) as step:
        train.resume_button.click()
    assert step.args[0].step == checkpoint_step + 1  # continues after the checkpoint, not from step 1
    resumed_pid = training.supervisor.pid
    with qtbot.waitSignal(training.running_changed, timeout=30_000):
        training.supervisor.kill()
    assert not _alive(resumed_pid)
