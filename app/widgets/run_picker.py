"""The run + adapter pickers the Chat and Export pages share.

Two combo boxes (the page lays them out): a run from :func:`mlx_lora.run_history.list_runs`
and one of its adapters ("final", "best", "step-N"). A selection asked for before the
run list arrives (e.g. "Chat with this run" on the Runs page) is kept as ``pending``
and applied when it does.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QComboBox

ADAPTER_HELP = "final: the run's last adapter; best: lowest validation loss; step-N: a checkpoint"


class RunAdapterPicker(QObject):
    changed = Signal()  # the chosen run or adapter changed

    def __init__(self, placeholder: str, show_loss: bool = False, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.show_loss = show_loss
        self.runs: list = []
        self.pending: tuple[str, str] | None = None  # (run folder, adapter) asked for before the list arrived
        self.run_box = QComboBox()
        self.run_box.setPlaceholderText(placeholder)
        self.adapter_box = QComboBox()
        self.adapter_box.setToolTip(ADAPTER_HELP)
        self.run_box.currentIndexChanged.connect(self._on_run_chosen)
        self.adapter_box.currentIndexChanged.connect(lambda _index: self.changed.emit())

    def set_runs(self, runs: list) -> None:
        """Show ``runs`` (those with an adapter), keeping the current run chosen if it is still there."""
        index = self.run_box.currentIndex()
        current = self.runs[index].path if 0 <= index < len(self.runs) else None
        self.runs = [run for run in runs if run.checkpoints]
        self.run_box.blockSignals(True)
        self.run_box.clear()
        for run in self.runs:
            loss = f" · best val {run.best_val_loss:.3f}" if self.show_loss and run.best_val_loss is not None else ""
            self.run_box.addItem(f"{run.name}  ({run.model} · {run.dataset}{loss})")
        index = next((k for k, run in enumerate(self.runs) if run.path == current), 0 if self.runs else -1)
        self.run_box.setCurrentIndex(index)
        self.run_box.blockSignals(False)
        self._on_run_chosen(index)
        self._apply_pending()

    def select(self, run_dir: str, adapter: str = "final") -> None:
        """Choose a run (and adapter), now or when the run list next arrives."""
        self.pending = (str(run_dir), adapter)
        self._apply_pending()

    def chosen_adapter(self) -> str | None:
        """The chosen adapter's folder, or None."""
        index = self.run_box.currentIndex()
        if not 0 <= index < len(self.runs) or not self.adapter_box.currentText():
            return None
        from mlx_lora.run_folder import RunFolder

        return str(RunFolder(self.runs[index].path).adapter_folder(self.adapter_box.currentText()))

    def set_enabled(self, enabled: bool) -> None:
        self.run_box.setEnabled(enabled)
        self.adapter_box.setEnabled(enabled)

    def _apply_pending(self) -> None:
        if self.pending is None:
            return
        run_dir, adapter = self.pending
        for k, run in enumerate(self.runs):
            if str(run.path) == run_dir:
                self.run_box.setCurrentIndex(k)
                index = self.adapter_box.findText(adapter)
                if index >= 0:
                    self.adapter_box.setCurrentIndex(index)
                self.pending = None
                return

    def _on_run_chosen(self, index: int) -> None:
        self.adapter_box.blockSignals(True)
        self.adapter_box.clear()
        if 0 <= index < len(self.runs):
            self.adapter_box.addItems(list(self.runs[index].checkpoints))
        self.adapter_box.blockSignals(False)
        self.changed.emit()
