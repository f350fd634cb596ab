"""Export: a run's adapter out as a fused model (MLX, Hugging Face safetensors,
GGUF) or as an adapter (PEFT, mlx-lm), optionally re-quantised and pushed to the
Hub. The engine checks every export against base+adapter before it writes the
folder; this page shows each check's figures and says plainly whether it passed.
A GGUF export can then be sent to LM Studio or Ollama (an MLX folder to LM Studio).
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar,
    QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.controllers.export import (
    ExportController, HandOff, default_out_dir, format_choices, handoff_formats, quantize_choices,
)
from app.controllers.runs import RunsController
from app.theme import ThemeManager
from app.widgets.common import Card, muted
from app.widgets.run_picker import RunAdapterPicker

TITLE = "Export"
SUBTITLE = "Save the fine-tuned model for other tools. Every export is checked against base + adapter before it is written."
CHECK_COLUMNS = ("Check", "Result", "Top-1 agreement", "Max |Δ logit|", "Mean |Δ logit|", "Adapter's effect")


def _figure(value: float) -> str:
    return f"{value:.3g}"


class ExportPage(QWidget):
    def __init__(self, controller: ExportController, runs: RunsController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.runs_controller = runs
        self.out_dir = ""

        # -- what and how --------------------------------------------------------------
        setup = Card("What to export")
        form = QFormLayout()
        self.picker = RunAdapterPicker("no run with an adapter yet: train one first", parent=self)
        self.run_box, self.adapter_box = self.picker.run_box, self.picker.adapter_box
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_box, 1)
        run_row.addWidget(self.adapter_box)
        form.addRow("Run", run_row)
        self.format_box = QComboBox()
        for label, fmt in format_choices():
            self.format_box.addItem(label, fmt)
        form.addRow("Format", self.format_box)
        self.quantize_box = QComboBox()
        self.quantize_box.setToolTip("Quantise the fused weights after fusing (the check's thresholds follow)")
        form.addRow("Re-quantise", self.quantize_box)
        out_row = QHBoxLayout()
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("(default: the app's exports folder)")
        self.browse_button = QPushButton("Browse…")
        out_row.addWidget(self.out_edit, 1)
        out_row.addWidget(self.browse_button)
        form.addRow("Folder", out_row)
        push_row = QHBoxLayout()
        self.push_box = QCheckBox("Push to the Hugging Face Hub")
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("your-name/model-name")
        self.public_box = QCheckBox("Public")
        self.public_box.setToolTip("New repos are private unless this is ticked")
        push_row.addWidget(self.push_box)
        push_row.addWidget(self.repo_edit, 1)
        push_row.addWidget(self.public_box)
        form.addRow("", push_row)
        setup.body.addLayout(form)
        buttons = QHBoxLayout()
        self.export_button = QPushButton("Export")
        self.export_button.setObjectName("primary")
        self.cancel_button = QPushButton("Cancel")
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        setup.body.addLayout(buttons)

        # -- progress and result -------------------------------------------------------
        result = Card("Result")
        self.stage_label = muted("Nothing exported yet.")
        result.body.addWidget(self.stage_label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        result.body.addWidget(self.progress)
        self.verdict = QLabel()
        self.verdict.setWordWrap(True)
        self.verdict.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.verdict.setVisible(False)
        result.body.addWidget(self.verdict)
        self.checks_table = QTableWidget(0, len(CHECK_COLUMNS))
        self.checks_table.setHorizontalHeaderLabels(CHECK_COLUMNS)
        self.checks_table.verticalHeader().setVisible(False)
        self.checks_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        header = self.checks_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(CHECK_COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.checks_table.setMinimumHeight(110)
        result.body.addWidget(self.checks_table, 1)
        self.files_label = muted()
        result.body.addWidget(self.files_label)
        reveal_row = QHBoxLayout()
        self.reveal_button = QPushButton("Reveal in file manager")
        self.reveal_button.setEnabled(False)
        reveal_row.addWidget(self.reveal_button)
        reveal_row.addStretch(1)
        result.body.addLayout(reveal_row)
        handoff_row = QHBoxLayout()
        self.handoff_name_edit = QLineEdit()
        self.handoff_name_edit.setPlaceholderText("name in LM Studio / Ollama")
        self.handoff_name_edit.setToolTip("The model's name in LM Studio (mlx-lora-studio/<name>) and in Ollama")
        self.lmstudio_button = QPushButton("Send to LM Studio")
        self.lmstudio_button.setToolTip("Copy the GGUF file (or the MLX folder) into LM Studio's models folder; "
                                        "never over another model")
        self.ollama_button = QPushButton("Send to Ollama")
        self.ollama_button.setToolTip("ollama create <name> -f Modelfile (or the exact command, when Ollama "
                                      "is not installed)")
        handoff_row.addWidget(self.handoff_name_edit, 1)
        handoff_row.addWidget(self.lmstudio_button)
        handoff_row.addWidget(self.ollama_button)
        result.body.addLayout(handoff_row)
        self.handoff_label = muted()
        self.handoff_label.setWordWrap(True)
        self.handoff_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        result.body.addWidget(self.handoff_label)
        self.handoff_command = QLineEdit()  # the command to run by hand, to copy whole
        self.handoff_command.setReadOnly(True)
        self.handoff_command.setVisible(False)
        result.body.addWidget(self.handoff_command)
        self._exported_format = ""  # the format of the export the hand-off buttons act on

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(setup)
        layout.addWidget(result, 1)

        # -- wiring --------------------------------------------------------------------
        self.picker.changed.connect(self._update_buttons)
        self.format_box.currentIndexChanged.connect(lambda _i: self._on_format_chosen())
        self.browse_button.clicked.connect(self._on_browse_clicked)
        self.push_box.toggled.connect(lambda _on: self._update_buttons())
        self.repo_edit.textChanged.connect(lambda _text: self._update_buttons())
        self.export_button.clicked.connect(self._on_export_clicked)
        self.cancel_button.clicked.connect(controller.cancel)
        self.reveal_button.clicked.connect(self._on_reveal_clicked)
        self.lmstudio_button.clicked.connect(self._on_lmstudio_clicked)
        self.ollama_button.clicked.connect(self._on_ollama_clicked)
        self.handoff_name_edit.textChanged.connect(lambda _text: self._update_buttons())
        controller.handed_off.connect(self._on_handed_off)
        controller.handoff_failed.connect(self._on_handoff_failed)
        controller.progressed.connect(self._on_progressed)
        controller.check_reported.connect(self._on_check_reported)
        controller.export_finished.connect(self._on_export_finished)
        controller.failed.connect(self._on_failed)
        controller.cancelled.connect(self._on_cancelled)
        controller.busy_changed.connect(lambda _busy: self._update_buttons())
        runs.runs_listed.connect(self._on_runs_listed)
        self._on_format_chosen()
        self._update_buttons()

    # -- public ------------------------------------------------------------------------
    def select_run(self, run_dir: str, adapter: str = "final") -> None:
        """Choose a run (and adapter) in the pickers, now or when the run list next arrives."""
        self.picker.select(run_dir, adapter)

    def showEvent(self, event) -> None:
        if not self.picker.runs:
            self.runs_controller.refresh()
        super().showEvent(event)

    # -- helpers -------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        busy = self.controller.is_busy()
        ready = self.picker.chosen_adapter() is not None and (not self.push_box.isChecked() or "/" in self.repo_edit.text())
        self.export_button.setEnabled(not busy and ready)
        self.cancel_button.setEnabled(busy)
        for widget in (self.run_box, self.adapter_box, self.format_box, self.quantize_box, self.out_edit,
                       self.push_box, self.repo_edit, self.public_box, self.browse_button):
            widget.setEnabled(not busy)
        self.repo_edit.setEnabled(not busy and self.push_box.isChecked())
        self.public_box.setEnabled(not busy and self.push_box.isChecked())
        takes = handoff_formats()
        named = bool(self.handoff_name_edit.text().strip())
        self.lmstudio_button.setEnabled(not busy and named and self._exported_format in takes["lmstudio"])
        self.ollama_button.setEnabled(not busy and named and self._exported_format in takes["ollama"])
        self.handoff_name_edit.setEnabled(not busy and bool(self._exported_format))

    def _show_verdict(self, passed: bool, text: str) -> None:
        c = ThemeManager.colors()
        color = c["series_4"] if passed else c["danger"]
        mark = "✓" if passed else "✗"
        self.verdict.setText(f"<span style='color:{color}; font-size:15px; font-weight:600'>{mark} "
                             f"{html.escape(text)}</span>")
        self.verdict.setVisible(True)

    # -- slots ---------------------------------------------------------------------------
    def _on_runs_listed(self, runs: list) -> None:
        self.picker.set_runs(runs)

    def _on_format_chosen(self) -> None:
        self.quantize_box.clear()
        for label, bits in quantize_choices(self.format_box.currentData()):
            self.quantize_box.addItem(label, bits)
        self.quantize_box.setEnabled(self.quantize_box.count() > 1)

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export into a new folder inside…")
        if folder:
            adapter = self.picker.chosen_adapter() or "export"
            self.out_edit.setText(str(Path(folder) / default_out_dir(adapter, self.format_box.currentData(),
                                                                     self.quantize_box.currentData()).name))

    def _on_export_clicked(self) -> None:
        adapter = self.picker.chosen_adapter()
        if adapter is None:
            return
        fmt, quantize = self.format_box.currentData(), self.quantize_box.currentData()
        self.out_dir = self.out_edit.text().strip() or str(default_out_dir(adapter, fmt, quantize))
        self.checks_table.setRowCount(0)
        self.verdict.setVisible(False)
        self.files_label.setText("")
        self.reveal_button.setEnabled(False)
        self._exported_format = ""
        self.handoff_label.setText("")
        self.handoff_command.setVisible(False)
        self.progress.setRange(0, 0)  # busy until the first stage says how many there are
        self.stage_label.setText(f"Exporting to {self.out_dir}…")
        push = self.repo_edit.text().strip() if self.push_box.isChecked() else None
        self.controller.export(adapter, self.out_dir, fmt, quantize, push, private=not self.public_box.isChecked())

    def _on_progressed(self, message: str, done: int, total: int) -> None:
        if total > 0:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        if message != "done":
            self.stage_label.setText(message[:1].upper() + message[1:] + "…")

    def _on_check_reported(self, check: dict) -> None:
        c = ThemeManager.colors()
        row = self.checks_table.rowCount()
        self.checks_table.insertRow(row)
        not_run = check.get("status") == "not run"
        result = "not run" if not_run else ("passed" if check["passed"] else "FAILED")
        cells = [check["check"], result] + (["—"] * 4 if not_run else [
            f"{check['top1_agreement']:.1%}", _figure(check["max_abs_logit_diff"]),
            _figure(check["mean_abs_logit_diff"]), _figure(check["adapter_effect"])])
        for column, text in enumerate(cells):
            item = QTableWidgetItem(text)
            if column == 1:
                from PySide6.QtGui import QColor

                item.setForeground(QColor(c["secondary"] if not_run else c["series_4"] if check["passed"] else c["danger"]))
            tip = "; ".join(check.get("problems") or ())
            if tip:
                item.setToolTip(tip)
            self.checks_table.setItem(row, column, item)

    def _on_export_finished(self, result) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        checked = [c for c in result.checks if c.status != "not run"]
        worst = min((c.top1_agreement for c in checked), default=None)
        figures = f" (top-1 agreement {worst:.1%} on {checked[0].positions} positions)" if worst is not None else ""
        self._show_verdict(result.passed, f"Verified: the export reproduces base + adapter{figures}."
                           if result.passed else "The export failed its check.")
        self.stage_label.setText(f"Exported to {result.out_dir}"
                                 + (f" and pushed to {result.pushed_url}" if result.pushed_url else ""))
        self.files_label.setText("Files: " + ", ".join(result.files)
                                 + ("".join(f"\nNote: {note}" for note in result.notes)))
        self.out_dir = str(result.out_dir)
        self.reveal_button.setEnabled(True)
        self._exported_format = result.format
        self.handoff_name_edit.setText(Path(result.out_dir).name)
        takes = handoff_formats()
        if result.format not in takes["lmstudio"]:
            self.handoff_label.setText("LM Studio and Ollama run GGUF files (LM Studio also MLX folders): "
                                       "export as GGUF to send it there.")
        self._update_buttons()

    def _on_failed(self, message: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        failed_check = any(not c["passed"] for c in self.controller.checks)
        self._show_verdict(False, "The export failed its check, so nothing was written." if failed_check
                           else "The export failed.")
        self.stage_label.setText(message)

    def _on_lmstudio_clicked(self) -> None:
        self.handoff_command.setVisible(False)
        self.handoff_label.setText("Copying into LM Studio's models folder…")
        self.controller.send_to_lmstudio(self.out_dir, self.handoff_name_edit.text().strip())

    def _on_ollama_clicked(self) -> None:
        self.handoff_command.setVisible(False)
        self.handoff_label.setText("Running ollama create…")
        self.controller.send_to_ollama(self.out_dir, self.handoff_name_edit.text().strip())

    def _on_handed_off(self, outcome: HandOff) -> None:
        c = ThemeManager.colors()
        color = c["series_4"] if outcome.done else c["secondary"]
        mark = "✓ " if outcome.done else ""
        first = outcome.message.split("\n", 1)[0]
        self.handoff_label.setText(f"<span style='color:{color}'>{mark}{html.escape(first)}</span>")
        self.handoff_command.setText("" if outcome.done else outcome.command)
        self.handoff_command.setVisible(not outcome.done and bool(outcome.command))

    def _on_handoff_failed(self, message: str) -> None:
        c = ThemeManager.colors()
        self.handoff_command.setVisible(False)
        self.handoff_label.setText(f"<span style='color:{c['danger']}'>✗ {html.escape(message)}</span>")

    def _on_cancelled(self) -> None:
        self.progress.setRange(0, 1)  # not left spinning, nor at the stage it stopped in
        self.progress.setValue(0)
        self.stage_label.setText("Export cancelled; nothing was written.")

    def _on_reveal_clicked(self) -> None:
        if self.out_dir:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.out_dir))
