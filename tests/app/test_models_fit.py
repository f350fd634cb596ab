""""Will it fit" on the Models page: the engine's memory estimate for the highlighted
(or selected) model with the Train page's settings, against this computer's memory."""

from __future__ import annotations

from app.controllers.app_state import AppState
from app.controllers.models import ModelsController
from app.pages.models_page import ModelsPage
from app.widgets.common import memory_text
from mlx_lora.train.memory_guard import MemoryGuard
from mlx_lora import backend
from mlx_lora.config import TrainConfig
from mlx_lora.train.memory import estimate_training_memory


def make_page(qtbot, settings):
    controller = ModelsController(AppState())
    with qtbot.waitSignal(controller.models_listed, timeout=30_000):
        page = ModelsPage(controller, settings=lambda: settings[0])
    qtbot.addWidget(page)
    return page


def test_the_estimate_follows_the_selected_model_and_the_train_settings(qtbot, tiny_model):
    settings = [TrainConfig().replace(batch_size=2, max_seq_length=256)]
    page = make_page(qtbot, settings)
    with qtbot.waitSignal(page.controller.fit_estimated, timeout=30_000) as estimated:
        page.controller.state.select_model(str(tiny_model), "tiny-llama")
    estimate = estimated.args[0]
    expected = estimate_training_memory(settings[0].replace(model=str(tiny_model)))
    assert estimate.model == str(tiny_model) and estimate.verdict == "fits"
    assert estimate.needed_bytes == expected.total_bytes and estimate.batch == (2, 256)
    guard = MemoryGuard.for_config(settings[0])  # the limit the run will hold to, shown beside the estimate
    assert estimate.available_bytes == guard.limit == int(0.85 * backend.total_memory_bytes())
    text = page.fit_label.text()
    assert f"memory limit of {memory_text(guard.limit)} (85% of RAM" in text
    assert memory_text(expected.total_bytes) in text and "2 × 256 tokens per pass" in text and "fits" in text

    # A batch past max_batch_tokens (4096 by default) is estimated by its passes: 8 × 1024 → 4 × 1024.
    settings[0] = TrainConfig().replace(batch_size=8, max_seq_length=1024)
    with qtbot.waitSignal(page.controller.fit_estimated, timeout=30_000) as estimated:
        page.show()
    assert estimated.args[0].batch == (4, 1024) and "4 × 1,024 tokens per pass" in page.fit_label.text()

    # The Train page's settings changed (a huge batch): showing the page estimates again.
    settings[0] = TrainConfig().replace(batch_size=1024, max_seq_length=32768)
    page.hide()
    with qtbot.waitSignal(page.controller.fit_estimated, timeout=30_000) as estimated:
        page.show()
    assert estimated.args[0].verdict == "too big"
    assert "will not fit" in page.fit_label.text() and "gradient checkpointing" in page.fit_label.text()


def test_a_model_without_a_shape_says_why_there_is_no_estimate(qtbot, tmp_path):
    page = make_page(qtbot, [TrainConfig()])
    with qtbot.waitSignal(page.controller.fit_estimated, timeout=30_000) as estimated:
        page.controller.state.select_model(str(tmp_path / "nowhere"), "nowhere")
    assert estimated.args[0].verdict == "unknown"
    assert "No estimate" in page.fit_label.text() and "config.json" in page.fit_label.text()


def test_with_a_dataset_loaded_the_estimate_is_for_its_widest_pass(qtbot, tiny_model, tmp_path):
    """4 × 2048 on examples of at most 120 tokens is passes of 4 × 120, not 4 × 2048 (the
    9.8 GB the page said for the demo, against 1.1 GB measured)."""
    from mlx_lora.train.memory import largest_pass, read_model_shape

    settings = [TrainConfig().replace(batch_size=4, max_seq_length=2048)]
    page = make_page(qtbot, settings)
    state = page.controller.state
    data = tmp_path / "data.jsonl"
    state.select_dataset(str(data))
    with qtbot.waitSignal(page.controller.fit_estimated, timeout=30_000) as estimated:
        state.select_model(str(tiny_model), "tiny-llama")
    assert estimated.args[0].batch == (2, 2048) and not estimated.args[0].from_data  # max_batch_tokens 4096 cuts it
    lengths = [120, 80, 64, 100, 30, 90]
    with qtbot.waitSignal(page.controller.fit_estimated, timeout=30_000) as estimated:
        state.set_data_lengths(str(data), lengths, trained_tokens=240)  # the Data page's statistics arrived
    estimate = estimated.args[0]
    config = settings[0].replace(model=str(tiny_model))
    batch, share = largest_pass(lengths, config, 240)
    assert batch == (4, 120) and share == 240 / sum(lengths) * (120 + 100 + 90 + 80) / (4 * 120)
    expected = estimate_training_memory(config, shape=read_model_shape(str(tiny_model)), batch_tokens=batch,
                                        trained_share=share)
    assert estimate.from_data and estimate.batch == (4, 120) and estimate.needed_bytes == expected.total_bytes
    assert "4 × 120 tokens per pass: the widest pass of this dataset" in page.fit_label.text()
    with qtbot.waitSignal(page.controller.fit_estimated, timeout=30_000) as estimated:
        state.select_dataset(str(tmp_path / "other.jsonl"))  # another dataset: its lengths are not known yet
        page.controller.estimate_fit(str(tiny_model), settings[0])
    assert not estimated.args[0].from_data and state.data_lengths is None
