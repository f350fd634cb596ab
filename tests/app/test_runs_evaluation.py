"""The Runs page's Evaluate: a real evaluation of a tiny trained run in a worker, the
summary and examples tables, the history's column afterwards, and Cancel."""

from __future__ import annotations

import shutil

import pytest

from app.controllers.runs import RunsController
from app.pages.runs_page import COLUMNS, RunsPage
from app.widgets.evaluation_panel import EXAMPLE_COLUMNS, NOT_EVALUATED
from mlx_lora.run_folder import GENERATION_EVAL_FILE
from mlx_lora.train import train
from tests.core.test_train_helpers import tiny_config, write_dataset


@pytest.fixture(scope="module")
def trained_run(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs-evaluation")
    data = write_dataset(folder / "data", train=8, valid=2, test=3)
    config = tiny_config(tiny_model, data, folder / "tiny-run", iters=2, steps_per_eval=100, save_every=100)
    assert train(config).status == "finished"
    return folder / "tiny-run"


@pytest.fixture
def page(qtbot, tmp_path, monkeypatch, trained_run):
    monkeypatch.setenv("MLX_LORA_HOME", str(tmp_path / "home"))
    from mlx_lora import paths

    shutil.copytree(trained_run, paths.runs_dir() / "tiny-run")
    controller = RunsController()
    page = RunsPage(controller)
    qtbot.addWidget(page)
    page.resize(1200, 760)
    with qtbot.waitSignal(controller.evaluation.results_loaded, timeout=10000):
        page.show()
    return page


def test_evaluate_shows_base_vs_tuned_and_the_history_column(qtbot, page):
    from mlx_lora import paths

    panel = page.evaluation
    assert page.table.item(0, COLUMNS.index("ROUGE-L")).text() == "—"
    assert panel.status.text() == NOT_EVALUATED and panel.summary.rowCount() == 0
    assert page.evaluate_button.isEnabled()
    panel.limit.setValue(2)
    panel.max_tokens.setValue(3)
    assert not panel.judge_prompt.isVisibleTo(panel)
    panel.judge.setChecked(True)  # the base judges too, with the prompt shown and editable
    assert panel.judge_prompt.isVisibleTo(panel) and "{answer_a}" in panel.judge_prompt.toPlainText()
    controller = page.controller
    messages = []
    controller.evaluation.progressed.connect(lambda message, done, total: messages.append(message))
    with qtbot.waitSignal(controller.runs_listed, timeout=120000):  # the history refreshed afterwards
        with qtbot.waitSignal(controller.evaluation.evaluation_finished, timeout=120000):
            page.evaluate_button.click()
            assert page.tabs.currentWidget() is panel and not page.evaluate_button.isEnabled()
    assert "generating 1/2 (base)" in messages and "generating 2/2 (tuned)" in messages
    assert [panel.summary.item(r, 0).text() for r in range(5)] == [
        "exact match", "token F1", "ROUGE-L", "reference loss/token", "judge: preferred"]
    assert "judging 2/2" in messages
    judged = [panel.examples.item(r, EXAMPLE_COLUMNS.index("Judge")).text() for r in range(2)]
    assert set(judged) <= {"tuned", "base", "tie"}
    assert panel.summary.item(3, 1).text() != "—"
    assert panel.examples.rowCount() == 2
    reference = panel.examples.item(0, EXAMPLE_COLUMNS.index("Reference")).text()
    assert reference.startswith("Arr!")
    assert "Reference: Arr!" in panel.detail.text()  # the selected example's whole texts
    assert "2 of 3 test examples" in panel.note.text()
    assert (paths.runs_dir() / "tiny-run" / GENERATION_EVAL_FILE).is_file()
    cell = page.table.item(0, COLUMNS.index("ROUGE-L"))
    assert "→" in cell.text() and "token F1" in cell.toolTip()
    assert page.evaluate_button.isEnabled()


def test_cancel_stops_the_evaluation_and_saves_nothing(qtbot, page):
    from mlx_lora import paths

    panel = page.evaluation
    panel.limit.setValue(0)  # every example
    panel.max_tokens.setValue(4096)  # long answers: the cancel arrives mid-generation
    evaluation = page.controller.evaluation
    with qtbot.waitSignal(evaluation.progressed, timeout=60000,
                          check_params_cb=lambda message, done, total: message.startswith("generating")):
        page.evaluate_button.click()
    assert panel.cancel_button.isEnabled()
    with qtbot.waitSignal(evaluation.cancelled, timeout=60000):
        panel.cancel_button.click()
    assert panel.status.text() == "Evaluation cancelled; nothing was saved."
    assert not panel.cancel_button.isEnabled() and page.evaluate_button.isEnabled()
    assert not (paths.runs_dir() / "tiny-run" / GENERATION_EVAL_FILE).exists()


def test_a_bad_judge_prompt_is_refused_before_anything_runs(qtbot, page):
    panel = page.evaluation
    panel.judge.setChecked(True)
    panel.judge_prompt.setPlainText("Which is better? {answer}")
    with qtbot.waitSignal(page.controller.evaluation.failed, timeout=5000):
        page.evaluate_button.click()
    assert "unknown placeholder(s) {answer}" in panel.status.text()
    assert not page.controller.evaluation.is_busy() and page.evaluate_button.isEnabled()
