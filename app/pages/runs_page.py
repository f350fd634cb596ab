"""Runs: every training run, its settings and its loss curves.

The history comes from :func:`mlx_lora.run_history.list_runs` in a worker. Selecting
runs overlays their loss curves; a run can be reopened on the Train page (its
exact config), resumed, chatted with, exported, evaluated (base vs tuned answers
scored, in the Evaluation tab; :mod:`app.widgets.evaluation_panel`), or deleted
(after asking; it goes to the runs folder's trash). The page only emits what was
asked for; the main window routes it to the page that does it.
"""

from __future__ import annotations

import html
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QMessageBox, QPushButton, QSplitter, QTableWidget,
    QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget,
)

from app.controllers.runs import RunsController
from app.widgets.common import Card, LazyWidget, human_count, human_seconds, muted
from app.widgets.evaluation_panel import EvaluationPanel

TITLE = "Runs"
SUBTITLE = "Every training run, its settings and its loss curves. Select several to compare them."
COLUMNS = ("Run", "Model", "Dataset", "Method", "Status", "Steps", "Best val loss", "ROUGE-L",
           "Duration", "Tokens", "Started")


def _make_curves():
    from app.widgets.charts import RunCurves

    return RunCurves()


class _Number(QTableWidgetItem):
    """A cell that sorts by its number, not its text."""

    def __init__(self, text: str, value: float) -> None:
        super().__init__(text)
        self.setData(Qt.ItemDataRole.UserRole, value)

    def __lt__(self, other) -> bool:
        return (self.data(Qt.ItemDataRole.UserRole) or 0) < (other.data(Qt.ItemDataRole.UserRole) or 0)


class RunsPage(QWidget):
    open_config_requested = Signal(str)  # config.yaml of a run, for the Train page
    resume_requested = Signal(str)  # run folder
    chat_requested = Signal(str)
    export_requested = Signal(str)

    def __init__(self, controller: RunsController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._runs: list = []
        self._curves: dict = {}

        card = Card()
        buttons = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh")
        self.open_button = QPushButton("Open settings in Train")
        self.resume_button = QPushButton("Resume")
        self.chat_button = QPushButton("Chat")
        self.export_button = QPushButton("Export")
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip("Generate with the base and the tuned model on the run's test examples "
                                        "and score both against the references")
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setObjectName("danger")
        for button in (self.refresh_button, self.open_button, self.resume_button, self.chat_button,
                       self.export_button, self.evaluate_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        card.body.addLayout(buttons)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.horizontalHeaderItem(COLUMNS.index("ROUGE-L")).setToolTip(
            "The latest evaluation's ROUGE-L against the references, base → tuned (Evaluate)")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setSortingEnabled(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.empty_note = muted("No runs yet. Runs you start on the Train page appear here.")
        card.body.addWidget(self.empty_note)
        card.body.addWidget(self.table, 1)
        self.curves = LazyWidget(_make_curves, on_built=lambda widget: widget.set_curves(self._curves))
        self.curves.setMinimumHeight(200)
        self.evaluation = EvaluationPanel(controller.evaluation)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.curves, "Loss curves")
        self.tabs.addTab(self.evaluation, "Evaluation")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(card)
        split.addWidget(self.tabs)
        split.setSizes([260, 400])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)

        self.refresh_button.clicked.connect(controller.refresh)
        self.table.itemSelectionChanged.connect(self._on_selection_changed)
        self.open_button.clicked.connect(lambda: self._emit_for_current(self._config_path, self.open_config_requested))
        self.resume_button.clicked.connect(lambda: self._emit_for_current(str, self.resume_requested))
        self.chat_button.clicked.connect(lambda: self._emit_for_current(str, self.chat_requested))
        self.export_button.clicked.connect(lambda: self._emit_for_current(str, self.export_requested))
        self.delete_button.clicked.connect(self._on_delete_clicked)
        self.evaluate_button.clicked.connect(self._on_evaluate_clicked)
        controller.evaluation.results_loaded.connect(self._on_results_loaded)
        controller.evaluation.busy_changed.connect(lambda _busy: self._update_buttons())
        controller.runs_listed.connect(self._on_runs_listed)
        controller.curves_loaded.connect(self._on_curves_loaded)
        self._update_buttons()

    def apply_theme(self) -> None:
        if self.curves.widget is not None:
            self.curves.widget.apply_theme()

    def showEvent(self, event) -> None:
        self.controller.refresh()
        super().showEvent(event)

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _config_path(run_dir) -> str:
        from mlx_lora.run_folder import RunFolder

        return str(RunFolder(run_dir).config_path)

    def selected_runs(self) -> list:
        rows = sorted({index.row() for index in self.table.selectionModel().selectedRows()})
        by_path = {str(run.path): run for run in self._runs}
        return [by_path[self.table.item(row, 0).data(Qt.ItemDataRole.UserRole)] for row in rows]

    def select_rows(self, rows: list[int]) -> None:
        self.table.clearSelection()
        mode = self.table.selectionMode()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        for row in rows:
            self.table.selectRow(row)
        self.table.setSelectionMode(mode)

    @staticmethod
    def _best_cell(run) -> QTableWidgetItem:
        """The best trained validation loss; before any trained evaluation, the untrained
        model's (step 0) marked as such rather than "—"."""
        best, base = run.best_val_loss, run.baseline_val_loss
        if best is not None:
            return _Number(f"{best:.3f}", best)
        if base is not None:
            item = _Number(f"{base:.3f} (untrained)", base)
            item.setToolTip("Only the untrained model's validation loss (step 0) so far")
            return item
        return _Number("—", float("inf"))

    @staticmethod
    def _evaluation_cell(run) -> QTableWidgetItem:
        """The saved evaluation's ROUGE-L, base → tuned; the other numbers in the tooltip."""
        e = run.evaluation
        if e is None:
            return _Number("—", float("-inf"))
        item = _Number(f"{e.base_rouge_l:.2f} → {e.tuned_rouge_l:.2f}", e.tuned_rouge_l - e.base_rouge_l)
        loss = (f"\nreference loss/token {e.base_loss:.3f} → {e.tuned_loss:.3f}"
                if e.base_loss is not None and e.tuned_loss is not None else "")
        item.setToolTip(f"{e.examples} {e.split} examples, base → tuned:\nROUGE-L {e.base_rouge_l:.3f} → "
                        f"{e.tuned_rouge_l:.3f}\ntoken F1 {e.base_token_f1:.3f} → {e.tuned_token_f1:.3f}\n"
                        f"exact match {e.base_exact_match:.3f} → {e.tuned_exact_match:.3f}{loss}")
        return item

    def _emit_for_current(self, convert, signal) -> None:
        runs = self.selected_runs()
        if len(runs) == 1:
            signal.emit(convert(runs[0].path))

    def _update_buttons(self) -> None:
        runs = self.selected_runs()
        one = len(runs) == 1
        for button in (self.open_button, self.chat_button, self.export_button):
            button.setEnabled(one)
        self.chat_button.setEnabled(one and bool(runs[0].checkpoints))
        self.export_button.setEnabled(one and bool(runs[0].checkpoints))
        self.resume_button.setEnabled(one and runs[0].status in ("stopped", "incomplete", "failed")
                                      and any(c.startswith("step-") for c in runs[0].checkpoints))
        self.delete_button.setEnabled(bool(runs))
        self.evaluate_button.setEnabled(one and bool(runs[0].checkpoints)
                                        and not self.controller.evaluation.is_busy())

    # -- slots --------------------------------------------------------------------------------
    def _on_runs_listed(self, runs: list) -> None:
        selected = {str(run.path) for run in self.selected_runs()}
        self._runs = runs
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(runs))
        for row, run in enumerate(runs):
            best = run.best_val_loss
            cells = [
                QTableWidgetItem(run.name), QTableWidgetItem(run.model), QTableWidgetItem(run.dataset),
                QTableWidgetItem(run.method), QTableWidgetItem(run.status),
                _Number(f"{run.steps_done} / {run.total_steps}" if run.total_steps else str(run.steps_done),
                        run.steps_done),
                self._best_cell(run),
                self._evaluation_cell(run),
                _Number(human_seconds(run.duration_s) if run.duration_s else "—", run.duration_s),
                _Number(human_count(run.tokens) if run.tokens else "—", run.tokens),
                _Number(time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created)), run.created),
            ]
            cells[0].setData(Qt.ItemDataRole.UserRole, str(run.path))
            cells[0].setToolTip(str(run.path))
            for column, item in enumerate(cells):
                self.table.setItem(row, column, item)
        self.table.setSortingEnabled(True)
        self.empty_note.setVisible(not runs)
        self.table.setVisible(bool(runs))
        rows = [row for row in range(self.table.rowCount())
                if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) in selected]
        if rows:
            self.select_rows(rows)
        elif runs:
            self.select_rows([0])
        self._update_buttons()

    def _on_selection_changed(self) -> None:
        self._update_buttons()
        runs = self.selected_runs()
        self.controller.load_curves([str(run.path) for run in runs])
        if len(runs) == 1 and not self.controller.evaluation.is_busy():  # a running one keeps the tab
            self.controller.evaluation.load(str(runs[0].path))

    def _on_results_loaded(self, run_dir: str, result) -> None:
        runs = self.selected_runs()
        if len(runs) == 1 and str(runs[0].path) == run_dir and not self.controller.evaluation.is_busy():
            self.evaluation.show_result(result)

    def _on_evaluate_clicked(self) -> None:
        runs = self.selected_runs()
        if len(runs) != 1:
            return
        self.tabs.setCurrentWidget(self.evaluation)
        self.controller.evaluation.evaluate(str(runs[0].path), self.evaluation.limit.value(),
                                            self.evaluation.max_tokens.value(),
                                            judge_prompt=self.evaluation.judge_prompt_text())

    def _on_curves_loaded(self, curves: dict) -> None:
        names = {str(run.path): run.name for run in self._runs}
        self._curves = {names.get(path, path): curve for path, curve in curves.items()}
        if self.curves.widget is not None:
            self.curves.widget.set_curves(self._curves)

    def _on_delete_clicked(self) -> None:
        runs = self.selected_runs()
        if not runs:
            return
        names = "<br>".join(html.escape(run.name) for run in runs[:10]) + ("<br>…" if len(runs) > 10 else "")
        answer = QMessageBox.question(
            self, "Delete runs" if len(runs) > 1 else "Delete run",
            f"Move {'these runs' if len(runs) > 1 else 'this run'} to the runs folder's trash?<br><br>{names}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return
        for run in runs:
            self.controller.delete(str(run.path))
