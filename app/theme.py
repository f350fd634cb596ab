"""Light and dark appearance: the palette, the stylesheet and the page icons.

The scheme follows the system (``QStyleHints.colorScheme``) unless the user
picked one in View ▸ Appearance. On macOS the native style is kept (it draws
the system's controls and follows its appearance); elsewhere Fusion, which
takes our palette faithfully. ``resources/style/app.qss`` is one stylesheet
whose ``@tokens`` are replaced with the scheme's colours below; the icons in
``resources/icons`` are single-colour SVGs recoloured to the text colour.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache

from PySide6.QtCore import QByteArray, QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import QApplication

from mlx_lora import paths

COLORS = {
    "light": {
        "window": "#f5f5f7", "base": "#ffffff", "alt_base": "#fafafc", "text": "#1d1d1f",
        "secondary": "#6e6e73", "disabled": "#a1a1a6", "sidebar": "#ebebef", "border": "#d8d8dd",
        "hover": "#e2e2e7", "pressed": "#d4d4da", "button": "#ffffff", "track": "#e3e3e8",
        "accent": "#0a6cff", "accent_hover": "#2a80ff", "accent_disabled": "#b9d3fb", "primary_disabled_text": "#ffffff",
        "accent_soft": "#d9e7ff", "accent_text": "#0050c8", "danger": "#d70015",
        "notice_bg": "#fff8e1", "notice_border": "#f0dca0",
        # charts and token preview
        "series_1": "#0a6cff", "series_2": "#ff7a00", "series_3": "#8e8e93", "series_4": "#30a46c",
        "trained_bg": "#d7f5e0", "masked_fg": "#8e8e93",
    },
    "dark": {
        "window": "#1c1c1e", "base": "#262628", "alt_base": "#2b2b2e", "text": "#f2f2f7",
        "secondary": "#a1a1a6", "disabled": "#636366", "sidebar": "#232325", "border": "#3a3a3d",
        "hover": "#323236", "pressed": "#3c3c40", "button": "#2f2f32", "track": "#3a3a3d",
        "accent": "#0a84ff", "accent_hover": "#409cff", "accent_disabled": "#34373d", "primary_disabled_text": "#76767b",
        "accent_soft": "#203a5c", "accent_text": "#8cc4ff", "danger": "#ff453a",
        "notice_bg": "#3a3320", "notice_border": "#5a4d26",
        "series_1": "#409cff", "series_2": "#ff9f0a", "series_3": "#8e8e93", "series_4": "#30d158",
        "trained_bg": "#1f4a2c", "masked_fg": "#8e8e93",
    },
}


def system_scheme() -> str:
    """'dark' or 'light' as the system reports it (light when it does not say)."""
    app = QGuiApplication.instance()
    if app is None:
        return "light"
    scheme = app.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return "dark"
    if scheme == Qt.ColorScheme.Light:
        return "light"
    return "dark" if app.palette().color(QPalette.ColorRole.Window).lightness() < 128 else "light"


def _palette(c: dict[str, str]) -> QPalette:
    p = QPalette()
    role = QPalette.ColorRole
    for r, key in ((role.Window, "window"), (role.Base, "base"), (role.AlternateBase, "alt_base"),
                   (role.WindowText, "text"), (role.Text, "text"), (role.ButtonText, "text"),
                   (role.Button, "button"), (role.ToolTipBase, "base"), (role.ToolTipText, "text"),
                   (role.Highlight, "accent"), (role.Link, "accent"), (role.PlaceholderText, "secondary"),
                   (role.Mid, "border"), (role.Midlight, "hover"), (role.Dark, "pressed")):
        p.setColor(r, QColor(c[key]))
    p.setColor(role.HighlightedText, QColor("#ffffff"))
    p.setColor(role.BrightText, QColor("#ffffff"))
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, r, QColor(c["disabled"]))
    return p


@lru_cache(maxsize=1)
def _stylesheet_template() -> str:
    return (paths.resources_dir() / "style" / "app.qss").read_text(encoding="utf-8")


def stylesheet(scheme: str) -> str:
    colors = COLORS[scheme]
    # Longest names first so "@accent_soft" is not read as "@accent" + "_soft".
    names = sorted(colors, key=len, reverse=True)
    return re.sub("@(" + "|".join(names) + ")", lambda m: colors[m.group(1)], _stylesheet_template())


@lru_cache(maxsize=64)
def _svg(name: str) -> str:
    return (paths.resources_dir() / "icons" / f"{name}.svg").read_text(encoding="utf-8")


def icon(name: str, color: str | None = None, size: int = 20) -> QIcon:
    """A resources/icons SVG drawn in ``color`` (default: the current text colour)."""
    from PySide6.QtSvg import QSvgRenderer

    color = color or ThemeManager.colors()["text"]
    svg = _svg(name).replace("#000000", color)
    renderer = QSvgRenderer(QByteArray(svg.encode()))
    result = QIcon()
    for scale in (1, 2):  # crisp on Retina screens
        pixmap = QPixmap(size * scale, size * scale)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        renderer.render(painter, QRectF(0, 0, size * scale, size * scale))
        painter.end()
        pixmap.setDevicePixelRatio(scale)
        result.addPixmap(pixmap)
    return result


class ThemeManager(QObject):
    """Applies a scheme to the application and re-applies it when the system's changes."""

    scheme_changed = Signal(str)
    _current = "light"

    def __init__(self, app: QApplication, preference: str = "system") -> None:
        super().__init__(app)
        self._app = app
        self.preference = preference  # "system", "light" or "dark"
        if sys.platform != "darwin":
            app.setStyle("Fusion")
        app.styleHints().colorSchemeChanged.connect(self._on_color_scheme_changed)
        self.apply()

    @classmethod
    def colors(cls) -> dict[str, str]:
        return COLORS[cls._current]

    @classmethod
    def current(cls) -> str:
        return cls._current

    def set_preference(self, preference: str) -> None:
        self.preference = preference
        self.apply()

    def apply(self) -> None:
        scheme = system_scheme() if self.preference == "system" else self.preference
        ThemeManager._current = scheme
        self._app.setPalette(_palette(COLORS[scheme]))
        self._app.setStyleSheet(stylesheet(scheme))
        self.scheme_changed.emit(scheme)

    def _on_color_scheme_changed(self, _scheme) -> None:
        if self.preference == "system":
            self.apply()
