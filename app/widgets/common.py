"""Cards, metric tiles and notices used across pages."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout, QWidget


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as Finder and the Hub show sizes)."""
    if not n:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def memory_text(n_bytes: float | None) -> str:
    """Memory, the one way the app shows it: decimal GB as the engine measures it (peak memory,
    the fit estimate and the machine's memory alike): "1.25 GB", "25.3 GB"."""
    if not n_bytes or n_bytes < 0:
        return "—"
    gb = n_bytes / 1e9
    if gb < 1:
        return f"{n_bytes / 1e6:.0f} MB"
    return f"{gb:.2f} GB" if gb < 10 else f"{gb:.1f} GB"


def human_count(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}".replace(".0", "")
    return f"{n:.0f}"


def human_seconds(s: float | None) -> str:
    if s is None or s != s or s < 0:  # None or NaN
        return "—"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Card(QFrame):
    """A rounded panel with an optional title; add widgets to ``card.body``."""

    def __init__(self, title: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(14, 12, 14, 12)
        self.body.setSpacing(8)
        if title:
            label = QLabel(title)
            label.setObjectName("cardTitle")
            self.body.addWidget(label)


class MetricTile(QWidget):
    """A value over its name: "1,234 tok/s" over "Speed"."""

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.value = QLabel("–")
        self.value.setObjectName("metricValue")
        self.name = QLabel(name)
        self.name.setObjectName("metricName")
        layout.addWidget(self.value)
        layout.addWidget(self.name)

    def set_value(self, text: str) -> None:
        # the label's own minimum is its whole text: a value is never cut while the row has room.
        # (Reserving the widest value ever shown made the seven tiles' minimum outgrow a 1280-pixel
        # window in the screenshot run, and the layout then cut the last ones: "5 min 13 s".)
        self.value.setText(text)


def notice(text: str) -> QLabel:
    """A tinted note for states the user should know about (feature waiting, offline…)."""
    label = QLabel(text)
    label.setObjectName("notice")
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def muted(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("muted")
    label.setWordWrap(True)
    return label


class LazyWidget(QWidget):
    """Builds its content on first show. Charts use it: importing pyqtgraph (and numpy)
    takes about 1.1 s here, more than half the window's start-up budget of 2 s, so it
    waits until a page with a chart is opened. ``widget`` is None until then; the
    ``on_built`` callback gets the new widget."""

    def __init__(self, factory, on_built=None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._factory = factory
        self._on_built = on_built
        self.widget: QWidget | None = None
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)

    def ensure_built(self) -> QWidget:
        if self.widget is None:
            self.widget = self._factory()
            self._layout.addWidget(self.widget)
            if self._on_built is not None:
                self._on_built(self.widget)
        return self.widget

    def showEvent(self, event) -> None:
        self.ensure_built()
        super().showEvent(event)
