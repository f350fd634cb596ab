"""The whole app with the real engine, end to end, as a person goes through it: pick the
model on the Models page → load the pirate sample on the Data page → change a setting there
and find it in the run's config.yaml → train on the Train page (the real trainer child) →
stop → resume to the end → evaluate it on the Runs page (base vs tuned answers scored) →
chat with the tuned adapter beside the base, both streaming at once → an export
cancelled (nothing written) → the export, verified. One test, in steps (``WHOLE_FLOW``):
each step is a function of the one :class:`Flow`, so a step (evaluation, streaming both
chat sides) goes in by adding a function to the list. And a real training child killed with
SIGKILL mid-run: the app survives, says so in plain words within 5 s, offers resume (which
continues from the checkpoint), and leaves no orphan."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from PySide6.QtCore import Qt

from app.controllers import AppContext
from app.controllers.export import ExportController
from app.main_window import MainWindow
from app.pages.runs_page import COLUMNS
from mlx_lora import paths
from mlx_lora.export import PROMPTS

# Long enough that Stop lands mid-run: Stop is clicked at the first step's report, and the
# trainer finishes that step, saves and exits (a step here: 0.1-0.5 s on a quiet 2-core machine)
TINY = dict(iters=12, batch_size=1, num_layers=2, rank=4, learning_rate=1e-3,
            steps_per_report=1, steps_per_eval=12, val_batches=1, save_every=4, warmup_steps=0)


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


@dataclasses.dataclass
class Flow:
    """What the steps share: the window, its controllers, where the run and the export go,
    and what earlier steps found (``seen``)."""

    qtbot: object
    window: MainWindow
    tmp_path: Path
    run_dir: Path
    other_model: Path  # a model folder to have open before the demo is picked
    seen: dict = dataclasses.field(default_factory=dict)

    @property
    def ctx(self):
        return self.window.context


def pick_the_demo_model(flow: Flow) -> None:
    """Another model is open; the demo is chosen from the Models page's list."""
    qtbot, window, models = flow.qtbot, flow.window, flow.window.models_page
    window.show_page(0)
    with qtbot.waitSignal(models.controller.model_opened, timeout=30_000):
        models.controller.open_folder(str(flow.other_model))
    assert flow.ctx.state.model == str(flow.other_model)
    qtbot.waitUntil(lambda: any("(demo)" in models.local_table.item(r, 0).text()
                                for r in range(models.local_table.rowCount())), timeout=30_000)
    demo_row = next(r for r in range(models.local_table.rowCount()) if "(demo)" in models.local_table.item(r, 0).text())
    models.local_table.selectRow(demo_row)
    models.use_button.click()
    assert flow.ctx.state.model == "demo"
    assert window.train_page.config().model.model == "demo"


def load_the_pirate_sample(flow: Flow) -> None:
    data = flow.window.data_page
    flow.window.show_page(1)
    with flow.qtbot.waitSignal(data.controller.dataset_checked, timeout=60_000):
        data.open(str(paths.sample_datasets_dir() / "pirate"))
    assert flow.window.train_page.config().data.data == str(paths.sample_datasets_dir() / "pirate")
    assert data.split_label.text().startswith("train 134 · validation 15")  # the folder's own valid.jsonl


def change_a_setting_on_the_data_page(flow: Flow) -> None:
    data = flow.window.data_page
    data.max_length.setValue(160)
    data.max_length.editingFinished.emit()
    data.mask_prompt.setChecked(False)
    form = flow.window.train_page.form
    assert form.editor("data", "max_seq_length").value() == 160  # the Train page shows the one config
    assert form.editor("data", "mask_prompt").isChecked() is False
    flow.seen["data settings"] = {"max_seq_length": 160, "mask_prompt": False}


def train_then_stop(flow: Flow) -> None:
    qtbot, train, training = flow.qtbot, flow.window.train_page, flow.ctx.training
    flow.window.show_page(2)
    train.set_config(train.config().replace(run_dir=str(flow.run_dir), **TINY))
    steps = []
    training.step_reported.connect(steps.append)
    with qtbot.waitSignal(training.step_reported, timeout=180_000):
        train.start_button.click()
    assert train.stop_button.isEnabled()
    with qtbot.waitSignal(training.run_ended, timeout=300_000) as ended:
        train.stop_button.click()
    assert ended.args[0] == "stopped", train.log_view.toPlainText()
    stopped_at = steps[-1].step
    assert 1 <= stopped_at < TINY["iters"]
    assert training.last_checkpoint and Path(training.last_checkpoint).is_dir()  # stopping leaves a checkpoint
    assert train.resume_button.isVisible() and train.start_button.isEnabled()
    saved = yaml.safe_load((flow.run_dir / "config.yaml").read_text())
    assert {k: saved["data"][k] for k in flow.seen["data settings"]} == flow.seen["data settings"]
    assert saved["model"]["model"] == "demo" and saved["data"]["data"] == str(paths.sample_datasets_dir() / "pirate")
    flow.seen["stopped at"] = stopped_at
    flow.seen["checkpoint step"] = int(Path(training.last_checkpoint).name.split("-")[1])


def resume_to_the_end(flow: Flow) -> None:
    qtbot, train, training = flow.qtbot, flow.window.train_page, flow.ctx.training
    steps = []
    training.step_reported.connect(steps.append)
    with qtbot.waitSignal(training.run_ended, timeout=400_000) as ended:
        train.resume_button.click()
    assert ended.args[0] == "finished", train.log_view.toPlainText()
    assert steps[0].step == flow.seen["checkpoint step"] + 1  # continues after the checkpoint, not from 1
    assert steps[-1].step == TINY["iters"]
    assert train.tiles["step"].value.text() == f"{TINY['iters']} / {TINY['iters']}"
    assert (flow.run_dir / "adapters.safetensors").is_file()
    charts = train.charts.widget  # redrawn at most every REDRAW_MS
    qtbot.waitUntil(lambda: charts.raw.getData()[0] is not None and charts.raw.getData()[0][-1] == TINY["iters"],
                    timeout=5000)


def chat_base_and_tuned(flow: Flow) -> None:
    qtbot, window, ctx = flow.qtbot, flow.window, flow.ctx
    chat = window.chat_page
    chat.select_run(str(flow.run_dir))
    with qtbot.waitSignal(ctx.chat.runs_listed, timeout=10_000):
        window.show_page(3)
        ctx.chat.refresh_runs()  # the page lists runs when it has none; after the Runs page it may have them
    qtbot.waitUntil(lambda: chat.picker.pending is None, timeout=5000)
    with qtbot.waitSignal(ctx.chat.model_loaded, timeout=120_000):
        chat.load_button.click()
    assert ctx.chat.loaded.adapter == str(flow.run_dir)
    chat.max_tokens.setValue(6)
    chat.temperature.setValue(0.0)
    tokens = []
    ctx.chat.delta_received.connect(lambda side, delta: tokens.append((side, delta)))
    chat.input.setPlainText("Where be the treasure?")
    with qtbot.waitSignal(ctx.chat.answer_finished, timeout=120_000):
        chat.send_button.click()
    assert {side for side, _ in tokens} == {"base", "tuned"}
    # both at once: the tuned side's first token came before the base side's last
    sides = [side for side, _ in tokens]
    assert sides.index("tuned") < len(sides) - 1 - sides[::-1].index("base"), sides
    assert chat.transcripts["tuned"].last_answer().strip() and chat.transcripts["base"].last_answer().strip()
    for side in ("base", "tuned"):  # each pane's own count and speed
        assert "tokens/s" in chat.speed_labels[side].text()


def evaluate_on_the_runs_page(flow: Flow) -> None:
    """Evaluate the run on the Runs page: base and tuned answers scored, and the headline in
    the history next to the run."""
    from mlx_lora.run_folder import GENERATION_EVAL_FILE

    qtbot, window, ctx = flow.qtbot, flow.window, flow.ctx
    runs = window.runs_page
    with qtbot.waitSignal(ctx.runs.runs_listed, timeout=10_000):
        window.show_page(5)
    def row_of_the_run() -> int:
        return next(r for r in range(runs.table.rowCount())
                    if runs.table.item(r, 0).data(Qt.ItemDataRole.UserRole) == str(flow.run_dir))

    runs.select_rows([row_of_the_run()])
    panel = runs.evaluation
    panel.limit.setValue(2)
    panel.max_tokens.setValue(4)
    with qtbot.waitSignal(ctx.runs.evaluation.evaluation_finished, timeout=300_000):
        runs.evaluate_button.click()
    assert panel.summary.rowCount() >= 4 and panel.examples.rowCount() == 2
    assert (flow.run_dir / GENERATION_EVAL_FILE).is_file()
    qtbot.waitUntil(lambda: "→" in runs.table.item(row_of_the_run(), COLUMNS.index("ROUGE-L")).text(), timeout=30_000)


def _open_the_export_page(flow: Flow) -> None:
    export = flow.window.export_page
    export.select_run(str(flow.run_dir))  # the run list came when the run ended (or comes when the page shows)
    flow.window.show_page(4)
    flow.qtbot.waitUntil(lambda: export.picker.pending is None, timeout=5000)
    export.format_box.setCurrentIndex(export.format_box.findData("adapter"))


def cancel_an_export(flow: Flow) -> None:
    """Cancel at the first stage: the page said what it was doing, and nothing is written."""
    qtbot, export = flow.qtbot, flow.window.export_page
    _open_the_export_page(flow)
    out = flow.tmp_path / "cancelled-export"
    export.out_edit.setText(str(out))
    stages = []

    def on_progressed(message, done, total):
        stages.append(export.stage_label.text())
        if len(stages) == 1:
            export.cancel_button.click()

    flow.ctx.export.progressed.connect(on_progressed)
    with qtbot.waitSignal(flow.ctx.export.cancelled, timeout=120_000):
        export.export_button.click()
    flow.ctx.export.progressed.disconnect(on_progressed)
    assert stages[0].endswith("…") and not stages[0].startswith("Exporting to")  # the stage, in words
    assert export.stage_label.text() == "Export cancelled; nothing was written."
    assert export.progress.maximum() == 1 and export.progress.value() == 0
    assert not out.exists() and list(flow.tmp_path.glob(".cancelled-export*")) == []
    assert export.export_button.isEnabled() and not export.cancel_button.isEnabled()


def export_verified(flow: Flow) -> None:
    qtbot, export = flow.qtbot, flow.window.export_page
    _open_the_export_page(flow)
    out = flow.tmp_path / "exported"
    export.out_edit.setText(str(out))
    with qtbot.waitSignal(flow.ctx.export.export_finished, timeout=180_000) as finished:
        export.export_button.click()
    assert finished.args[0].passed
    verification = json.loads((out / "verification.json").read_text())
    assert verification["passed"] and (out / "adapters.safetensors").is_file()
    assert "✓" in export.verdict.text() and export.checks_table.item(0, 1).text() == "passed"
    assert export.reveal_button.isEnabled()


# The order a person goes in. Insert a step where it belongs, e.g. an evaluation after
# resume_to_the_end, or streaming both chat sides in place of chat_base_and_tuned.
WHOLE_FLOW = [
    pick_the_demo_model,
    load_the_pirate_sample,
    change_a_setting_on_the_data_page,
    train_then_stop,
    resume_to_the_end,
    evaluate_on_the_runs_page,
    chat_base_and_tuned,
    cancel_an_export,
    export_verified,
]


@pytest.mark.timeout(1200)
def test_the_whole_flow_with_the_real_engine(qtbot, demo_model, tiny_model, tmp_path):
    context = AppContext(export=ExportController({"prompts": PROMPTS[:2], "torch_python": None}))
    window = MainWindow(context=context)
    qtbot.addWidget(window)
    window.show()
    # in the app's runs folder: the Chat and Export pages list it
    flow = Flow(qtbot, window, tmp_path, paths.runs_dir() / f"flow-{tmp_path.name}", other_model=tiny_model)
    try:
        for step in WHOLE_FLOW:
            print(f"whole flow: {step.__name__}", flush=True)  # with -s: where it is
            step(flow)
    finally:  # a failed step must not leave a trainer running under the next test
        if context.training.is_running():
            with qtbot.waitSignal(context.training.running_changed, timeout=30_000):
                context.training.supervisor.kill()


@pytest.mark.timeout(300)
def test_a_killed_trainer_is_reported_and_resumable(qtbot, demo_model, tmp_path):
    run_dir = tmp_path / "runs" / "killed"
    window = make_window(qtbot, demo_model, **{**TINY, "max_seq_length": 128, "iters": 500, "save_every": 1, "steps_per_eval": 1000,
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
