"""Controllers: the Qt-side owners of the app's state and jobs.

Pages are handed a controller and only connect its signals to their ``_on_*``
slots and call its methods; controllers call the engine (``mlx_lora``) through
:class:`app.jobs.workers.Job` so nothing slow runs on the GUI thread. Tests build a
page with a controller of their own (or a fake with the same signals).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.controllers.app_state import AppState
from app.controllers.chat import ChatController
from app.controllers.data import DataController
from app.controllers.export import ExportController
from app.controllers.models import ModelsController
from app.controllers.runs import RunsController
from app.controllers.system import SystemController
from app.controllers.training import TrainingController


@dataclass
class AppContext:
    """Everything the main window hands to its pages."""

    state: AppState = field(default_factory=AppState)
    system: SystemController = field(default_factory=SystemController)
    models: ModelsController | None = None
    data: DataController | None = None
    training: TrainingController | None = None
    chat: ChatController | None = None
    export: ExportController | None = None
    runs: RunsController | None = None

    def __post_init__(self) -> None:
        self.models = self.models or ModelsController(self.state)
        self.data = self.data or DataController(self.state)
        self.training = self.training or TrainingController(self.state)
        self.chat = self.chat or ChatController(self.state)
        self.export = self.export or ExportController()
        self.runs = self.runs or RunsController()
