"""Train: settings, start/stop/resume, and the run as it happens.

Training runs in a child process (see :mod:`app.training_supervisor`); this page
shows its reports: loss (raw, smoothed, validation points) and learning rate,
speed, peak memory, elapsed time and ETA, a progress bar and the log. When the
child dies (out of memory, crash) a banner says why in plain words and offers
to resume from the last checkpoint.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QFileDialog, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSplitter,
    QVBoxLayout, QWidget,
)

from app.controllers.training import TrainingController, smoothed
from app.widgets.common import Card, LazyWidget, MetricTile, human_seconds, muted, notice

TITLE = "Train"
SUBTITLE = "Fine-tune the selected model on your dataset. Training runs in its own process: a crash never takes the app down."
LOG_LINES_KEPT = 5000


def _make_charts():
    from app.widgets.charts import TrainingCharts

    return TrainingCharts()


class TrainPage(QWidget):
    def __init__(self, controller: TrainingController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.config_path = ""

        # -- settings (left) -----------------------------------------------------------
        settings = Card("Settings")
        self.model_label = muted()
        self.dataset_label = muted()
        settings.body.addWidget(self.model_label)
        settings.body.addWidget(self.dataset_label)
        self.form_note = notice("The settings form is built from the engine's training config when it "
                                "lands. Meanwhile, load a settings file (YAML) to train with it.")
        settings.body.addWidget(self.form_note)
        self.config_label = muted("No settings file loaded.")
        settings.body.addWidget(self.config_label)
        files = QHBoxLayout()
        self.load_button = QPushButton("Load settings…")
        self.copy_button = QPushButton("Copy command")
        files.addWidget(self.load_button)
        files.addWidget(self.copy_button)
        files.addStretch(1)
        settings.body.addLayout(files)
        settings.body.addStretch(1)
        actions = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        actions.addWidget(self.start_button, 1)
        actions.addWidget(self.stop_button)
        actions.addWidget(self.resume_button)
        settings.body.addLayout(actions)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(settings)
        scroll.setMinimumWidth(300)

        # -- the run (right) -----------------------------------------------------------
        run = Card()
        self.banner = notice("")
        self.banner.setVisible(False)
        run.body.addWidget(self.banner)
        tiles = QHBoxLayout()
        tiles.setSpacing(18)
        self.tiles = {key: MetricTile(name) for key, name in (
            ("step", "step"), ("loss", "train loss"), ("val", "validation loss"), ("speed", "tokens / s"),
            ("memory", "peak memory"), ("elapsed", "elapsed"), ("eta", "remaining"))}
        for tile in self.tiles.values():
            tiles.addWidget(tile)
        run.body.addLayout(tiles)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        run.body.addWidget(self.progress)
        self.charts = LazyWidget(_make_charts, on_built=lambda _charts: self._redraw())
        self.charts.setMinimumHeight(220)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES_KEPT)
        self.log_view.setPlaceholderText("The trainer's log appears here.")
        run_split = QSplitter(Qt.Orientation.Vertical)
        run_split.addWidget(self.charts)
        run_split.addWidget(self.log_view)
        run_split.setStretchFactor(0, 3)
        run_split.setStretchFactor(1, 1)
        run.body.addWidget(run_split, 1)

        main = QSplitter()
        main.addWidget(scroll)
        main.addWidget(run)
        main.setStretchFactor(1, 3)
        main.setSizes([320, 760])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(main)

        # -- wiring --------------------------------------------------------------------
        self.load_button.clicked.connect(self._on_load_clicked)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        self.start_button.clicked.connect(self._on_start_clicked)
        self.stop_button.clicked.connect(controller.stop)
        self.resume_button.clicked.connect(self._on_resume_clicked)
        c = controller
        c.run_started.connect(self._on_run_started)
        c.step_reported.connect(self._on_step_reported)
        c.eval_reported.connect(self._on_eval_reported)
        c.checkpoint_saved.connect(lambda path: self._append_log(f"checkpoint saved: {path}"))
        c.run_ended.connect(self._on_run_ended)
        c.log_line.connect(self._append_log)
        c.running_changed.connect(lambda _running: self._update_buttons())
        c.state.model_selected.connect(lambda _spec: self._show_choices())
        c.state.dataset_selected.connect(lambda _path: self._show_choices())
        self._show_choices()
        self._update_buttons()

    def set_config_path(self, path: str) -> None:
        self.config_path = path
        self.config_label.setText(f"Settings file: <b>{html.escape(path)}</b>")
        self._update_buttons()

    def apply_theme(self) -> None:
        if self.charts.widget is not None:
            self.charts.widget.apply_theme()

    def _show_choices(self) -> None:
        state = self.controller.state
        self.model_label.setText(f"Model: <b>{html.escape(state.model_label)}</b>")
        dataset = state.dataset or "none yet (choose one on the Data page)"
        self.dataset_label.setText(f"Dataset: <b>{html.escape(dataset)}</b>")

    def _update_buttons(self) -> None:
        running = self.controller.is_running()
        self.start_button.setEnabled(not running and bool(self.config_path))
        self.stop_button.setEnabled(running)
        self.resume_button.setVisible(not running and bool(self.controller.run_dir))
        self.copy_button.setEnabled(bool(self.config_path))
        self.load_button.setEnabled(not running)

    def _append_log(self, line: str) -> None:
        self.log_view.appendPlainText(line)

    def _redraw(self) -> None:
        if self.charts.widget is None:
            return  # drawn from the history when first shown
        h = self.controller.history
        self.charts.widget.set_history(h.steps, h.losses, smoothed(h.losses), h.val_steps, h.val_losses, h.learning_rates)

    # -- slots ---------------------------------------------------------------------------
    def _on_load_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load training settings", "", "YAML (*.yaml *.yml)")
        if path:
            self.set_config_path(path)

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.controller.command_line(self.config_path))

    def _on_start_clicked(self) -> None:
        self.banner.setVisible(False)
        self.log_view.clear()
        for tile in self.tiles.values():
            tile.set_value("–")
        if self.charts.widget is not None:
            self.charts.widget.clear()
        self.controller.start(self.config_path)

    def _on_resume_clicked(self) -> None:
        self.banner.setVisible(False)
        self.controller.resume()

    def _on_run_started(self, event: dict) -> None:
        total = self.controller.history.total_steps
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(0)
        self._append_log(f"run started: {event.get('run_dir', '')}")

    def _on_step_reported(self, event: dict) -> None:
        h = self.controller.history
        step, total = event.get("step", 0), h.total_steps
        t = self.tiles
        t["step"].set_value(f"{step} / {total}" if total else str(step))
        t["loss"].set_value(f"{event.get('loss', float('nan')):.3f}")
        if "tokens_per_second" in event:
            t["speed"].set_value(f"{event['tokens_per_second']:,.0f}")
        if "peak_memory_gb" in event:
            t["memory"].set_value(f"{event['peak_memory_gb']:.2f} GB")
        t["elapsed"].set_value(human_seconds(event.get("elapsed_s")))
        t["eta"].set_value(human_seconds(event.get("eta_s")))
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
        self._redraw()

    def _on_eval_reported(self, event: dict) -> None:
        if "val_loss" in event:
            self.tiles["val"].set_value(f"{event['val_loss']:.3f}")
            self._append_log(f"step {event.get('step')}: validation loss {event['val_loss']:.4f}")
        self._redraw()

    def _on_run_ended(self, outcome: str, message: str) -> None:
        self._append_log(message)
        self._update_buttons()
        if outcome in ("crashed", "failed"):
            resume = " You can resume from the last checkpoint." if self.controller.run_dir and outcome == "crashed" else ""
            self.banner.setText(f"<b>Training {'crashed' if outcome == 'crashed' else 'failed'}.</b> "
                                f"{html.escape(message)}{resume}")
            self.banner.setVisible(True)
        elif outcome == "finished" and self.controller.history.total_steps:
            self.progress.setValue(self.progress.maximum())
