"""Data: open a JSONL file or a dataset folder (button or drag and drop) and see,
before any training, what the model will learn from it.

- every problem as ``file line: reason``; clicking one shows that line;
- token statistics with the selected model's tokenizer, and a histogram of
  example lengths with the max-sequence-length cut-off;
- each example rendered through the chat template, trained tokens highlighted
  and masked tokens greyed (for preference data: the chosen and the rejected
  answer of the pair, one above the other);
- the train/valid/test split the trainer will make (the engine's own split, so a
  folder's valid.jsonl counts as it is).

The split, seed, max length and prompt-masking controls edit the app's one training
config (``AppState.config``), the same one the Train page's form shows and starts.
"""

from __future__ import annotations

import html
import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QListWidget,
    QListWidgetItem, QPlainTextEdit, QPushButton, QSpinBox, QSplitter, QTextEdit, QVBoxLayout, QWidget,
)

from app.controllers.data import DataController
from app.theme import ThemeManager
from app.widgets.common import Card, LazyWidget, MetricTile, muted
from mlx_lora.config import field_info

TITLE = "Data"
SUBTITLE = "Check a dataset line by line and see exactly which tokens the model is trained on."


def _monospace_family() -> str:
    from PySide6.QtGui import QFontDatabase

    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont).family()


def spans_to_html(spans: list, colors: dict[str, str]) -> str:
    """Trained text on a green tint, masked text grey; whitespace and newlines kept."""
    parts = []
    for span in spans:
        text = html.escape(span.text)
        if span.trained:
            parts.append(f"<span style='background:{colors['trained_bg']}; color:{colors['text']}'>{text}</span>")
        else:
            parts.append(f"<span style='color:{colors['masked_fg']}'>{text}</span>")
    return (f"<pre style='white-space:pre-wrap; font-family:\"{_monospace_family()}\"; font-size:11pt'>"
            + "".join(parts) + "</pre>")


def pair_to_html(chosen: list, rejected: list, colors: dict[str, str]) -> str:
    """The two sides of a preference pair, each under a heading."""
    def heading(text: str, color: str) -> str:
        return f"<p style='margin:6px 0 0 0'><b style='color:{color}'>{text}</b></p>"

    return (heading("Chosen", colors["series_4"]) + spans_to_html(chosen, colors)
            + heading("Rejected", colors["danger"]) + spans_to_html(rejected, colors))


def prompt_to_html(spans: list, fields: dict, colors: dict[str, str]) -> str:
    """A GRPO prompt as the model sees it, then the fields its rewards read (answer, …)."""
    rows = "".join(f"<tr><td><b>{html.escape(str(k))}</b></td><td>&nbsp;{html.escape(json.dumps(v, ensure_ascii=False))}"
                   "</td></tr>" for k, v in fields.items())
    note = (f"<p style='margin:6px 0 0 0'><b style='color:{colors['series_1']}'>Reward fields</b></p><table>{rows}</table>"
            if rows else f"<p style='color:{colors['masked_fg']}'>No reward fields (only the prompt).</p>")
    return spans_to_html(spans, colors) + note


def _make_histogram():
    from app.widgets.charts import LengthHistogram

    return LengthHistogram()


class DataPage(QWidget):
    def __init__(self, controller: DataController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setAcceptDrops(True)
        self._spans: list = []
        self._pair: tuple[list, list] | None = None  # (chosen, rejected) spans of a preference pair

        # -- source and problems (left) -----------------------------------------------
        source = Card("Dataset")
        row = QHBoxLayout()
        self.open_file_button = QPushButton("Open file…")
        self.open_folder_button = QPushButton("Open folder…")
        row.addWidget(self.open_file_button)
        row.addWidget(self.open_folder_button)
        row.addStretch(1)
        source.body.addLayout(row)
        self.summary = muted("Drop a .jsonl file or a folder with train.jsonl here.")
        source.body.addWidget(self.summary)
        problems = Card("Problems")
        self.problem_list = QListWidget()
        self.problem_list.setWordWrap(True)
        self.problem_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.line_view = QPlainTextEdit()
        self.line_view.setReadOnly(True)
        self.line_view.setPlaceholderText("Click a problem to see its line.")
        self.line_view.setMaximumHeight(90)
        problems.body.addWidget(self.problem_list, 1)
        problems.body.addWidget(self.line_view)
        split = Card("Split")
        form = QFormLayout()
        def ratio_box(name: str) -> QDoubleSpinBox:
            info = field_info(name)
            box = QDoubleSpinBox(suffix=" %", decimals=0, minimum=info["min"] * 100, maximum=info["max"] * 100)
            box.setToolTip(info["help"])
            return box

        self.valid_ratio = ratio_box("valid_ratio")
        self.test_ratio = ratio_box("test_ratio")
        self.seed = QSpinBox(minimum=field_info("seed")["min"], maximum=field_info("seed")["max"])
        self.seed.setToolTip(field_info("seed")["help"])
        form.addRow("Validation", self.valid_ratio)
        form.addRow("Test", self.test_ratio)
        form.addRow("Seed", self.seed)
        split.body.addLayout(form)
        self.split_label = muted()
        split.body.addWidget(self.split_label)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(source)
        left_layout.addWidget(problems, 1)
        left_layout.addWidget(split)

        # -- statistics and preview (right) --------------------------------------------
        stats = Card("Token statistics")
        tiles = QGridLayout()
        tiles.setHorizontalSpacing(18)
        self.tiles = {key: MetricTile(name) for key, name in (
            ("examples", "examples"), ("tokens", "tokens (trained)"), ("p50", "median length"),
            ("p90", "90th percentile"), ("max", "longest"), ("over", "over the limit"))}
        for k, tile in enumerate(self.tiles.values()):
            tiles.addWidget(tile, 0, k)
        stats.body.addLayout(tiles)
        controls = QHBoxLayout()
        length = field_info("max_seq_length")
        self.max_length = QSpinBox(minimum=length["min"], maximum=length["max"], singleStep=256)
        self.max_length.setToolTip(length["help"])
        self.mask_prompt = QCheckBox("Train on replies only (mask prompts)")
        self.mask_prompt.setToolTip(field_info("mask_prompt")["help"])
        controls.addWidget(QLabel("Max sequence length"))
        controls.addWidget(self.max_length)
        controls.addSpacing(16)
        controls.addWidget(self.mask_prompt)
        controls.addStretch(1)
        stats.body.addLayout(controls)
        self._stats = None
        self.histogram = LazyWidget(_make_histogram, on_built=lambda _h: self._draw_histogram())
        self.histogram.setMinimumHeight(170)
        stats.body.addWidget(self.histogram, 1)
        self.warnings = muted()
        stats.body.addWidget(self.warnings)
        preview = Card("Preview — highlighted tokens are trained, grey ones are masked")
        nav = QHBoxLayout()
        self.example_index = QSpinBox(minimum=1, maximum=1, prefix="Example ")
        self.preview_info = muted()
        nav.addWidget(self.example_index)
        nav.addWidget(self.preview_info, 1)
        preview.body.addLayout(nav)
        self.preview_view = QTextEdit()
        self.preview_view.setReadOnly(True)
        preview.body.addWidget(self.preview_view, 1)
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(stats)
        right.addWidget(preview)

        main = QSplitter()
        main.addWidget(left)
        main.addWidget(right)
        main.setStretchFactor(1, 2)
        main.setSizes([340, 700])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(main)

        # -- wiring --------------------------------------------------------------------
        self.open_file_button.clicked.connect(self._on_open_file_clicked)
        self.open_folder_button.clicked.connect(self._on_open_folder_clicked)
        self.problem_list.currentItemChanged.connect(self._on_problem_chosen)
        self._show_settings(controller.state.config)
        for box in (self.valid_ratio, self.test_ratio, self.seed):
            box.valueChanged.connect(self._on_split_edited)
        self.max_length.editingFinished.connect(self._on_max_length_changed)
        self.mask_prompt.toggled.connect(self._on_mask_prompt_toggled)
        self.example_index.valueChanged.connect(lambda n: controller.render_preview(n - 1))
        controller.dataset_checked.connect(self._on_dataset_checked)
        controller.stats_computed.connect(self._on_stats_computed)
        controller.preview_rendered.connect(self._on_preview_rendered)
        controller.pair_preview_rendered.connect(self._on_pair_preview_rendered)
        controller.prompt_preview_rendered.connect(self._on_prompt_preview_rendered)
        controller.tokenizer_loading.connect(
            lambda label: self.preview_info.setText(f"Loading the tokenizer of {label}…"))
        controller.failed.connect(self._on_failed)
        controller.state.config_changed.connect(self._show_settings)

    def open(self, path: str) -> None:
        self.summary.setText(f"Checking {path}…")
        self.problem_list.clear()
        self.line_view.clear()
        self.controller.open(path)

    def apply_theme(self) -> None:
        if self.histogram.widget is not None:
            self.histogram.widget.apply_theme()
        if getattr(self, "_prompt", None):
            self.preview_view.setHtml(prompt_to_html(*self._prompt, ThemeManager.colors()))
        elif self._spans:
            self.preview_view.setHtml(spans_to_html(self._spans, ThemeManager.colors()))
        elif self._pair:
            self.preview_view.setHtml(pair_to_html(*self._pair, ThemeManager.colors()))

    # -- drag and drop -------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open(urls[0])
            event.acceptProposedAction()

    # -- slots ---------------------------------------------------------------------------
    def _on_open_file_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset", "", "JSON Lines (*.jsonl);;All files (*)")
        if path:
            self.open(path)

    def _on_open_folder_clicked(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a dataset folder (train.jsonl, valid.jsonl…)")
        if path:
            self.open(path)

    def _on_dataset_checked(self, report, records: dict) -> None:
        state = "ready" if report.ok else f"{len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}"
        files = ", ".join(f"{r.file.rsplit('/', 1)[-1]} ({r.count})" for r in report.files)
        self.summary.setText(f"<b>{self.controller.display_name(report.path)}</b> — {report.count} "
                             f"{report.format} examples, {state}<br>{files}"
                             + "".join(f"<br>{html.escape(n)}" for n in report.notes))
        self.problem_list.clear()
        for problem in report.problems:
            name = problem.file.rsplit("/", 1)[-1]
            item = QListWidgetItem(f"{name} {problem.line}: {problem.reason}")
            item.setData(Qt.ItemDataRole.UserRole, (problem.file, problem.line))
            self.problem_list.addItem(item)
        if not report.problems:
            self.problem_list.addItem("No problems found.")
        self.example_index.setMaximum(max(1, len(self.controller.training_records)))
        self._on_split_changed()

    def _on_problem_chosen(self, item: QListWidgetItem | None, _previous=None) -> None:
        where = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if where:
            file, line = where
            self.line_view.setPlainText(self.controller.line_text(file, line) if line else "")

    def _show_settings(self, config) -> None:
        """The one config's values in this page's controls (without echoing them back)."""
        data = config.data
        for box, value in ((self.valid_ratio, round(data.valid_ratio * 100)),
                           (self.test_ratio, round(data.test_ratio * 100)), (self.seed, config.run.seed),
                           (self.max_length, data.max_seq_length)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.mask_prompt.blockSignals(True)
        self.mask_prompt.setChecked(data.mask_prompt)
        self.mask_prompt.blockSignals(False)
        self._on_split_changed()

    def _edit(self, **settings) -> bool:
        from mlx_lora.errors import UserError

        try:
            self.controller.update(**settings)
        except UserError as exc:  # the engine names the bad value (e.g. ratios adding up to 1)
            self.split_label.setText(str(exc))
            return False
        return True

    def _on_split_edited(self, *_args) -> None:
        if self._edit(valid_ratio=self.valid_ratio.value() / 100, test_ratio=self.test_ratio.value() / 100,
                      seed=self.seed.value()):
            self._on_split_changed()

    def _on_split_changed(self, *_args) -> None:
        c = self.controller
        own = {name: c.has_own_split(name) for name in ("valid.jsonl", "test.jsonl")}
        self.valid_ratio.setEnabled(not own["valid.jsonl"])
        self.test_ratio.setEnabled(not own["test.jsonl"])
        if not c.training_records:
            self.split_label.setText("")
            return
        try:
            train, valid, test = c.split_sizes()
        except Exception as exc:  # noqa: BLE001 — the engine explains bad ratios
            self.split_label.setText(str(exc))
            return
        valid_text = f"validation {valid}" + (" (valid.jsonl)" if own["valid.jsonl"] else "")
        test_text = f"test {test}" + (" (test.jsonl)" if own["test.jsonl"] else "")
        self.split_label.setText(f"train {train} · {valid_text} · {test_text}")

    def _on_max_length_changed(self) -> None:
        if self.max_length.value() != self.controller.max_seq_length:
            self._edit(max_seq_length=self.max_length.value())

    def _on_mask_prompt_toggled(self, checked: bool) -> None:
        self._edit(mask_prompt=checked)  # the controller redraws the statistics and the preview

    def _on_stats_computed(self, stats) -> None:
        t = self.tiles
        t["examples"].set_value(f"{stats.examples:,}")
        t["tokens"].set_value(f"{stats.total_tokens:,} ({stats.trained_tokens:,})")
        t["p50"].set_value(str(stats.p50_length))
        t["p90"].set_value(str(stats.p90_length))
        t["max"].set_value(str(stats.max_length))
        t["over"].set_value(str(stats.over_max_length))
        self._stats = stats
        self._draw_histogram()
        warnings = []
        if stats.over_max_length:
            warnings.append(f"{stats.over_max_length} examples are longer than {stats.max_seq_length} tokens: "
                            f"{stats.truncated_tokens:,} tokens would be cut.")
        if stats.missing_eos:
            warnings.append(f"{stats.missing_eos} examples have a reply without an end-of-turn token.")
        if stats.duplicates:
            warnings.append(f"{stats.duplicates} examples repeat an earlier one.")
        self.warnings.setText("⚠ " + " ".join(warnings) if warnings else "")

    def _draw_histogram(self) -> None:
        if self.histogram.widget is not None and self._stats is not None:
            self.histogram.widget.set_lengths(self._stats.lengths, self._stats.max_seq_length)

    def _on_preview_rendered(self, index: int, spans: list) -> None:
        if index != self.example_index.value() - 1:
            return
        self._spans, self._pair, self._prompt = spans, None, None
        trained = sum(s.token_count for s in spans if s.trained)
        total = sum(s.token_count for s in spans)
        self.preview_info.setText(f"{total} tokens, {trained} trained")
        self.preview_view.setHtml(spans_to_html(spans, ThemeManager.colors()))

    def _on_pair_preview_rendered(self, index: int, chosen: list, rejected: list) -> None:
        if index != self.example_index.value() - 1:
            return
        self._spans, self._pair, self._prompt = [], (chosen, rejected), None

        def counts(spans) -> str:
            return (f"{sum(s.token_count for s in spans)} tokens, "
                    f"{sum(s.token_count for s in spans if s.trained)} trained")

        self.preview_info.setText(f"Preference pair: chosen {counts(chosen)} · rejected {counts(rejected)}")
        self.preview_view.setHtml(pair_to_html(chosen, rejected, ThemeManager.colors()))

    def _on_prompt_preview_rendered(self, index: int, spans: list, fields: dict) -> None:
        if index != self.example_index.value() - 1:
            return
        self._spans, self._pair, self._prompt = [], None, (spans, fields)
        total = sum(s.token_count for s in spans)
        self.preview_info.setText(f"Prompt for GRPO: {total} tokens; the model writes the answers")
        self.preview_view.setHtml(prompt_to_html(spans, fields, ThemeManager.colors()))

    def _on_failed(self, message: str) -> None:
        self.summary.setText(f"<span style='color:{ThemeManager.colors()['danger']}'>{html.escape(message)}</span>")
