"""Models: choose the model to fine-tune.

The local list (the embedded demo model first, imported GGUF conversions,
folders, the Hub cache), "Open folder…", "Import GGUF…" with progress, and the
Hugging Face Hub: search as you type (debounced 300 ms, in a worker), results
with an MLX badge, a details pane, download with progress and cancel. "Will it
fit" shows the engine's estimate of the memory training the highlighted model (or
the selected one) needs with the Train page's settings, against this computer's
memory. The page only talks to its :class:`ModelsController`.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox, QProgressBar,
    QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from app.controllers.models import FitEstimate, ModelEntry, ModelsController
from app.theme import ThemeManager
from app.widgets.common import Card, human_bytes, human_count, memory_text, muted, notice

TITLE = "Models"
SUBTITLE = "Pick the base model to fine-tune: the built-in demo model, a folder, a GGUF file or the Hugging Face Hub."
SEARCH_DEBOUNCE_MS = 300
# "Will it fit" waits this long after the last change. The first estimate waits longer: it
# imports mlx.core in a worker (a GIL-holding dlopen), which must not delay the window's
# first paint, even on a busy machine.
FIT_DEBOUNCE_MS = 300
FIRST_FIT_DELAY_MS = 1500
CANCELLED_WORDS = {
    "import": "Import cancelled; nothing was written.",
    "download": "Download cancelled.",
}
FIT_WORDS = {  # verdict -> (colour, what to say, what to do)
    "fits": ("series_4", "fits", ""),
    "tight": ("series_2", "over the limit", "raise the memory limit (Train page, advanced), or lower max batch "
                                            "tokens or the max sequence length"),
    "too big": ("danger", "will not fit", "lower max batch tokens or the max sequence length, turn on gradient "
                                         "checkpointing, or pick a smaller or quantised model"),
}


def _item(text: str, data=None, align_right: bool = False) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if data is not None:
        item.setData(Qt.ItemDataRole.UserRole, data)
    if align_right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


class ModelsPage(QWidget):
    def __init__(self, controller: ModelsController, settings=None, parent: QWidget | None = None) -> None:
        """``settings``: returns the Train page's TrainConfig, for "will it fit" (None: the defaults)."""
        super().__init__(parent)
        self.controller = controller
        self._settings = settings
        self._last_fit: FitEstimate | None = None
        self._entries: list[ModelEntry] = []
        self._results: list = []

        # -- local models ----------------------------------------------------------
        local = Card("On this computer")
        self.local_table = QTableWidget(0, 3)
        self.local_table.setHorizontalHeaderLabels(["Model", "Size", "Source"])
        self._setup_table(self.local_table, stretch=0)
        local.body.addWidget(self.local_table)
        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open folder…")
        self.import_button = QPushButton("Import GGUF…")
        self.use_button = QPushButton("Use this model")
        self.use_button.setObjectName("primary")
        self.delete_button = QPushButton("Delete from cache")
        self.delete_button.setObjectName("danger")
        for b in (self.open_button, self.import_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        buttons.addWidget(self.use_button)
        local.body.addLayout(buttons)
        self.selected_label = muted()
        local.body.addWidget(self.selected_label)
        self.fit_label = QLabel()
        self.fit_label.setWordWrap(True)
        local.body.addWidget(self.fit_label)

        # -- hub ---------------------------------------------------------------------
        hub = Card("Hugging Face Hub")
        self.search_box = QLineEdit()
        self.search_box.setPlaceholderText("Search models, e.g. “qwen 0.5b instruct”")
        self.search_box.setClearButtonEnabled(True)
        hub.body.addWidget(self.search_box)
        self.hub_note = notice("Hub search arrives with the engine's Hub module; meanwhile open a "
                               "downloaded folder or import a GGUF file.")
        hub.body.addWidget(self.hub_note)
        self.results_table = QTableWidget(0, 6)
        self.results_table.setHorizontalHeaderLabels(["Repository", "Params", "Size", "License", "Downloads",
                                                      "Format"])
        self._setup_table(self.results_table, stretch=0)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setMinimumWidth(220)
        self.details.setText("<span style='color:gray'>Select a result to see its details.</span>")
        split = QSplitter()
        split.addWidget(self.results_table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        hub.body.addWidget(split, 1)
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress_label = muted()
        self.download_button = QPushButton("Download")
        self.download_button.setObjectName("primary")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self._offline_note = ""
        self._job_note = ""  # what the last long job's Cancel left ("Import cancelled…")
        self.retry_button = QPushButton("Retry")
        self.retry_button.setToolTip("Search the Hub again")
        self.retry_button.setVisible(False)
        row.addWidget(self.progress_label, 1)
        row.addWidget(self.retry_button)
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        row.addWidget(self.download_button)
        hub.body.addLayout(row)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(local)
        splitter.addWidget(hub)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(SEARCH_DEBOUNCE_MS)
        self._fit_timer = QTimer(self)
        self._fit_timer.setSingleShot(True)
        self._fit_timer.setInterval(FIRST_FIT_DELAY_MS)
        self._fit_timer.timeout.connect(self._estimate_fit)

        # -- wiring --------------------------------------------------------------------
        self.open_button.clicked.connect(self._on_open_clicked)
        self.import_button.clicked.connect(self._on_import_clicked)
        self.use_button.clicked.connect(self._on_use_clicked)
        self.delete_button.clicked.connect(self._on_delete_clicked)
        self.local_table.itemSelectionChanged.connect(self._update_buttons)
        self.local_table.itemSelectionChanged.connect(self._fit_timer.start)
        self.local_table.itemDoubleClicked.connect(lambda _item: self._on_use_clicked())
        self.search_box.textChanged.connect(lambda _text: self._debounce.start())
        self._debounce.timeout.connect(self._on_search_due)
        self.results_table.itemSelectionChanged.connect(self._on_result_selected)
        self.download_button.clicked.connect(self._on_download_clicked)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        c = controller
        c.models_listed.connect(self._on_models_listed)
        c.progressed.connect(self._on_progressed)
        c.import_planned.connect(self._on_import_planned)
        c.search_finished.connect(self._on_search_finished)
        c.search_offline.connect(self._on_search_offline)
        self.retry_button.clicked.connect(self._on_search_due)
        c.details_loaded.connect(self._on_details_loaded)
        c.busy_changed.connect(self._on_busy_changed)
        c.cancelled.connect(self._on_cancelled)
        c.fit_estimated.connect(self._on_fit_estimated)
        c.state.data_lengths_changed.connect(self._fit_timer.start)
        c.state.model_selected.connect(lambda _spec: (self._show_selected(), self._highlight_selected(),
                                                      self._fit_timer.start()))

        hub_ready = c.hub_available
        self.search_box.setEnabled(hub_ready)
        self.hub_note.setVisible(not hub_ready)
        self.results_table.setVisible(hub_ready)
        self.details.setVisible(hub_ready)
        self.download_button.setVisible(hub_ready)
        self.download_button.setEnabled(False)
        self._show_selected()
        self._update_buttons()
        c.refresh()

    def showEvent(self, event) -> None:
        # Other pages may have added models (the demo is imported on first use), and the Train
        # page's settings, which "will it fit" uses, may have changed.
        if not self.controller.is_busy("list"):
            self.controller.refresh()
        self._fit_timer.start()
        super().showEvent(event)

    @staticmethod
    def _setup_table(table: QTableWidget, stretch: int) -> None:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.verticalHeader().setVisible(False)
        table.setShowGrid(False)
        table.setAlternatingRowColors(True)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(stretch, QHeaderView.ResizeMode.Stretch)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

    def _selected_entry(self) -> ModelEntry | None:
        rows = self.local_table.selectionModel().selectedRows()
        return self._entries[rows[0].row()] if rows else None

    def _show_selected(self) -> None:
        self.selected_label.setText(f"Selected for training: <b>{self.controller.state.model_label}</b>")

    def _estimate_fit(self) -> None:
        """Ask for the estimate of the highlighted model, or of the one selected for training."""
        from mlx_lora.errors import UserError

        self._fit_timer.setInterval(FIT_DEBOUNCE_MS)

        entry = self._selected_entry()
        spec = entry.spec if entry is not None else self.controller.state.model
        try:
            config = self._settings() if self._settings is not None else None
        except UserError:  # the Train form holds an invalid combination: estimate with the defaults
            config = None
        self.fit_label.setText("<span style='color:gray'>Will it fit? Estimating…</span>")
        self.controller.estimate_fit(spec, config)

    def _update_buttons(self) -> None:
        entry = self._selected_entry()
        self.use_button.setEnabled(entry is not None)
        self.delete_button.setVisible(entry is not None and entry.source == "hub")

    # -- slots ---------------------------------------------------------------------------
    def _on_models_listed(self, entries: list) -> None:
        self._entries = entries
        self.local_table.setRowCount(len(entries))
        for row, entry in enumerate(entries):
            self.local_table.setItem(row, 0, _item(entry.name))
            self.local_table.setItem(row, 1, _item(human_bytes(entry.size_bytes), align_right=True))
            self.local_table.setItem(row, 2, _item(entry.note or entry.source))
        if not self.local_table.selectionModel().selectedRows():  # at start: the model selected for training
            self._highlight_selected()
        self._update_buttons()

    def _highlight_selected(self) -> None:
        """Highlight the row of the model selected for training (none when it is not listed)."""
        chosen = next((row for row, e in enumerate(self._entries) if e.spec == self.controller.state.model), None)
        if chosen is None:
            self.local_table.clearSelection()
        else:
            self.local_table.selectRow(chosen)

    def _on_open_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a model folder (config.json + safetensors)")
        if folder:
            self.controller.open_folder(folder)

    def _on_import_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", "", "GGUF models (*.gguf)")
        if path:
            self.progress_label.setText("Reading the GGUF's header…")
            self.controller.plan_import(path)

    def _on_import_planned(self, path: str, plan) -> None:
        """A file MLX cannot hold (K-quants…) is dequantised: say how much memory first, and ask."""
        self.progress_label.setText(plan.summary)
        if plan.must_dequantize:
            answer = QMessageBox.question(self, "Import a GGUF model", f"{plan.summary}.\n\nImport it?")
            if answer != QMessageBox.StandardButton.Yes:
                self.progress_label.setText("Import cancelled.")
                return
        self.controller.import_gguf(path)

    def _on_use_clicked(self) -> None:
        entry = self._selected_entry()
        if entry is not None:
            self.controller.select(entry)

    def _on_delete_clicked(self) -> None:
        entry = self._selected_entry()
        if entry is not None and entry.source == "hub":
            self.controller.delete_cached(entry.spec)

    def _on_search_due(self) -> None:
        query = self.search_box.text().strip()
        if len(query) >= 2:
            self.retry_button.setVisible(False)
            self._offline_note = ""
            self.progress_label.setText(f"Searching “{query}”…")
            self.progress_label.setToolTip("")
            self.controller.search(query)

    def _on_search_offline(self, query: str, why: str) -> None:
        if query != self.search_box.text().strip():
            return
        self._offline_note = "offline — local models and the demo still work"
        self.progress_label.setText(self._offline_note)
        self.progress_label.setToolTip(why)
        self.retry_button.setVisible(True)

    def _on_search_finished(self, query: str, results: list) -> None:
        if query != self.search_box.text().strip():
            return  # an older search finishing late
        self._results = results
        self.progress_label.setText(f"{len(results)} models" if results else "No models found")
        self.results_table.setRowCount(len(results))
        for row, r in enumerate(results):
            self.results_table.setItem(row, 0, _item(r.repo_id + ("  🔒" if r.gated else "")))
            self.results_table.setItem(row, 1, _item(human_count(r.params), align_right=True))
            self.results_table.setItem(row, 2, _item(human_bytes(r.size_bytes or 0), align_right=True))
            self.results_table.setItem(row, 3, _item(r.license or "—"))
            self.results_table.setItem(row, 4, _item(human_count(r.downloads), align_right=True))
            self.results_table.setItem(row, 5, _item("MLX" if r.is_mlx else ""))
            if r.is_mlx:
                self.results_table.item(row, 5).setForeground(QColor(ThemeManager.colors()["accent"]))

    def _selected_result(self):
        rows = self.results_table.selectionModel().selectedRows()
        return self._results[rows[0].row()] if rows else None

    def _on_result_selected(self) -> None:
        result = self._selected_result()
        self.download_button.setEnabled(False)  # until the details say the repo can be used
        if result is not None:
            self.details.setText(f"<b>{html.escape(result.repo_id)}</b><br>Loading details…")
            self.controller.load_details(result.repo_id)

    def _on_details_loaded(self, details) -> None:
        if details.repo_id != getattr(self._selected_result(), "repo_id", None):
            return  # the user has moved on to another result
        rows = [
            ("License", details.license or "not stated"),
            ("Parameters", human_count(details.params)),
            ("Download", human_bytes(details.download_bytes)),
            ("Format", "MLX" if details.is_mlx else "safetensors (converted when loaded)"),
            ("Access", "gated: accept the terms on the Hub and add a token in Settings" if details.gated else "open"),
        ]
        text = [f"<b>{html.escape(details.repo_id)}</b><table cellspacing=3>"]
        text += [f"<tr><td style='color:gray'>{k}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows]
        text.append("</table>")
        if details.problems:
            text.append("<p><b>Cannot be used:</b><br>" + "<br>".join(html.escape(p) for p in details.problems) + "</p>")
        if details.card_summary:
            text.append(f"<p>{html.escape(details.card_summary)}</p>")
        self.details.setText("".join(text))
        self.download_button.setEnabled(not details.problems)

    def _on_download_clicked(self) -> None:
        result = self._selected_result()
        if result is not None:
            self.controller.download(result.repo_id)

    def _on_cancel_clicked(self) -> None:
        for kind in ("download", "import"):
            self.controller.cancel(kind)

    def _on_cancelled(self, kind: str) -> None:
        if kind in CANCELLED_WORDS:
            self._job_note = CANCELLED_WORDS[kind]
            self.progress_label.setText(self._job_note)

    def _on_progressed(self, message: str, done: float, total: float) -> None:
        self._job_note = ""
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.progress_label.setText(message)
        if total > 0:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * done / total))
        else:
            self.progress.setRange(0, 0)  # busy indicator

    def apply_theme(self) -> None:
        if self._last_fit is not None:
            self._on_fit_estimated(self._last_fit)  # the verdict's colour follows the theme

    def _on_fit_estimated(self, estimate: FitEstimate) -> None:
        self._last_fit = estimate
        if estimate.verdict == "unknown":
            why = estimate.problem or "this computer's memory is unknown"
            self.fit_label.setText(f"<b>Will it fit?</b> No estimate: {html.escape(why)}")
            self.fit_label.setToolTip("")
            return
        color, verdict, advice = FIT_WORDS[estimate.verdict]
        rows, length = estimate.batch
        where = "the widest pass of this dataset" if estimate.from_data else "the Train page's batch × max length"
        text = (f"<b>Will it fit?</b> Training needs about <b>{memory_text(estimate.needed_bytes)}</b> "
                f"({rows} × {length:,} tokens per pass: {where}) of "
                f"the run's memory limit of {memory_text(estimate.available_bytes)} "
                f"({html.escape(estimate.limit_source or 'this computer')}): "
                f"<b style='color:{ThemeManager.colors()[color]}'>{verdict}</b>")
        self.fit_label.setText(text + (f". {advice[:1].upper()}{advice[1:]}." if advice else "."))
        self.fit_label.setToolTip(f"Estimate for {estimate.model}: {estimate.breakdown}")

    def _on_busy_changed(self, busy: bool) -> None:
        long_job = any(self.controller.is_busy(k) for k in ("download", "import"))
        self.progress.setVisible(long_job)
        self.cancel_button.setVisible(long_job)
        if not busy:
            # a cancel's note, or being offline, outlasts the job that found it
            self.progress_label.setText(self._job_note or self._offline_note)
