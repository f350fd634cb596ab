"""Preference tuning in the app: the Data page previews a pair (chosen above rejected,
through the chat template); the Train page's form offers the objective, and LoRA+ and
rsLoRA in its advanced settings; validation rewards get their own chart."""

from __future__ import annotations

import json
import shlex

import pytest

from app.controllers.app_state import AppState
from app.controllers.data import DataController
from app.pages.data_page import DataPage
from mlx_lora.run_events import EvalReport
from tests.app.test_train_page import make_page


@pytest.fixture
def data_page(qtbot, demo_model):
    page = DataPage(DataController(AppState()))
    qtbot.addWidget(page)
    page.resize(1100, 750)
    page.show()
    return page


def test_the_data_page_previews_a_preference_pair(qtbot, data_page, tmp_path):
    pairs = [{"prompt": f"What is {k}+1?", "chosen": f"Arr! {k}+1 be {k + 1}, matey.", "rejected": f"It is {k + 1}."}
             for k in range(6)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    controller = data_page.controller
    with qtbot.waitSignal(controller.pair_preview_rendered, timeout=120_000) as rendered:
        data_page.open(str(path))
    index, chosen, rejected = rendered.args
    assert index == 0
    assert "6 preference examples" in data_page.summary.text()
    assert "".join(s.text for s in chosen if s.trained) == "Arr! 0+1 be 1, matey.<|im_end|>"
    assert "".join(s.text for s in rejected if s.trained) == "It is 1.<|im_end|>"
    assert "What is 0+1?" in "".join(s.text for s in rejected if not s.trained)  # the prompt is masked
    text = data_page.preview_view.toPlainText()
    assert text.index("Chosen") < text.index("Arr! 0+1 be 1") < text.index("Rejected") < text.index("It is 1.")
    assert data_page.preview_info.text().startswith("Preference pair: chosen ")
    with qtbot.waitSignal(controller.pair_preview_rendered, timeout=60_000):
        data_page.example_index.setValue(3)
    assert "Arr! 2+1 be 3" in data_page.preview_view.toPlainText()
    data_page.grab().save(str(tmp_path / "data-page-preference.png"))


def test_objective_lora_plus_and_rslora_are_in_the_train_form(qtbot, tmp_path):
    from PySide6.QtWidgets import QCheckBox, QComboBox

    page, controller = make_page(qtbot, tmp_path)
    form = page.form
    objective = form.editor("preference", "objective")
    assert isinstance(objective, QComboBox)
    assert [objective.itemText(k) for k in range(objective.count())] == ["sft", "dpo", "orpo", "grpo"]
    assert not form.advanced_panel.isAncestorOf(objective)  # the objective is a main setting
    rslora, lora_plus = form.editor("adapter", "rslora"), form.editor("adapter", "lora_plus_ratio")
    beta, orpo_lambda = form.editor("preference", "beta"), form.editor("preference", "orpo_lambda")
    assert isinstance(rslora, QCheckBox)
    for editor in (rslora, lora_plus, beta, orpo_lambda):
        assert form.advanced_panel.isAncestorOf(editor)
    assert not rslora.isVisible()
    form.advanced_toggle.click()
    assert rslora.isVisible() and lora_plus.isVisible() and beta.isVisible()
    rslora.setChecked(True)
    lora_plus.setValue(16)
    objective.setCurrentText("dpo")
    beta.setValue(0.25)
    config = page.config()
    assert (config.adapter.rslora, config.adapter.lora_plus_ratio) == (True, 16.0)
    assert (config.preference.objective, config.preference.beta) == ("dpo", 0.25)
    argv = shlex.split(controller.command_line(config))
    for flag in ("--rslora", "--objective", "--beta", "--lora-plus-ratio"):
        assert flag in argv
    assert argv[argv.index("--objective") + 1] == "dpo" and argv[argv.index("--lora-plus-ratio") + 1] == "16"


def test_validation_rewards_get_their_own_chart(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path)
    qtbot.waitUntil(lambda: page.charts.widget is not None, timeout=10_000)
    charts = page.charts.widget
    supervisor = controller.supervisor
    supervisor.eval_reported.emit(EvalReport(0, 0.5, False, None, None))  # an sft run
    assert not charts.reward_plot.isVisibleTo(charts)
    for step, margin, accuracy in ((0, 0.0, 0.0), (10, 0.8, 0.75), (20, 1.6, 1.0)):
        supervisor.eval_reported.emit(EvalReport(step, 0.69 - step / 100, False, None, None,
                                                 reward_margin=margin, reward_accuracy=accuracy))
    assert charts.reward_plot.isVisibleTo(charts)
    assert list(charts.margin.getData()[1]) == [0.0, 0.8, 1.6]
    assert list(charts.accuracy.getData()[0]) == [0, 10, 20]
    assert "reward margin 1.6000, accuracy 100%" in page.log_view.toPlainText()
    charts.clear()
    assert not charts.reward_plot.isVisibleTo(charts)


@pytest.mark.timeout(300)
def test_dpo_trains_from_the_app_with_the_real_engine(qtbot, demo_model, tmp_path):
    from mlx_lora import paths
    from tests.app.test_whole_flow import TINY, make_window

    data = paths.sample_datasets_dir() / "pirate-preference"
    window = make_window(qtbot, demo_model, **{**TINY, "iters": 2, "steps_per_eval": 2, "save_every": 2},
                         data=str(data), objective="dpo", run_dir=str(tmp_path / "dpo-run"))
    train, training = window.train_page, window.context.training
    with qtbot.waitSignal(training.run_ended, timeout=240_000) as ended:
        train.start_button.click()
    assert ended.args[0] == "finished", train.log_view.toPlainText()
    history = training.history
    assert history.reward_steps == [0, 2] and history.reward_margins[0] == pytest.approx(0, abs=1e-6)
    assert list(train.charts.widget.margin.getData()[0]) == [0, 2]
    assert history.val_losses[0] == pytest.approx(0.6931, abs=1e-4)  # DPO starts at log 2
    log = train.log_view.toPlainText()
    assert "note: DPO (beta 0.1)" in log and "reward margin" in log
    assert (tmp_path / "dpo-run" / "adapters.safetensors").is_file()
