"""GRPO in the app: the Data page previews a prompt record and its reward fields; the Train
page's form offers --objective grpo and its settings; a run's RewardReports become the reward
chart (mean, per function, KL) and the sampled answers; and a GRPO run trains from the app
with the real engine on the tiny model."""

from __future__ import annotations

import json
import shlex

import pytest

from app.controllers.app_state import AppState
from app.controllers.data import DataController
from app.pages.data_page import DataPage
from mlx_lora.run_events import RewardReport
from tests.app.test_train_page import make_page


def test_the_data_page_previews_a_prompt_and_its_reward_fields(qtbot, demo_model, tmp_path):
    page = DataPage(DataController(AppState()))
    qtbot.addWidget(page)
    page.resize(1100, 750)
    page.show()
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {k} plus one? Reply with just the number.",
                                        "answer": str(k + 1), "level": "easy"}) + "\n" for k in range(5)))
    with qtbot.waitSignal(page.controller.prompt_preview_rendered, timeout=120_000) as rendered:
        page.open(str(path))
    index, spans, fields = rendered.args
    assert index == 0 and fields == {"answer": "1", "level": "easy"}
    assert not any(s.trained for s in spans)  # nothing to learn from: the model writes the answers
    text = page.preview_view.toPlainText()
    assert "What is 0 plus one?" in text and "<|im_start|>assistant" in text  # the template opens the reply
    assert text.index("Reward fields") < text.index("answer") < text.index('"1"')
    assert page.preview_info.text().startswith("Prompt for GRPO:")
    page.grab().save(str(tmp_path / "data-page-grpo.png"))


def test_the_train_form_offers_grpo_and_its_settings(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path)
    form = page.form
    form.editor("preference", "objective").setCurrentText("grpo")
    form.advanced_toggle.click()
    form.editor("grpo", "group_size").setValue(6)
    config = page.config()
    assert (config.preference.objective, config.grpo.group_size) == ("grpo", 6)
    argv = shlex.split(controller.command_line(config))
    assert argv[argv.index("--objective") + 1] == "grpo" and argv[argv.index("--group-size") + 1] == "6"


def report(step, mean, exact, fmt, kl):
    return RewardReport(step=step, mean_reward=mean, reward_std=0.4, rewards={"exact_match": exact, "format": fmt},
                        kl=kl, completion_tokens=3.5, generation_s=1.2,
                        sample_prompts=("What is 17 plus one? Reply with just the number.",),
                        samples=(f"{17 + step // 10}",), sample_rewards=(mean,))


def test_rewards_become_a_chart_and_sampled_answers(qtbot, tmp_path):
    page, controller = make_page(qtbot, tmp_path)
    panel = page.reward_panel
    assert not panel.isVisibleTo(page)  # an sft run shows no reward panel
    supervisor = controller.supervisor
    for step, mean, exact, fmt, kl in ((5, 0.4, 0.1, 0.3, 0.0), (10, 0.9, 0.3, 0.6, 0.01), (15, 1.5, 0.6, 0.9, 0.02)):
        supervisor.event_received.emit(report(step, mean, exact, fmt, kl))
    assert panel.isVisibleTo(page)
    qtbot.waitUntil(lambda: panel.charts.widget is not None, timeout=10_000)
    charts = panel.charts.widget
    assert list(charts.mean.getData()[1]) == [0.4, 0.9, 1.5]
    assert list(charts.functions["format"].getData()[1]) == [0.3, 0.6, 0.9]
    assert list(charts.kl.getData()[0]) == [5, 10, 15]
    assert "Step 15: mean reward 1.500 (exact_match 0.600, format 0.900) · KL 0.0200" in panel.summary.text()
    assert "→ 18 reward 1.50" in panel.samples.toPlainText()
    assert controller.history.grpo.cut(10).steps == [5, 10]
    page.grab().save(str(tmp_path / "train-page-grpo.png"))


@pytest.mark.timeout(300)
def test_grpo_trains_from_the_app_with_the_real_engine(qtbot, demo_model, tiny_model, tmp_path):
    from tests.app.test_whole_flow import TINY, make_window
    from tests.core.test_grpo_train import write_prompts

    data = write_prompts(tmp_path / "prompts", train=4, valid=1)
    window = make_window(qtbot, demo_model, **{**TINY, "iters": 2, "steps_per_eval": 2, "save_every": 2},
                         model=str(tiny_model), data=str(data), objective="grpo", group_size=2,
                         max_completion_tokens=4, rewards=("format",), reward_pattern="^ ?[a-m]",
                         run_dir=str(tmp_path / "grpo-run"))
    train, training = window.train_page, window.context.training
    with qtbot.waitSignal(training.run_ended, timeout=240_000) as ended:
        train.start_button.click()
    assert ended.args[0] == "finished", train.log_view.toPlainText()
    assert training.history.grpo.steps == [1, 2]
    assert train.reward_panel.isVisibleTo(train)
    assert "note: GRPO: 2 answers per prompt" in train.log_view.toPlainText()
    assert (tmp_path / "grpo-run" / "adapters.safetensors").is_file()
