"""Settings: the Hugging Face token, the folders, and the appearance.

The token field never shows a stored token: it shows it masked (``hf_…wxyz``)
as a placeholder, and typing a new one replaces it. Storage is
:mod:`app.settings_store` (keychain, else a 0600 file).
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
    QPushButton, QVBoxLayout, QWidget,
)

from app import settings_store
from app.widgets.common import muted

APPEARANCES = (("system", "Same as the system"), ("light", "Light"), ("dark", "Dark"))


class SettingsDialog(QDialog):
    def __init__(self, appearance: str = "system", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self._forget_token = False
        stored = settings_store.load_token()
        folders = settings_store.load_folders()

        self.token_edit = QLineEdit()
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText(
            f"stored: {settings_store.mask_token(stored)}" if stored else "hf_… (only needed for gated or private models)")
        self.forget_button = QPushButton("Remove")
        self.forget_button.setEnabled(bool(stored))
        token_row = QHBoxLayout()
        token_row.addWidget(self.token_edit, 1)
        token_row.addWidget(self.forget_button)

        self.cache_edit = QLineEdit(folders.hub_cache)
        self.cache_edit.setPlaceholderText(settings_store.default_hub_cache())
        browse = QPushButton("Choose…")
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_edit, 1)
        cache_row.addWidget(browse)

        from mlx_lora import paths

        self.runs_label = QLabel(str(paths.runs_dir()))
        self.runs_label.setTextInteractionFlags(self.runs_label.textInteractionFlags().TextSelectableByMouse)

        self.appearance = QComboBox()
        for key, label in APPEARANCES:
            self.appearance.addItem(label, key)
        self.appearance.setCurrentIndex(max(0, self.appearance.findData(appearance)))

        form = QFormLayout()
        form.addRow("Hugging Face token", token_row)
        form.addRow("", muted(f"Kept in {settings_store.token_storage()}."))
        form.addRow("Model cache", cache_row)
        form.addRow("", muted("Downloaded models; shared with other Hugging Face tools. Takes effect after a restart."))
        form.addRow("Runs folder", self.runs_label)
        form.addRow("Appearance", self.appearance)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

        browse.clicked.connect(self._on_browse_clicked)
        self.forget_button.clicked.connect(self._on_forget_clicked)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)

    @property
    def chosen_appearance(self) -> str:
        return self.appearance.currentData()

    def _on_browse_clicked(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model cache folder", self.cache_edit.text())
        if folder:
            self.cache_edit.setText(folder)

    def _on_forget_clicked(self) -> None:
        self._forget_token = True
        self.token_edit.clear()
        self.token_edit.setPlaceholderText("will be removed when you save")
        self.forget_button.setEnabled(False)

    def accept(self) -> None:
        token = self.token_edit.text().strip()
        if token:
            settings_store.save_token(token)
        elif self._forget_token:
            settings_store.save_token(None)
        settings_store.save_folders(settings_store.Folders(hub_cache=self.cache_edit.text().strip()))
        super().accept()
