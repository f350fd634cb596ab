"""Chat: talk to a run's fine-tuned model, beside the base model on the same prompt.

Pick a run and one of its adapters (the final one, ``best/`` or a checkpoint);
the controller loads the run's base with that adapter in a worker. Answers
stream in token by token; with "Compare with the base" on, the base model
(the same model with the adapter switched off) answers the same prompt first.
Sampling settings are the engine's :class:`ChatSettings`; their starting values
are its defaults.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSpinBox, QSplitter,
    QVBoxLayout, QWidget,
)

from mlx_lora.chat_templates import CHAT_TEMPLATE_LABELS, CHAT_TEMPLATE_NAMES

from app.controllers.chat import BASE, TUNED, ChatController
from app.widgets.common import Card, muted
from app.widgets.config_form import FloatSpinBox
from app.widgets.run_picker import RunAdapterPicker
from app.widgets.transcript import Transcript

TITLE = "Chat"
SUBTITLE = "Try the fine-tuned model beside the base model: both answer at once, each with its live speed."
FLUSH_MS = 33  # tokens are drawn at most ~30 times a second, however fast they come
FINISH_WORDS = {"stop": "end of turn", "length": "reached max tokens", "cancelled": "stopped"}


def _spin(kind, low, high, value, step=None, tip=""):
    box = FloatSpinBox() if kind is float else QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    if step is not None:
        box.setSingleStep(step)
    box.setToolTip(tip)
    return box


class ChatPage(QWidget):
    def __init__(self, controller: ChatController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from mlx_lora.chat.session import ChatSettings  # no MLX import: the module imports mlx lazily

        self.controller = controller
        # Text received but not drawn yet: inserting into the transcript and scrolling costs
        # ~1-15 ms (it grows with the document), so tokens are drawn in batches.
        self._unflushed: dict[str, str] = {}
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(FLUSH_MS)
        self._flush_timer.timeout.connect(self._flush)
        defaults = ChatSettings()

        # -- which model -------------------------------------------------------------
        pick = Card()
        row = QHBoxLayout()
        row.addWidget(QLabel("Run"))
        self.picker = RunAdapterPicker("no finished run yet: train one first", show_loss=True, parent=self)
        self.run_box, self.adapter_box = self.picker.run_box, self.picker.adapter_box
        self.run_box.setMinimumWidth(320)
        row.addWidget(self.run_box, 2)
        row.addWidget(QLabel("Adapter"))
        row.addWidget(self.adapter_box, 1)
        pick.body.addLayout(row)
        row = QHBoxLayout()  # a second row: the run's long name gets the whole first one
        self.load_button = QPushButton("Load")
        self.load_button.setObjectName("primary")
        row.addWidget(self.load_button)
        self.cancel_load_button = QPushButton("Cancel")
        self.cancel_load_button.setVisible(False)  # while a model loads
        row.addWidget(self.cancel_load_button)
        self.refresh_button = QPushButton("Refresh")
        row.addWidget(self.refresh_button)
        self.compare_box = QCheckBox("Compare with the base model")
        self.compare_box.setChecked(True)
        self.compare_box.setToolTip("The base answers the same prompt at the same time: the same model with the "
                                    "adapter switched off for its steps, the same seed")
        row.addWidget(self.compare_box)
        row.addSpacing(12)
        row.addWidget(QLabel("Chat template"))
        self.template_box = QComboBox()
        for name in CHAT_TEMPLATE_NAMES:
            self.template_box.addItem(CHAT_TEMPLATE_LABELS[name], name)
        self.template_box.setToolTip("How the conversation is written for the model: its own template, or a "
                                     "family's for a model whose template is missing or wrong. The same setting "
                                     "as the data preview's and training's (data.chat_template).")
        row.addWidget(self.template_box)
        row.addStretch(1)
        pick.body.addLayout(row)
        self.status = muted("No model loaded. Pick a run and Load it.")
        pick.body.addWidget(self.status)

        # -- transcripts -----------------------------------------------------------------
        self.transcripts = {BASE: Transcript("Base model"), TUNED: Transcript("Fine-tuned")}
        self.speed_labels = {side: muted("") for side in (BASE, TUNED)}  # live "n tokens · x tokens/s"
        for label in self.speed_labels.values():
            label.setWordWrap(False)
        self.panes: dict[str, QWidget] = {}
        panes = QSplitter()
        for side, title in ((BASE, "Base model"), (TUNED, "Fine-tuned")):
            pane = QWidget()
            column = QVBoxLayout(pane)
            column.setContentsMargins(0, 0, 0, 0)
            header = QHBoxLayout()
            header.addWidget(QLabel(f"<b>{title}</b>"))
            header.addStretch(1)
            header.addWidget(self.speed_labels[side])
            column.addLayout(header)
            column.addWidget(self.transcripts[side], 1)
            self.panes[side] = pane
            panes.addWidget(pane)
        self._latest: dict[str, object] = {}  # side -> its last ChatDelta, for the speed labels
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Ask something…  (Ctrl+Enter sends)")
        self.input.setFixedHeight(72)
        buttons = QHBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primary")
        self.stop_button = QPushButton("Stop")
        self.clear_button = QPushButton("Clear")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the last answer (both, when comparing)")
        for button in (self.send_button, self.stop_button, self.clear_button, self.copy_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        talk = QWidget()
        talk_layout = QVBoxLayout(talk)
        talk_layout.setContentsMargins(0, 0, 0, 0)
        talk_layout.addWidget(panes, 1)
        talk_layout.addWidget(self.input)
        talk_layout.addLayout(buttons)

        # -- sampling ------------------------------------------------------------------------
        sampling = Card("Settings")
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("System prompt (optional)")
        self.system_prompt.setFixedHeight(80)
        sampling.body.addWidget(self.system_prompt)
        form = QFormLayout()
        self.temperature = _spin(float, 0.0, 5.0, defaults.temperature, 0.1, "0 picks the likeliest token every time")
        self.top_p = _spin(float, 0.01, 1.0, defaults.top_p, 0.05, "nucleus sampling; 1 keeps every token")
        self.top_k = _spin(int, 0, 100_000, defaults.top_k, None, "0 keeps every token")
        self.min_p = _spin(float, 0.0, 0.99, defaults.min_p, 0.01, "drop tokens below min_p × the top token's probability")
        self.repetition_penalty = _spin(float, 0.1, 3.0, defaults.repetition_penalty, 0.05, "1 turns it off")
        self.max_tokens = _spin(int, 1, 32_768, defaults.max_tokens, 64, "the longest answer, in tokens")
        self.seed = _spin(int, -1, 2**31 - 1, -1 if defaults.seed is None else defaults.seed, None,
                          "-1: a new random answer each time")
        self.seed.setSpecialValueText("random")
        for label, box in (("Temperature", self.temperature), ("Top-p", self.top_p), ("Top-k", self.top_k),
                           ("Min-p", self.min_p), ("Repetition penalty", self.repetition_penalty),
                           ("Max tokens", self.max_tokens), ("Seed", self.seed)):
            form.addRow(label, box)
        sampling.body.addLayout(form)
        sampling.body.addWidget(muted("Prompt as the model reads it"))
        self.prompt_view = QPlainTextEdit()
        self.prompt_view.setReadOnly(True)
        self.prompt_view.setPlaceholderText("shown when you send")
        self.prompt_view.setToolTip("The last prompt of the fine-tuned side, through the chat template")
        sampling.body.addWidget(self.prompt_view, 1)
        sampling.setMinimumWidth(240)
        sampling.setMaximumWidth(300)

        body = QSplitter()
        body.addWidget(talk)
        body.addWidget(sampling)
        body.setStretchFactor(0, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(pick)
        layout.addWidget(body, 1)

        # -- wiring ------------------------------------------------------------------------------
        self.load_button.clicked.connect(self._on_load_clicked)
        self.cancel_load_button.clicked.connect(self.controller.cancel_load)
        self.refresh_button.clicked.connect(controller.refresh_runs)
        self.compare_box.toggled.connect(lambda _on: self._update_panes())
        self.template_box.activated.connect(self._on_template_picked)
        controller.state.config_changed.connect(lambda _config: self._show_template())
        self.send_button.clicked.connect(self._on_send_clicked)
        self.stop_button.clicked.connect(controller.stop)
        self.clear_button.clicked.connect(self._on_clear_clicked)
        self.copy_button.clicked.connect(self._on_copy_clicked)
        QShortcut(QKeySequence("Ctrl+Return"), self.input, activated=self._on_send_clicked)
        c = controller
        c.runs_listed.connect(self._on_runs_listed)
        c.loading.connect(lambda what: self.status.setText(f"Loading {html.escape(what)}…"))
        c.model_loaded.connect(self._on_model_loaded)
        c.answer_started.connect(self._on_answer_started)
        c.delta_received.connect(self._on_delta_received)
        c.prompt_rendered.connect(self._on_prompt_rendered)
        c.answer_finished.connect(self._on_answer_finished)
        c.busy_changed.connect(lambda _busy: self._update_buttons())
        c.load_cancelled.connect(lambda: self.status.setText("Loading cancelled; no model is loaded."))
        c.failed.connect(self._on_failed)
        self._update_panes()
        self._update_buttons()
        self._show_template()

    # -- public --------------------------------------------------------------------------------
    def settings(self):
        from mlx_lora.chat.session import ChatSettings

        return ChatSettings(
            system_prompt=self.system_prompt.toPlainText().strip() or None,
            temperature=self.temperature.value(), top_p=self.top_p.value(), min_p=self.min_p.value(),
            top_k=self.top_k.value(), repetition_penalty=self.repetition_penalty.value(),
            max_tokens=self.max_tokens.value(), seed=None if self.seed.value() < 0 else self.seed.value())

    def select_run(self, run_dir: str, adapter: str = "final") -> None:
        """Choose a run (and adapter) in the pickers, now or when the run list next arrives."""
        self.picker.select(run_dir, adapter)

    def showEvent(self, event) -> None:
        if not self.picker.runs:
            self.controller.refresh_runs()
        super().showEvent(event)

    # -- helpers ----------------------------------------------------------------------------------
    def _comparing(self) -> bool:
        loaded = self.controller.loaded
        return self.compare_box.isChecked() and loaded is not None and loaded.adapter is not None

    def _update_panes(self) -> None:
        loaded = self.controller.loaded
        self.panes[BASE].setVisible(self.compare_box.isChecked() and (loaded is None or loaded.adapter is not None))

    def _show_template(self) -> None:
        index = self.template_box.findData(self.controller.chat_template)
        if index >= 0 and index != self.template_box.currentIndex():
            self.template_box.setCurrentIndex(index)

    def _show_speed(self, side: str) -> None:
        delta = self._latest.get(side)
        if delta is not None:
            self.speed_labels[side].setText(f"{delta.token_count} tokens · {delta.tokens_per_second:.1f} tokens/s")

    def _update_buttons(self) -> None:
        busy, answering = self.controller.is_busy(), self.controller.is_answering()
        self.load_button.setEnabled(not busy)
        self.cancel_load_button.setVisible(self.controller.is_loading())
        self.send_button.setEnabled(not busy and self.controller.loaded is not None)
        self.stop_button.setEnabled(answering)
        self.clear_button.setEnabled(not answering)
        self.template_box.setEnabled(not answering)
        self.picker.set_enabled(not busy)

    # -- slots ------------------------------------------------------------------------------------
    def _on_runs_listed(self, runs: list) -> None:
        self.picker.set_runs(runs)

    def _on_load_clicked(self) -> None:
        self.controller.load(self.picker.chosen_adapter())

    def _on_model_loaded(self, loaded) -> None:
        for transcript in self.transcripts.values():
            transcript.clear_all()
        notes = f" · {'; '.join(loaded.notes)}" if loaded.notes else ""
        self.status.setText(f"<b>{html.escape(loaded.base_spec)}</b> with adapter "
                            f"<b>{html.escape(loaded.label)}</b>{html.escape(notes)}")
        self._update_panes()
        self._update_buttons()
        self.input.setFocus()

    def _on_send_clicked(self) -> None:
        text = self.input.toPlainText().strip()
        if not text or not self.send_button.isEnabled():
            return
        from mlx_lora.errors import UserError

        try:
            settings = self.settings()
        except UserError as exc:
            self.status.setText(html.escape(str(exc)))
            return
        self.input.clear()
        sides = [BASE, TUNED] if self._comparing() else [TUNED]
        for side in sides:
            self.transcripts[side].add_user(text)
        self.controller.send(text, settings, compare=self._comparing())

    def _on_template_picked(self, index: int) -> None:
        self.controller.set_chat_template(self.template_box.itemData(index))

    def _on_prompt_rendered(self, prompt) -> None:
        self.prompt_view.setPlainText(prompt.text)

    def _on_answer_started(self, side: str) -> None:
        self.transcripts[side].begin_answer()
        self._latest.pop(side, None)
        self.speed_labels[side].setText("waiting for the first token…")

    def _flush(self) -> None:
        unflushed, self._unflushed = self._unflushed, {}
        for side, text in unflushed.items():
            self.transcripts[side].append_text(text)
            self._show_speed(side)

    def _on_delta_received(self, side: str, delta) -> None:
        transcript = self.transcripts[side]
        self._latest[side] = delta
        self._unflushed[side] = self._unflushed.get(side, "") + delta.text
        if not self._flush_timer.isActive():
            self._flush_timer.start()
        if delta.finished:
            self._flush()
            self._show_speed(side)
            why = FINISH_WORDS.get(delta.finish_reason or "", delta.finish_reason or "")
            transcript.end_answer(f"{delta.token_count} tokens · {delta.tokens_per_second:.1f} tokens/s · {why}")

    def _on_answer_finished(self, _answers: dict) -> None:
        self._flush()
        for transcript in self.transcripts.values():
            transcript.end_answer("stopped")
        self._update_buttons()

    def _on_clear_clicked(self) -> None:
        self.controller.clear()
        for transcript in self.transcripts.values():
            transcript.clear_all()

    def _on_copy_clicked(self) -> None:
        tuned = self.transcripts[TUNED].last_answer()
        if self._comparing() and self.transcripts[BASE].last_answer():
            text = f"Base model:\n{self.transcripts[BASE].last_answer()}\n\nFine-tuned:\n{tuned}"
        else:
            text = tuned
        QGuiApplication.clipboard().setText(text)

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"<span style='color:#d70015'>{html.escape(message)}</span>")
        self._update_buttons()
