"""ConfigForm builds editors from a dataclass tree's metadata and gives back an
edited copy; advanced fields start folded away."""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLineEdit, QSpinBox

from app.widgets.config_form import ConfigForm


@dataclass
class Lora:
    rank: int = field(default=8, metadata={"help": "adapter rank", "min": 1, "max": 256})
    dropout: float = field(default=0.0, metadata={"help": "dropout", "min": 0.0, "max": 1.0, "advanced": True})


@dataclass
class Config:
    model: str = field(default="demo", metadata={"help": "model to fine-tune"})
    optimizer: str = field(default="adamw", metadata={"choices": ["adam", "adamw", "sgd"]})
    mask_prompt: bool = field(default=True, metadata={"help": "train on replies only"})
    adapter: str | None = field(default=None, metadata={"help": "start from this adapter", "advanced": True})
    lora: Lora = field(default_factory=Lora)


def test_form_edits_a_copy_of_the_tree(qtbot):
    form = ConfigForm(Config())
    qtbot.addWidget(form)
    rank = form.editor("lora", "rank")
    assert isinstance(rank, QSpinBox) and (rank.minimum(), rank.maximum()) == (1, 256)
    assert rank.toolTip() == "adapter rank"
    assert isinstance(form.editor("optimizer"), QComboBox)
    assert isinstance(form.editor("mask_prompt"), QCheckBox)
    assert isinstance(form.editor("lora", "dropout"), QDoubleSpinBox)
    rank.setValue(16)
    form.editor("optimizer").setCurrentIndex(2)
    form.editor("mask_prompt").setChecked(False)
    value = form.value()
    assert value == Config(optimizer="sgd", mask_prompt=False, lora=Lora(rank=16))
    adapter = form.editor("adapter")
    assert isinstance(adapter, QLineEdit)
    adapter.setText("runs/a")
    assert form.value().adapter == "runs/a"
    adapter.setText("")
    assert form.value().adapter is None


def test_advanced_settings_start_folded(qtbot):
    form = ConfigForm(Config())
    qtbot.addWidget(form)
    form.show()
    assert not form.advanced_panel.isVisible()
    form.advanced_toggle.click()
    assert form.advanced_panel.isVisible()
    form.set_config(Config(lora=Lora(rank=4)))
    assert form.editor("lora", "rank").value() == 4


def test_the_training_form_reads_as_words(qtbot):
    """Labels in sentence case and hyphenated where English wants it; a quantisation of 0 is "off"."""
    from PySide6.QtWidgets import QFormLayout

    from mlx_lora.config import TrainConfig

    form = ConfigForm(TrainConfig())
    qtbot.addWidget(form)
    labels = []
    for layout in form.findChildren(QFormLayout):
        for row in range(layout.rowCount()):
            item = layout.itemAt(row, QFormLayout.ItemRole.LabelRole)
            if item is not None and item.widget() is not None:
                labels.append(item.widget().text())
    assert {"Learning-rate schedule", "Fine-tune type", "Quantise base", "Max sequence length"} <= set(labels)
    assert "Lr schedule" not in labels and "Fine tune type" not in labels
    assert all(label[:1].isupper() for label in labels)
    quantise = form.editor("model", "quantize_bits")
    assert [quantise.itemText(k) for k in range(quantise.count())] == ["off", "4-bit", "8-bit"]
    assert form.value().model.quantize_bits == 0  # the value is still the number
