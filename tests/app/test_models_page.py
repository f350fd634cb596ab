"""The Models page: the demo model is always listed (offline), a model folder
opens and becomes the selected model, a GGUF file imports with progress, and
— where the engine's Hub module is present — search as you type, details and
download against the stand-in Hub (no network)."""

from __future__ import annotations


import pytest

from app.controllers.app_state import AppState
from app.controllers.models import ModelsController
from app.pages.models_page import ModelsPage



@pytest.fixture
def page(qtbot):
    controller = ModelsController(AppState())
    with qtbot.waitSignal(controller.models_listed, timeout=30_000):
        page = ModelsPage(controller)
    qtbot.addWidget(page)
    page.resize(1100, 750)
    page.show()
    return page


def names(page) -> list[str]:
    return [page.local_table.item(r, 0).text() for r in range(page.local_table.rowCount())]


def test_demo_model_is_listed_and_selected_by_default(page):
    assert names(page)[0] == "SmolLM2-135M-Instruct (demo)"
    assert page.controller.state.model == "demo"
    assert "demo" in page.selected_label.text()


def test_opening_a_folder_selects_it(qtbot, page, tiny_model):
    with qtbot.waitSignal(page.controller.state.model_selected, timeout=30_000) as selected:
        page.controller.open_folder(str(tiny_model))
    assert selected.args == [str(tiny_model)]
    assert "tiny-llama" in page.selected_label.text()


def test_a_bad_folder_fails_with_a_clear_message(qtbot, page, tmp_path):
    with qtbot.waitSignal(page.controller.failed, timeout=30_000) as failed:
        page.controller.open_folder(str(tmp_path))
    assert "no config.json" in failed.args[0]


def test_gguf_import_reports_progress_and_lists_the_model(qtbot, page, demo_model):
    from mlx_lora.models.demo import demo_gguf_path

    progress = []
    page.controller.progressed.connect(lambda message, done, total: progress.append((done, total)))
    with qtbot.waitSignal(page.controller.model_opened, timeout=300_000):
        page.controller.import_gguf(str(demo_gguf_path()))
    assert progress and progress[-1] == (3.0, 3.0)
    qtbot.waitUntil(lambda: any(n.startswith("SmolLM2-135M-Instruct.Q4_1") for n in names(page)), timeout=30_000)


def test_a_gguf_import_shows_its_stage_and_cancel_leaves_nothing(qtbot, page, demo_model, tmp_path):
    import shutil

    from mlx_lora import paths
    from mlx_lora.models.demo import demo_gguf_path
    from mlx_lora.models.local import imported_gguf_path

    gguf = tmp_path / "cancel-me.gguf"  # a file of its own: never imported before in this session
    shutil.copyfile(demo_gguf_path(), gguf)
    before = sorted(p.name for p in paths.models_dir().iterdir())
    seen = []

    def on_progressed(message, done, total):  # Cancel as soon as the first stage shows
        seen.append((message, page.progress_label.text(), page.cancel_button.isVisible()))
        if len(seen) == 1:
            page.cancel_button.click()

    page.controller.progressed.connect(on_progressed)
    with qtbot.waitSignal(page.controller.cancelled, timeout=120_000) as cancelled:
        page.controller.import_gguf(str(gguf))
    assert cancelled.args == ["import"]
    assert seen[0] == ("reading cancel-me.gguf", "reading cancel-me.gguf", True)  # what it is doing now
    qtbot.waitUntil(lambda: not page.controller.is_busy("import"), timeout=5000)
    assert page.progress_label.text() == "Import cancelled; nothing was written."
    assert not page.cancel_button.isVisible()
    assert not imported_gguf_path(gguf).exists()
    assert sorted(p.name for p in paths.models_dir().iterdir()) == before  # no temporary left either


def test_search_as_you_type_details_and_download(qtbot, page, hub):
    assert page.search_box.isEnabled() and not page.hub_note.isVisible()
    with qtbot.waitSignal(page.controller.search_finished, timeout=30_000) as searched:
        page.search_box.setText("tin")
        page.search_box.setText("tiny")  # one search, 300 ms after the last keystroke
    assert searched.args[0] == "tiny"
    searches = [r for r in hub.requests if r.path == "/api/models"]
    assert len(searches) == 1
    repos = [page.results_table.item(r, 0).text() for r in range(page.results_table.rowCount())]
    assert "org/tiny" in repos
    row = repos.index("org/tiny")
    with qtbot.waitSignal(page.controller.details_loaded, timeout=30_000):
        page.results_table.selectRow(row)
    assert "apache-2.0" in page.details.text()
    assert page.download_button.isEnabled()
    with qtbot.waitSignal(page.controller.download_finished, timeout=120_000):
        page.download_button.click()
    qtbot.waitUntil(lambda: "org/tiny" in names(page), timeout=30_000)


def test_an_offline_search_says_so_and_offers_retry(qtbot, page, hub, monkeypatch):
    from tests.core.test_hub import closed_port

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")  # no Hub there
    with qtbot.waitSignal(page.controller.search_offline, timeout=10_000):
        page.search_box.setText("tiny")
    assert page.progress_label.text() == "offline — local models and the demo still work"
    assert page.retry_button.isVisible()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # back online
    with qtbot.waitSignal(page.controller.search_finished, timeout=30_000):
        page.retry_button.click()
    assert not page.retry_button.isVisible() and page.results_table.rowCount() >= 1


def test_every_column_is_named_and_the_selected_model_is_highlighted_at_start(qtbot, page):
    for table in (page.local_table, page.results_table):
        headers = [table.horizontalHeaderItem(k).text() for k in range(table.columnCount())]
        assert all(headers), headers
    rows = page.local_table.selectionModel().selectedRows()
    assert len(rows) == 1 and page._entries[rows[0].row()].spec == page.controller.state.model == "demo"


def test_a_k_quant_gguf_says_the_memory_it_will_take_and_asks_first(qtbot, page, tmp_path, monkeypatch):
    """The header is read first; a file MLX cannot hold is dequantised on import, so the page
    asks, with the memory named, before anything is loaded; No imports nothing."""
    import numpy as np
    from PySide6.QtWidgets import QMessageBox

    from tests.core.test_gguf_dequant import _raw_tensor, _write

    path = tmp_path / "k.gguf"
    _write(path, {"a.weight": _raw_tensor("Q4_K", 16, 256, np.random.default_rng(0))})
    asked = []
    monkeypatch.setattr(QMessageBox, "question",
                        lambda parent, title, text: asked.append(text) or QMessageBox.StandardButton.No)
    monkeypatch.setattr(page.controller, "import_gguf", lambda gguf: pytest.fail("imported without asking"))
    monkeypatch.setattr("app.pages.models_page.QFileDialog.getOpenFileName", lambda *a, **k: (str(path), ""))
    with qtbot.waitSignal(page.controller.import_planned, timeout=30_000):
        page.import_button.click()
    assert len(asked) == 1 and "Q4_K" in asked[0] and "dequantised to float16" in asked[0] and "8 kB" in asked[0]
    qtbot.waitUntil(lambda: not page.controller.is_busy("plan"), timeout=5_000)
    assert not page.controller.is_busy("import")  # No: nothing is loaded
