"""The main window: a sidebar of pages, the page's title, menus, shortcuts and a
status bar. It builds the pages, hands each its controller, and remembers its
geometry and last page (QSettings in the app's home folder).

MLX is not imported here: the status bar's device facts are loaded in a worker
after the window shows.
"""

from __future__ import annotations

import html
import sys

from PySide6.QtCore import QByteArray, QSettings, QSize, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QApplication, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow, QMessageBox, QStackedWidget,
    QVBoxLayout, QWidget,
)

import mlx_lora
from app import theme
from app.jobs import workers
from app.controllers import AppContext
from app.pages import chat_page, data_page, export_page, models_page, runs_page, train_page
from app.widgets import wheel_guard
from app.widgets.common import memory_text
from mlx_lora.run_events import StepReport

PAGE_NAMES = ("Models", "Data", "Train", "Chat", "Export", "Runs")
PAGE_ICONS = ("models", "data", "train", "chat", "export", "runs")


def app_settings() -> QSettings:
    """The window's own preferences (geometry, last page, appearance), in the app's home
    folder so tests, which point ``MLX_LORA_HOME`` elsewhere, never see the user's."""
    from mlx_lora import paths

    return QSettings(str(paths.home() / "studio.ini"), QSettings.Format.IniFormat)



def documentation_url():
    """The README (install, the whole flow, the CLI, troubleshooting) next to the app's code, as a
    file URL that works offline; None where the app was installed without it."""
    from pathlib import Path

    from PySide6.QtCore import QUrl

    readme = Path(__file__).resolve().parents[1] / "README.md"
    return QUrl.fromLocalFile(str(readme)) if readme.is_file() else None

class MainWindow(QMainWindow):
    def __init__(self, demo: bool = False, context: AppContext | None = None,
                 theme_manager: theme.ThemeManager | None = None) -> None:
        super().__init__()
        self.context = context or AppContext()
        self.settings = app_settings()
        app = QApplication.instance()
        wheel_guard.install(app)  # spin boxes and combos take the wheel only when focused
        self.theme_manager = theme_manager or theme.ThemeManager(app, str(self.settings.value("appearance", "system")))
        self.setWindowTitle("MLX LoRA Studio")
        self.setMinimumSize(QSize(960, 640))
        self._closing_after_stop = False

        ctx = self.context
        self.models_page = models_page.ModelsPage(ctx.models, settings=lambda: self.train_page.config())
        self.data_page = data_page.DataPage(ctx.data)
        self.train_page = train_page.TrainPage(ctx.training)
        self.chat_page = chat_page.ChatPage(ctx.chat)
        self.export_page = export_page.ExportPage(ctx.export, ctx.runs)
        self.runs_page = runs_page.RunsPage(ctx.runs)
        self.page_modules = (models_page, data_page, train_page, chat_page, export_page, runs_page)
        page_widgets = (self.models_page, self.data_page, self.train_page,
                        self.chat_page, self.export_page, self.runs_page)

        # -- sidebar -------------------------------------------------------------------
        sidebar_panel = QWidget()
        sidebar_panel.setObjectName("sidebarPanel")
        sidebar_panel.setFixedWidth(188)
        side = QVBoxLayout(sidebar_panel)
        side.setContentsMargins(0, 0, 0, 0)
        app_name = QLabel("MLX LoRA Studio")
        app_name.setObjectName("appName")
        side.addWidget(app_name)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setIconSize(QSize(18, 18))
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        side.addWidget(self.sidebar, 1)

        # -- pages ----------------------------------------------------------------------
        self.pages = QStackedWidget()
        for name, widget in zip(PAGE_NAMES, page_widgets):
            self.sidebar.addItem(QListWidgetItem(name))
            self.pages.addWidget(widget)
        self.page_title = QLabel()
        self.page_title.setObjectName("pageTitle")
        self.page_subtitle = QLabel()
        self.page_subtitle.setObjectName("pageSubtitle")
        self.page_subtitle.setWordWrap(True)
        content = QWidget()
        content_layout = QVBoxLayout(content)
        content_layout.setContentsMargins(24, 18, 24, 16)
        content_layout.setSpacing(4)
        content_layout.addWidget(self.page_title)
        content_layout.addWidget(self.page_subtitle)
        content_layout.addSpacing(10)
        content_layout.addWidget(self.pages, 1)

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(sidebar_panel)
        layout.addWidget(content, 1)
        self.setCentralWidget(central)

        self._build_status_bar()
        self._build_menus()

        self.sidebar.currentRowChanged.connect(self._on_page_chosen)
        self.theme_manager.scheme_changed.connect(self._on_scheme_changed)
        ctx.system.facts_loaded.connect(self._on_facts_loaded)
        ctx.system.facts_failed.connect(lambda message: self.backend_label.setText("MLX: unavailable"))
        ctx.training.step_reported.connect(self._on_step_reported)
        ctx.training.run_ended.connect(self._on_run_ended)
        ctx.training.running_changed.connect(self._on_training_running_changed)
        for controller in (ctx.models, ctx.data, ctx.runs):
            controller.failed.connect(self._on_job_failed)
        ctx.training.run_ended.connect(lambda _outcome, _message: (ctx.runs.refresh(), ctx.chat.refresh_runs()))
        self.runs_page.open_config_requested.connect(self._on_open_config_requested)
        self.runs_page.resume_requested.connect(self._on_resume_requested)
        self.runs_page.chat_requested.connect(lambda run: (self.chat_page.select_run(run), ctx.chat.refresh_runs(),
                                                           self.show_page(3)))
        self.runs_page.export_requested.connect(lambda run: (self.export_page.select_run(run), ctx.runs.refresh(),
                                                             self.show_page(4)))
        ctx.state.model_selected.connect(
            lambda _spec: self.statusBar().showMessage(f"Model: {ctx.state.model_label}", 4000))

        self._on_scheme_changed(self.theme_manager.current())
        self._restore_state()
        if demo:
            self._preselect_demo()
        # After the first paint: ask MLX about the device (imports mlx.core in a worker).
        QTimer.singleShot(200, ctx.system.load_facts)

    # -- construction helpers -------------------------------------------------------------
    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        bar.setSizeGripEnabled(False)
        self.training_label = QLabel()
        self.backend_label = QLabel("MLX: loading…")
        self.memory_label = QLabel()
        for label in (self.training_label, self.backend_label, self.memory_label):
            bar.addPermanentWidget(label)

    def _build_menus(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self._action(file_menu, "Open Dataset…", QKeySequence.StandardKey.Open,
                     lambda: (self.show_page(1), self.data_page._on_open_file_clicked()))
        self._action(file_menu, "Open Model Folder…", None,
                     lambda: (self.show_page(0), self.models_page._on_open_clicked()))
        self._action(file_menu, "Import GGUF…", None,
                     lambda: (self.show_page(0), self.models_page._on_import_clicked()))
        file_menu.addSeparator()
        settings = self._action(file_menu, "Settings…", QKeySequence("Ctrl+,"), self.open_settings)
        settings.setMenuRole(QAction.MenuRole.PreferencesRole)
        file_menu.addSeparator()
        quit_action = self._action(file_menu, "Quit", QKeySequence("Ctrl+Q"), self.close)
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)

        edit_menu = menu.addMenu("&Edit")
        self._action(edit_menu, "Copy", QKeySequence.StandardKey.Copy, lambda: self._on_focus_call("copy"))
        self._action(edit_menu, "Select All", QKeySequence.StandardKey.SelectAll,
                     lambda: self._on_focus_call("selectAll"))
        edit_menu.addSeparator()
        self._action(edit_menu, "Copy Training Command", None, self.train_page._on_copy_clicked)

        view_menu = menu.addMenu("&View")
        self.page_actions = []
        for k, name in enumerate(PAGE_NAMES):
            self.page_actions.append(
                self._action(view_menu, name, QKeySequence(f"Ctrl+{k + 1}"), lambda k=k: self.show_page(k)))
        view_menu.addSeparator()
        appearance = view_menu.addMenu("Appearance")
        group = QActionGroup(self)
        self.appearance_actions = {}
        for key, label in (("system", "Same as the System"), ("light", "Light"), ("dark", "Dark")):
            action = appearance.addAction(label)
            action.setCheckable(True)
            action.setChecked(key == self.theme_manager.preference)
            action.triggered.connect(lambda _checked=False, key=key: self.set_appearance(key))
            group.addAction(action)
            self.appearance_actions[key] = action

        help_menu = menu.addMenu("&Help")
        self.documentation_action = self._action(help_menu, "Documentation", QKeySequence.StandardKey.HelpContents,
                                                 self.open_documentation)
        self.documentation_action.setEnabled(documentation_url() is not None)
        help_menu.addSeparator()
        about = self._action(help_menu, "About MLX LoRA Studio", None, self.show_about)
        about.setMenuRole(QAction.MenuRole.AboutRole)
        self._action(help_menu, "About Qt", None, QApplication.aboutQt).setMenuRole(QAction.MenuRole.AboutQtRole)

    def _action(self, menu, text, shortcut, slot) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        self.addAction(action)  # shortcuts work even when the menu bar is hidden (offscreen, full screen)
        return action

    def _restore_state(self) -> None:
        geometry = self.settings.value("geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        try:
            page = int(self.settings.value("page", 0))
        except (TypeError, ValueError):
            page = 0
        self.show_page(page if 0 <= page < len(PAGE_NAMES) else 0)

    def _preselect_demo(self) -> None:
        """The demo model and the sample set `make demo` trains on (the pirate persona)."""
        from mlx_lora import paths
        from mlx_lora.demo_training import DATASET

        self.context.state.select_model("demo", "SmolLM2-135M-Instruct (demo)")
        sample = paths.sample_datasets_dir() / DATASET
        if (sample / "train.jsonl").is_file():
            self.data_page.open(str(sample))

    # -- public ----------------------------------------------------------------------------
    def show_page(self, index: int) -> None:
        self.sidebar.setCurrentRow(index)

    def current_page_name(self) -> str:
        return PAGE_NAMES[self.pages.currentIndex()]

    def set_appearance(self, preference: str) -> None:
        self.settings.setValue("appearance", preference)
        self.theme_manager.set_preference(preference)
        self.appearance_actions[preference].setChecked(True)

    def open_settings(self) -> None:
        from app.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.theme_manager.preference, self)
        if dialog.exec():
            self.set_appearance(dialog.chosen_appearance)
            from app import settings_store

            settings_store.apply_to_environment()

    def open_documentation(self) -> None:
        from PySide6.QtGui import QDesktopServices

        url = documentation_url()
        if url is not None:
            QDesktopServices.openUrl(url)

    def show_about(self) -> None:
        QMessageBox.about(self, "About MLX LoRA Studio", (
            f"<h3>MLX LoRA Studio {mlx_lora.__version__}</h3>"
            "<p>Fine-tune open language models with LoRA on your own computer, with MLX.</p>"
            f"<p style='color:gray'>Python {sys.version.split()[0]} · Qt {__import__('PySide6').__version__}<br>"
            "Apache-2.0</p>"))

    # -- slots -------------------------------------------------------------------------------
    def _on_page_chosen(self, index: int) -> None:
        if index < 0:
            return
        self.pages.setCurrentIndex(index)
        module = self.page_modules[index]
        self.page_title.setText(module.TITLE)
        self.page_subtitle.setText(module.SUBTITLE)

    def _on_scheme_changed(self, _scheme: str) -> None:
        color = theme.ThemeManager.colors()["text"]
        for k, name in enumerate(PAGE_ICONS):
            self.sidebar.item(k).setIcon(theme.icon(name, color))
        for page in (self.models_page, self.data_page, self.train_page, self.runs_page):
            page.apply_theme()

    def _on_focus_call(self, method: str) -> None:
        widget = QApplication.focusWidget()
        if widget is not None and hasattr(widget, method):
            getattr(widget, method)()

    def _on_facts_loaded(self, facts: dict) -> None:
        where = facts["device"] if facts["backend"] == "cpu" else f"{facts['device']} ({facts['backend'].capitalize()})"
        blas = f" · {facts['blas']}" if facts["backend"] == "cpu" else ""  # BLAS only matters on the CPU
        self.backend_label.setText(f"MLX on {where}{blas}")
        self.memory_label.setText(f"{memory_text(facts['memory_bytes'])} memory")

    def _on_step_reported(self, event: StepReport) -> None:
        total = self.context.training.history.total_steps
        memory = f" · peak {memory_text(event.peak_memory_gb * 1e9)}"
        self.training_label.setText(f"Training: step {event.step}{f' / {total}' if total else ''}{memory}")

    def _on_run_ended(self, outcome: str, message: str) -> None:
        self.training_label.setText(f"Training {outcome}")
        self.statusBar().showMessage(message, 10_000)

    def _on_training_running_changed(self, running: bool) -> None:
        if running:  # the last run's outcome ("Training failed") is not this run's
            self.training_label.setText("Training: starting…")
            self.statusBar().clearMessage()
        if not running and self._closing_after_stop:
            QTimer.singleShot(0, self.close)

    def _on_open_config_requested(self, config_path: str) -> None:
        if self.train_page.load_config_file(config_path):
            self.show_page(2)

    def _on_resume_requested(self, run_dir: str) -> None:
        if self.context.training.is_running():
            QMessageBox.information(self, "Training is running", "Stop the current run before resuming another.")
            return
        self.show_page(2)
        self.context.training.resume(run_dir)

    def _on_job_failed(self, message: str) -> None:
        QMessageBox.warning(self, "MLX LoRA Studio", html.escape(message))

    # -- closing ------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        training = self.context.training
        if training.is_running() and not self._closing_after_stop:
            answer = QMessageBox.question(
                self, "Training is running",
                "Stop training and quit? A checkpoint is saved first, so you can resume later.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self._closing_after_stop = True
            self.statusBar().showMessage("Saving a checkpoint before quitting…")
            training.stop()
            event.ignore()
            return
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("page", self.pages.currentIndex())
        self.settings.sync()
        workers.cancel_all_and_wait(2000)
        self.context.chat.worker.kill()  # the chat child goes with the window (also at quit)
        super().closeEvent(event)
