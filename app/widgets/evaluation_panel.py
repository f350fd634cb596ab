"""The Runs page's Evaluation tab: how many examples and tokens, Evaluate / Cancel, what
the job is doing now, then base vs tuned (summary table) and the best and worst examples.

A view over :class:`app.controllers.evaluation.EvaluationController`: the rows come
from the controller, the settings' defaults and bounds from the engine's
``GenerationSettings``.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QAbstractScrollArea, QCheckBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit, QProgressBar,
    QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.controllers import evaluation as evaluation_rows
from app.controllers.evaluation import EvaluationController
from app.widgets.common import muted

SUMMARY_COLUMNS = ("Metric", "Base", "Tuned", "Change")
EXAMPLE_COLUMNS = ("Tuned", "#", "ROUGE-L", "Judge", "Prompt", "Reference", "Base answer", "Tuned answer")
FIRST_TEXT_COLUMN = EXAMPLE_COLUMNS.index("Prompt")
NOT_EVALUATED = "Not evaluated yet. Evaluate generates answers with the base and the tuned model and scores them."


def _table(columns: tuple[str, ...]) -> QTableWidget:
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(columns)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setWordWrap(False)  # one line per example; the whole texts in the tooltip and below the table
    table.setTextElideMode(Qt.TextElideMode.ElideRight)
    return table


def _fill(table: QTableWidget, rows: list[tuple[str, ...]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(" ".join(text.split()))
            item.setToolTip(text)
            item.setData(Qt.ItemDataRole.UserRole, text)
            table.setItem(r, c, item)


class EvaluationPanel(QWidget):
    def __init__(self, controller: EvaluationController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        defaults = evaluation_rows.default_settings()
        self.limit = QSpinBox()
        self.limit.setRange(0, 10_000)
        self.limit.setValue(defaults.limit)
        self.limit.setSpecialValueText("all")
        self.limit.setToolTip("Examples of the test split (or of validation when the run has none), a seeded sample")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(defaults.max_tokens)
        self.max_tokens.setToolTip("New tokens per answer at most (answers are greedy)")
        self.judge = QCheckBox("Judge: the base rates tuned vs base")
        self.judge.setToolTip("After generating, the run's base model compares each tuned answer with the base's "
                              "(asked in both orders). A small judge is close to chance: read its replies.")
        self.judge_prompt = QPlainTextEdit(evaluation_rows.default_judge_prompt())
        self.judge_prompt.setToolTip("The judge's prompt: {prompt}, {reference}, {answer_a} and {answer_b} are "
                                     "filled in; it should answer A, B or T")
        self.judge_prompt.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = QLabel(NOT_EVALUATED)
        self.status.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setVisible(False)
        self.note = muted()
        self.summary = _table(SUMMARY_COLUMNS)
        self.summary.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.summary.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
        self.summary.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.detail = QLabel()  # the selected example's whole texts
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.examples = _table(EXAMPLE_COLUMNS)
        header = self.examples.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        for column in range(FIRST_TEXT_COLUMN, len(EXAMPLE_COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)

        settings = QFormLayout()
        settings.addRow("Examples", self.limit)
        settings.addRow("Max new tokens", self.max_tokens)
        settings.addRow(self.judge)
        top = QHBoxLayout()
        top.addLayout(settings)
        top.addWidget(self.cancel_button, 0, Qt.AlignmentFlag.AlignBottom)
        status = QVBoxLayout()
        status.addWidget(self.status)
        status.addWidget(self.progress)
        status.addWidget(self.note)
        top.addLayout(status, 1)
        tables = QHBoxLayout()
        tables.addWidget(self.summary, 0, Qt.AlignmentFlag.AlignTop)
        examples = QVBoxLayout()
        examples.addWidget(self.examples, 1)
        examples.addWidget(self.detail)
        tables.addLayout(examples, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(top)
        layout.addWidget(self.judge_prompt)
        layout.addLayout(tables, 1)

        self.cancel_button.clicked.connect(controller.cancel)
        self.judge.toggled.connect(self.judge_prompt.setVisible)
        self.examples.currentCellChanged.connect(self._on_example_selected)
        controller.progressed.connect(self._on_progressed)
        controller.evaluation_finished.connect(self.show_result)
        controller.failed.connect(lambda message: self._on_ended(f"Evaluation failed: {message}"))
        controller.cancelled.connect(lambda: self._on_ended("Evaluation cancelled; nothing was saved."))
        controller.busy_changed.connect(self._on_busy_changed)

    def judge_prompt_text(self) -> str | None:
        """The judge's prompt when judging is on, else None."""
        return self.judge_prompt.toPlainText() if self.judge.isChecked() else None

    def show_result(self, result) -> None:
        """Show an evaluation (None: the run has none yet)."""
        self.progress.setVisible(False)
        if result is None:
            self.status.setText(NOT_EVALUATED)
            self.note.setText("")
            _fill(self.summary, [])
            _fill(self.examples, [])
            self.detail.setText("")
            return
        tuned, base = result.tuned.rouge_l, result.base.rouge_l
        self.status.setText(f"{Path(result.run_dir).name}: ROUGE-L {base:.3f} → {tuned:.3f} with the adapter "
                            f"({result.adapter}), over {len(result.examples)} examples.")
        self.note.setText(f"{result.split_note}; greedy, at most {result.settings.max_tokens} new tokens. "
                          "Reference loss: the reference answer's cross-entropy per token (lower is better).")
        _fill(self.summary, evaluation_rows.summary_rows(result))
        _fill(self.examples, evaluation_rows.example_rows(result))
        if self.examples.rowCount():
            self.examples.setCurrentCell(0, FIRST_TEXT_COLUMN)

    def _on_example_selected(self, row: int, *_ignored) -> None:
        if row < 0 or self.examples.item(row, FIRST_TEXT_COLUMN) is None:
            self.detail.setText("")
            return
        texts = [self.examples.item(row, c).data(Qt.ItemDataRole.UserRole)
                 for c in range(FIRST_TEXT_COLUMN, len(EXAMPLE_COLUMNS))]
        labels = EXAMPLE_COLUMNS[FIRST_TEXT_COLUMN:]
        self.detail.setText("\n".join(f"{label}: {' '.join(text.split())}" for label, text in zip(labels, texts)))

    def _on_progressed(self, message: str, done: int, total: int) -> None:
        self.status.setText(f"{message[0].upper()}{message[1:]}…")
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        else:
            self.progress.setRange(0, 0)  # busy, length unknown (loading the model)

    def _on_busy_changed(self, busy: bool) -> None:
        self.cancel_button.setEnabled(busy)
        for widget in (self.limit, self.max_tokens, self.judge, self.judge_prompt):
            widget.setEnabled(not busy)
        self.progress.setVisible(busy)
        if busy:
            self.status.setText("Starting…")
            self.progress.setRange(0, 0)

    def _on_ended(self, text: str) -> None:
        self.progress.setVisible(False)
        self.status.setText(text)
