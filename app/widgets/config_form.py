"""A form generated from a dataclass tree, so the GUI is one more view of the
engine's config (house style 2): one editor per field, its tooltip the field's
``help``, choices from ``choices``, ranges from ``min``/``max``. Nested
dataclasses become titled groups; fields with ``metadata["advanced"]`` go into
an "Advanced settings" section that starts folded.

The form edits a copy and hands back a new instance with :meth:`value`; it never
decides a default of its own.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import re
import types

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QLineEdit, QSpinBox, QToolButton,
    QVBoxLayout, QWidget,
)

from mlx_lora.config_fields import format_number


class FloatSpinBox(QDoubleSpinBox):
    """A QDoubleSpinBox that shows numbers as people write them and accepts "1e-4"."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDecimals(12)  # storage precision; the text is format_number's

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt's name)
        return format_number(value)

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text.strip().replace(",", "."))
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        stripped = text.strip().replace(",", ".")
        try:
            value = float(stripped)
        except ValueError:
            # partial input while typing ("1e", "-", "0.") is Intermediate, not Invalid
            ok = re.fullmatch(r"[-+]?\d*\.?\d*(e[-+]?\d*)?", stripped, re.IGNORECASE) is not None
            return (QValidator.State.Intermediate if ok else QValidator.State.Invalid), text, pos
        if self.minimum() <= value <= self.maximum():
            return QValidator.State.Acceptable, text, pos
        return QValidator.State.Intermediate, text, pos


SECTION_TITLES = {"grpo": "GRPO"}  # sections whose name is an acronym


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _base_type(tp: Any) -> Any:
    """``int | None`` → int; ``Optional[str]`` → str."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and args else tp


class _Editor:
    """Binds one field to one widget."""

    def __init__(self, field: dataclasses.Field, tp: Any, value: Any) -> None:
        meta = field.metadata
        self.name = field.name
        self.optional = type(None) in typing.get_args(tp)
        base = _base_type(tp)
        choices = meta.get("choices")
        if choices:
            w = QComboBox()
            shown = meta.get("choice_labels") or {}
            for choice in choices:
                w.addItem(str(shown.get(choice, choice)), choice)  # quantise base: "off", not "0"
            self.get = lambda: w.currentData()
            self.set = lambda v: w.setCurrentIndex(max(0, w.findData(v)))
            self.changed = w.currentIndexChanged
        elif base is bool:
            w = QCheckBox()
            self.get, self.set, self.changed = w.isChecked, w.setChecked, w.toggled
        elif base is int:
            w = QSpinBox()
            w.setRange(int(meta.get("min", -2**31 + 1)), int(meta.get("max", 2**31 - 1)))
            self.get, self.set, self.changed = w.value, lambda v: w.setValue(int(v or 0)), w.valueChanged
        elif base is float:
            w = FloatSpinBox()
            w.setRange(float(meta.get("min", -1e12)), float(meta.get("max", 1e12)))
            w.setStepType(QDoubleSpinBox.StepType.AdaptiveDecimalStepType)
            self.get, self.set, self.changed = w.value, lambda v: w.setValue(float(v or 0)), w.valueChanged
        else:
            w = QLineEdit()
            if self.optional:
                w.setPlaceholderText("(none)")
            to_text = (lambda v: "" if v is None else ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
            self.get = lambda: self._parse(w.text(), base)
            self.set = lambda v: w.setText(to_text(v))
            self.changed = w.textChanged
        w.setToolTip(meta.get("help", ""))
        self.widget = w
        self.set(value)

    def _parse(self, text: str, base: Any) -> Any:
        text = text.strip()
        if not text and self.optional:
            return None
        if typing.get_origin(base) in (list, tuple):
            return [t.strip() for t in text.split(",") if t.strip()]
        return text


class ConfigForm(QWidget):
    """Edits a dataclass instance (and the dataclasses nested in it)."""

    changed = Signal()

    def __init__(self, config: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._config = config
        self._editors: dict[tuple[str, ...], _Editor] = {}
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        basic_forms: list[QWidget] = []
        advanced_forms: list[QWidget] = []
        self._build(config, (), basic_forms, advanced_forms)
        for widget in basic_forms:
            layout.addWidget(widget)
        self.advanced_toggle = QToolButton(text="Advanced settings", checkable=True)
        self.advanced_toggle.setStyleSheet("QToolButton { border: none; font-weight: 600; }")
        self.advanced_panel = QWidget()
        advanced_layout = QVBoxLayout(self.advanced_panel)
        advanced_layout.setContentsMargins(0, 0, 0, 0)
        for widget in advanced_forms:
            advanced_layout.addWidget(widget)
        self.advanced_panel.setVisible(False)
        self.advanced_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_toggle.toggled.connect(self._on_advanced_toggled)
        if advanced_forms:
            layout.addWidget(self.advanced_toggle)
            layout.addWidget(self.advanced_panel)
        layout.addStretch(1)

    def _build(self, obj: Any, prefix: tuple[str, ...], basic: list, advanced: list) -> None:
        hints = typing.get_type_hints(type(obj))
        title = SECTION_TITLES.get(prefix[-1], _label(prefix[-1])) if prefix else "General"
        basic_form, advanced_form = QFormLayout(), QFormLayout()
        nested = []
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value):
                nested.append((field, value))
                continue
            if field.metadata.get("hidden"):
                continue
            editor = _Editor(field, hints.get(field.name, type(value)), value)
            editor.changed.connect(self.changed)
            self._editors[prefix + (field.name,)] = editor
            target = advanced_form if field.metadata.get("advanced") else basic_form
            label = field.metadata.get("label") or _label(field.name)
            target.addRow(label[:1].upper() + label[1:], editor.widget)  # "Quantise base", as the others
        for form, out in ((basic_form, basic), (advanced_form, advanced)):
            if form.rowCount():
                box = QGroupBox(title)
                box.setLayout(form)
                out.append(box)
        for field, value in nested:
            self._build(value, prefix + (field.name,), basic, advanced)

    def _on_advanced_toggled(self, shown: bool) -> None:
        self.advanced_panel.setVisible(shown)
        self.advanced_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def editor(self, *path: str) -> QWidget:
        return self._editors[path].widget

    def set_config(self, config: Any) -> None:
        self._config = config
        for path, editor in self._editors.items():
            obj = config
            for name in path:
                obj = getattr(obj, name)
            editor.set(obj)

    def value(self) -> Any:
        """A new config with the form's values (``dataclasses.replace`` down the tree)."""
        return self._replace(self._config, ())

    def _replace(self, obj: Any, prefix: tuple[str, ...]) -> Any:
        changes = {}
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if dataclasses.is_dataclass(value):
                changes[field.name] = self._replace(value, prefix + (field.name,))
            elif prefix + (field.name,) in self._editors:
                changes[field.name] = self._editors[prefix + (field.name,)].get()
        return dataclasses.replace(obj, **changes)
