"""The Train page and AdaLoRA / ReLoRA: their settings are in the form (generated from the
config), and the trainer's merge and final-rank events appear in the log in plain words."""

from __future__ import annotations

from mlx_lora.run_events import AdapterMerged, AdapterRanks
from tests.app.test_train_page import make_page


def test_the_form_offers_adalora_and_relora(qtbot, tmp_path):
    page, _ = make_page(qtbot, tmp_path)
    kinds = page.form.editor("adapter", "fine_tune_type")
    assert "adalora" in [kinds.itemText(i) for i in range(kinds.count())]
    kinds.setCurrentText("adalora")
    page.form.editor("adapter", "adalora_target_rank").setValue(2)
    page.form.editor("schedule", "relora_every").setValue(0)
    config = page.config()
    assert config.adapter.fine_tune_type == "adalora" and config.adapter.adalora_target_rank == 2


def test_the_log_shows_relora_merges_and_adalora_ranks_in_plain_words(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path)
    merged = AdapterMerged(10, 1, "ReLoRA merge 1: the adapter was merged into the base weights and "
                                  "restarted (optimiser reset, learning rate re-warmed)")
    ranks = AdapterRanks(30, {"model.layers.0.self_attn.q_proj": 3}, 3, 4, 8,
                         "AdaLoRA final ranks (total 3 of budget 4, from 8 per matrix): layers.0: q_proj 3")
    for event in (merged, ranks):
        controller.supervisor.event_received.emit(event)
    log = page.log_view.toPlainText()
    assert "step 10: ReLoRA merge 1: the adapter was merged into the base weights" in log
    assert "step 30: AdaLoRA final ranks (total 3 of budget 4, from 8 per matrix): layers.0: q_proj 3" in log
    page.grab().save(str(tmp_path / "train_page_methods.png"))  # looked at: both lines in the log
