"""The Train page's GRPO panel: the sampled rewards as a chart (mean, per reward function,
KL to the base) and the latest sampled answers with their rewards. Hidden until the run
reports rewards (objective grpo); fed from the controller's ``RewardHistory``."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QLabel, QSplitter, QTextEdit, QVBoxLayout, QWidget

from app.theme import ThemeManager
from app.widgets.common import LazyWidget


def _make_reward_charts():
    from app.widgets.charts import RewardCharts

    return RewardCharts()


def samples_to_html(event, colors: dict[str, str]) -> str:
    """The latest RewardReport's sampled answers: prompt, answer, reward."""
    rows = []
    for prompt, answer, reward in zip(event.sample_prompts, event.samples, event.sample_rewards):
        rows.append(f"<p style='margin:2px 0'><span style='color:{colors['masked_fg']}'>{html.escape(prompt)}</span>"
                    f"<br/>→ <b>{html.escape(answer)}</b> <span style='color:{colors['series_1']}'>"
                    f"reward {reward:.2f}</span></p>")
    return "".join(rows)


class RewardPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.history = None
        self.charts = LazyWidget(_make_reward_charts, on_built=lambda _charts: self.redraw())
        self.charts.setMinimumHeight(160)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)  # a long line would push the chart to nothing
        self.samples = QTextEdit()
        self.samples.setReadOnly(True)
        split = QSplitter()
        split.addWidget(self.charts)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.summary)
        side_layout.addWidget(self.samples, 1)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([600, 400])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)
        self.setVisible(False)

    def set_history(self, history) -> None:
        """Show ``history`` (a RewardHistory); the panel is visible only when it has reports."""
        self.history = history
        self.setVisible(bool(history.steps))
        self.redraw()

    def redraw(self) -> None:
        history = self.history
        if history is None or not history.steps:
            return
        if self.charts.widget is not None:
            self.charts.widget.set_history(history.steps, history.mean_rewards, history.rewards, history.kls)
        event = history.latest
        if event is not None:
            parts = ", ".join(f"{name} {value:.3f}" for name, value in event.rewards.items())
            kl = f" · KL {event.kl:.4f}" if event.kl is not None else ""
            self.summary.setText(f"Step {event.step}: mean reward {event.mean_reward:.3f} ({parts}){kl} · "
                                 f"answers {event.completion_tokens:.1f} tokens")
            self.samples.setHtml(samples_to_html(event, ThemeManager.colors()))

    def apply_theme(self) -> None:
        if self.charts.widget is not None:
            self.charts.widget.apply_theme()
        self.redraw()
