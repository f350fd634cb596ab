"""Train: settings, start/stop/resume, and the run as it happens.

The settings are a form generated from the engine's :class:`TrainConfig` (house
style 2), with the model and dataset chosen on the Models and Data pages, a
preset to start from, and the advanced settings folded away. Training runs in a
child process (:mod:`app.jobs.training_supervisor`); this page shows its reports:
loss (raw, smoothed, validation points) and learning rate, speed, peak memory,
elapsed time and ETA, a progress bar and the log. When the child dies (out of
memory, crash) a banner says why in plain words and offers to resume from the
last checkpoint.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QGridLayout, QHBoxLayout, QLabel, QMessageBox, QPlainTextEdit, QProgressBar, QPushButton,
    QScrollArea, QSplitter, QVBoxLayout, QWidget,
)

from app.controllers.training import TrainingController, smoothed
from app.widgets.common import Card, LazyWidget, MetricTile, human_count, human_seconds, memory_text, muted, notice
from app.widgets.config_form import ConfigForm
from mlx_lora.run_events import EvalReport, RunStarted, StepReport

TITLE = "Train"
SUBTITLE = "Fine-tune the selected model on your dataset. Training runs in its own process: a crash never takes the app down."
LOG_LINES_KEPT = 5000
CUSTOM = "Custom"


def _make_charts():
    from app.widgets.charts import TrainingCharts

    return TrainingCharts()


class TrainPage(QWidget):
    def __init__(self, controller: TrainingController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from mlx_lora.presets import PRESETS

        self.controller = controller
        self._applying_preset = False

        # -- settings (left) -----------------------------------------------------------
        settings = Card("Settings")
        preset_row = QHBoxLayout()
        preset_row.addWidget(QLabel("Preset"))
        self.preset_box = QComboBox()
        self.preset_box.addItems([CUSTOM, *PRESETS])
        self.preset_box.setToolTip("Start from a preset: it sets how long and how hard the run trains, "
                                   "not the model or the dataset.")
        preset_row.addWidget(self.preset_box, 1)
        settings.body.addLayout(preset_row)
        state = controller.state
        self._syncing = False  # True while the form is being set from the app's one config
        self.form = ConfigForm(state.config)
        settings.body.addWidget(self.form)
        files = QHBoxLayout()
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip("Load settings from a YAML file (a run's config.yaml works too)")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save these settings as YAML (mlx-lora train --config FILE reads it)")
        self.copy_button = QPushButton("Copy command")
        self.copy_button.setToolTip("Copy the mlx-lora train command that runs exactly these settings")
        for button in (self.load_button, self.save_button, self.copy_button):
            files.addWidget(button)
        files.addStretch(1)
        settings.body.addLayout(files)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(settings)
        # as wide as the form needs: never a horizontal scroll bar over the settings
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(max(340, settings.minimumSizeHint().width()
                                   + scroll.verticalScrollBar().sizeHint().width() + 6))
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        self.data_problem = notice("")  # Start is refused on a dataset the Data page found broken
        self.data_problem.setVisible(False)
        left_layout.addWidget(self.data_problem)
        actions = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.resume_button = QPushButton("Resume")
        keep = self.resume_button.sizePolicy()
        keep.setRetainSizeWhenHidden(True)  # showing Resume does not shift (or widen) the layout
        self.resume_button.setSizePolicy(keep)
        actions.addWidget(self.start_button, 1)
        actions.addWidget(self.stop_button)
        actions.addWidget(self.resume_button)
        left_layout.addLayout(actions)

        # -- the run (right) -----------------------------------------------------------
        run = Card()
        self.banner = notice("")
        self.banner.setVisible(False)
        run.body.addWidget(self.banner)
        self.status_label = muted("Not started. Choose the settings, then Start training.")
        run.body.addWidget(self.status_label)
        # two rows of tiles: in one row, a long run's values ("300 / 300", "12,345", "15 min 13 s")
        # needed ~770 px beside the settings column, more than a 1280-pixel window has, and the
        # layout cut the last ones
        tiles = QGridLayout()
        tiles.setHorizontalSpacing(18)
        tiles.setVerticalSpacing(4)
        self.tiles = {key: MetricTile(name) for key, name in (
            ("step", "step"), ("loss", "train loss"), ("val", "validation loss"), ("speed", "tokens / s"),
            ("memory", "peak memory"), ("elapsed", "elapsed"), ("eta", "remaining"))}
        for k, tile in enumerate(self.tiles.values()):
            tiles.addWidget(tile, k // 4, k % 4)
        tiles.setColumnStretch(4, 1)
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
        from app.widgets.reward_panel import RewardPanel

        self.reward_panel = RewardPanel()  # grpo: sampled rewards and answers (hidden otherwise)
        run_split = QSplitter(Qt.Orientation.Vertical)
        run_split.addWidget(self.charts)
        run_split.addWidget(self.reward_panel)
        run_split.addWidget(self.log_view)
        run_split.setStretchFactor(0, 3)
        run_split.setStretchFactor(1, 1)
        run.body.addWidget(run_split, 1)

        main = QSplitter()
        main.addWidget(left)
        main.addWidget(run)
        main.setStretchFactor(1, 3)
        main.setSizes([370, 730])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(main)

        # -- wiring --------------------------------------------------------------------
        self.preset_box.currentTextChanged.connect(self._on_preset_chosen)
        self.form.changed.connect(self._on_form_changed)
        self.load_button.clicked.connect(self._on_load_clicked)
        self.save_button.clicked.connect(self._on_save_clicked)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        self.start_button.clicked.connect(self._on_start_clicked)
        self.stop_button.clicked.connect(self._on_stop_clicked)
        self.resume_button.clicked.connect(self._on_resume_clicked)
        c = controller
        c.run_started.connect(self._on_run_started)
        c.step_reported.connect(self._on_step_reported)
        c.eval_reported.connect(self._on_eval_reported)
        c.reward_reported.connect(self._on_reward_reported)
        c.checkpoint_saved.connect(lambda path: self._append_log(f"checkpoint saved: {path}"))
        c.progressed.connect(self._on_progressed)
        c.run_ended.connect(self._on_run_ended)
        c.log_line.connect(self._append_log)
        c.running_changed.connect(lambda _running: self._update_buttons())
        state.config_changed.connect(self._on_config_changed)
        state.data_problems_changed.connect(self._on_data_problems_changed)
        self._update_buttons()

    # -- public --------------------------------------------------------------------------
    def config(self):
        """The form's TrainConfig (raises UserError when a combination is invalid)."""
        return self.form.value()

    def set_config(self, config) -> None:
        self._show_config(config)
        self.controller.state.set_config(config)
        self._mark_custom()

    def load_config_file(self, path: str) -> bool:
        """Put the settings of a YAML file (e.g. a past run's config.yaml) into the form."""
        from mlx_lora.errors import UserError

        try:
            config = self.controller.load_config(path)
        except UserError as exc:
            QMessageBox.warning(self, "Cannot load the settings", html.escape(str(exc)))
            return False
        # a past run's folder and resume pointer are its own; a new run gets a new folder
        self.set_config(config.replace(run_dir="", resume=""))
        self._append_log(f"settings loaded from {path}")
        return True

    def apply_theme(self) -> None:
        if self.charts.widget is not None:
            self.charts.widget.apply_theme()
        self.reward_panel.apply_theme()

    # -- helpers -------------------------------------------------------------------------
    def _replace(self, **settings) -> None:
        """Change some settings without marking the preset "Custom" (model, dataset, preset)."""
        from mlx_lora.errors import UserError

        self._applying_preset = True
        try:
            try:
                self.set_config(self.form.value().replace(**settings))
            except UserError:  # the form holds an invalid combination: set the fields one by one
                for name, value in settings.items():
                    try:
                        self.set_config(self.form.value().replace(**{name: value}))
                    except UserError:
                        pass
        finally:
            self._applying_preset = False

    def _show_config(self, config) -> None:
        """Put ``config`` into the form without taking the form's edits back as the user's."""
        self._syncing = True
        try:
            self.form.set_config(config)
        finally:
            self._syncing = False

    def _mark_custom(self) -> None:
        if not self._applying_preset:
            self.preset_box.blockSignals(True)
            self.preset_box.setCurrentText(CUSTOM)
            self.preset_box.blockSignals(False)

    def _update_buttons(self) -> None:
        running = self.controller.is_running()
        problems = self.controller.state.data_problems
        self.start_button.setEnabled(not running and not problems)
        self.start_button.setToolTip("Fix the dataset's problems first (Data page)" if problems else "")
        self.stop_button.setEnabled(running)
        self.resume_button.setVisible(not running and self.controller.can_resume())
        self.load_button.setEnabled(not running)
        self.form.setEnabled(not running)
        self.preset_box.setEnabled(not running)

    def _append_log(self, line: str, follow: bool = False) -> None:
        """Add a line; the view follows the end unless the reader scrolled up to read."""
        bar = self.log_view.verticalScrollBar()
        at_end = follow or bar.value() >= bar.maximum() - 2
        self.log_view.appendPlainText(line)
        if at_end:
            bar.setValue(bar.maximum())

    def _redraw(self) -> None:
        if self.charts.widget is None:
            return  # drawn from the history when first shown
        h = self.controller.history
        self.charts.widget.set_history(h.steps, h.losses, smoothed(h.losses), h.val_steps, h.val_losses,
                                       h.learning_rates)
        self.charts.widget.set_rewards(h.reward_steps, h.reward_margins, h.reward_accuracies)
        self.reward_panel.set_history(h.grpo)

    def _reset_run_view(self) -> None:
        self.banner.setVisible(False)
        for tile in self.tiles.values():
            tile.set_value("–")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    # -- slots ---------------------------------------------------------------------------
    def _on_data_problems_changed(self, problems: str) -> None:
        self.data_problem.setText(f"<b>Cannot start:</b> {html.escape(problems)}. Fix them and open the "
                                  "dataset again on the Data page." if problems else "")
        self.data_problem.setVisible(bool(problems))
        self._update_buttons()

    def _on_config_changed(self, config) -> None:
        """Another page (Data, Models) changed the one config: show it, keep the preset."""
        from mlx_lora.errors import UserError

        try:
            same = self.form.value() == config
        except UserError:
            same = False
        if not same:
            self._show_config(config)

    def _on_preset_chosen(self, name: str) -> None:
        if name == CUSTOM:
            return
        from mlx_lora.presets import preset

        self._replace(**preset(name))

    def _on_form_changed(self) -> None:
        if self._syncing:
            return
        from mlx_lora.errors import UserError

        self._mark_custom()
        try:
            self.controller.state.set_config(self.form.value())
        except UserError:
            pass  # an invalid combination stays in the form until it is fixed; Start names it

    def _on_load_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load training settings", "", "YAML (*.yaml *.yml)")
        if path:
            self.load_config_file(path)

    def _on_save_clicked(self) -> None:
        from mlx_lora.errors import UserError

        path, _ = QFileDialog.getSaveFileName(self, "Save training settings", "train.yaml", "YAML (*.yaml *.yml)")
        if not path:
            return
        try:
            self.controller.save_config(self.config(), path)
        except (UserError, OSError) as exc:
            QMessageBox.warning(self, "Cannot save the settings", html.escape(str(exc)))
            return
        self._append_log(f"settings saved to {path}")

    def _on_copy_clicked(self) -> None:
        from mlx_lora.errors import UserError

        try:
            command = self.controller.command_line(self.config())
        except UserError as exc:
            QMessageBox.warning(self, "Invalid settings", html.escape(str(exc)))
            return
        QGuiApplication.clipboard().setText(command)

    def _on_start_clicked(self) -> None:
        from mlx_lora.errors import UserError

        try:
            config = self.config()
            if not config.data.data:
                raise UserError("choose a dataset first (Data page), or type its path in Data")
        except UserError as exc:
            QMessageBox.warning(self, "Cannot start training", html.escape(str(exc)))
            return
        self._reset_run_view()
        self.log_view.clear()
        if self.charts.widget is not None:
            self.charts.widget.clear()
        self.status_label.setText("Starting: the trainer loads the dataset and the model…")
        try:
            self.controller.start(config)
        except OSError as exc:
            QMessageBox.warning(self, "Cannot start training", html.escape(str(exc)))

    def _on_stop_clicked(self) -> None:
        self.status_label.setText("Stopping: the trainer finishes this step and saves a checkpoint…")
        self.controller.stop()

    def _on_resume_clicked(self) -> None:
        self._reset_run_view()
        self.status_label.setText("Resuming from the last checkpoint…")
        self._append_log("resuming from the last checkpoint", follow=True)  # and follow the log again
        self.controller.resume()
        self._redraw()

    def _on_progressed(self, message: str) -> None:
        self.status_label.setText(message[:1].upper() + message[1:] + "…")
        self._append_log(message)

    def _on_run_started(self, event: RunStarted) -> None:
        total = self.controller.history.total_steps
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(event.step)
        verb = "Resumed" if event.resumed else "Training"
        facts = []
        if event.trainable_parameters:
            facts.append(f"{human_count(event.trainable_parameters)} trainable parameters")
        if event.train_examples:
            facts.append(f"{event.train_examples} training examples")
        if event.device:
            facts.append(event.device)
        self.status_label.setText(f"{verb}: {event.model} → {event.run_dir}"
                                  + (f"  ·  {' · '.join(facts)}" if facts else ""))
        self._append_log(f"run started: {event.run_dir}")
        self._redraw()

    def _on_step_reported(self, event: StepReport) -> None:
        h = self.controller.history
        step, total = event.step, h.total_steps
        t = self.tiles
        t["step"].set_value(f"{step} / {total}" if total else str(step))
        t["loss"].set_value(f"{event.loss:.3f}")
        t["speed"].set_value(f"{event.tokens_per_second:,.0f}")
        t["memory"].set_value(memory_text(event.peak_memory_gb * 1e9))
        t["elapsed"].set_value(human_seconds(event.elapsed_s))
        t["eta"].set_value(human_seconds(event.eta_s))
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(min(step, total))
        self._redraw()

    def _on_eval_reported(self, event: EvalReport) -> None:
        self.tiles["val"].set_value(f"{event.val_loss:.3f}")
        what = "baseline (untrained) validation loss" if event.step == 0 else "validation loss"
        best = "  (best so far)" if event.best else ""
        rewards = (f", reward margin {event.reward_margin:.4f}, accuracy {event.reward_accuracy:.0%}"
                   if event.reward_margin is not None else "")
        self._append_log(f"step {event.step}: {what} {event.val_loss:.4f}{rewards}{best}")
        self._redraw()

    def _on_reward_reported(self, event) -> None:
        self.reward_panel.set_history(self.controller.history.grpo)

    def _on_run_ended(self, outcome: str, message: str) -> None:
        self._append_log(message)
        self.tiles["eta"].set_value("–")  # nothing remains of a run that has ended
        self._update_buttons()
        self.status_label.setText(message)
        if outcome in ("crashed", "failed"):
            resume = (" You can resume from the last checkpoint (Resume)."
                      if self.controller.can_resume() else "")
            self.banner.setText(f"<b>Training {'crashed' if outcome == 'crashed' else 'failed'}.</b> "
                                f"{html.escape(message)}{resume}")
            self.banner.setVisible(True)
        elif outcome == "finished" and self.controller.history.total_steps:
            self.progress.setValue(self.progress.maximum())
        elif outcome == "stopped" and self.controller.can_resume():
            self.status_label.setText(message + " Resume continues from there.")
