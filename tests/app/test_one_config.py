"""One set of settings: the Data page's split, seed, max length and prompt-masking
controls edit the same TrainConfig the Train page shows and starts, and the Data page
shows the split the engine will make (a folder's own valid.jsonl included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from app.controllers.app_state import AppState
from app.controllers.data import DataController
from app.controllers.training import TrainingController
from app.pages.data_page import DataPage
from app.pages.train_page import TrainPage
from app.training_supervisor import TrainingSupervisor
from mlx_lora.config import TrainConfig
from mlx_lora.data.dataset import load_splits

FAKE = Path(__file__).with_name("fake_trainer.py")


def chat(k: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"What is {k} + {k}?"},
                                    {"role": "assistant", "content": f"It is {2 * k}."}]})


def write(path: Path, count: int) -> None:
    path.write_text("".join(chat(k) + "\n" for k in range(count)))


def pages(qtbot, tmp_path):
    started = []

    def command_for(config_path=None, resume_dir=None):
        started.append(config_path)
        return [sys.executable, str(FAKE), "--run-dir", str(tmp_path / "run"), "--steps", "2"]

    state = AppState()
    data_page = DataPage(DataController(state))
    train_controller = TrainingController(state, TrainingSupervisor(command_for=command_for))
    train_page = TrainPage(train_controller)
    for page in (data_page, train_page):
        qtbot.addWidget(page)
    return state, data_page, train_page, started


def test_a_data_page_setting_is_in_the_config_the_train_page_starts(qtbot, tmp_path):
    state, data_page, train_page, started = pages(qtbot, tmp_path)
    single = tmp_path / "one.jsonl"
    write(single, 30)
    with qtbot.waitSignal(data_page.controller.dataset_checked, timeout=30_000):
        data_page.open(str(single))
    data_page.valid_ratio.setValue(20)
    data_page.test_ratio.setValue(10)
    data_page.seed.setValue(7)
    data_page.max_length.setValue(300)
    data_page.max_length.editingFinished.emit()
    data_page.mask_prompt.setChecked(False)
    form = train_page.form
    assert form.editor("data", "max_seq_length").value() == 300  # the Train page shows the same config
    assert form.editor("data", "mask_prompt").isChecked() is False

    form.editor("data", "valid_ratio").setValue(0.3)  # and the other way round
    assert data_page.valid_ratio.value() == 30

    with qtbot.waitSignal(train_page.controller.run_ended, timeout=15_000):
        train_page.start_button.click()
    saved = TrainConfig.from_yaml(started[0])
    assert (saved.data.valid_ratio, saved.data.test_ratio, saved.run.seed) == (0.3, 0.1, 7)
    assert (saved.data.max_seq_length, saved.data.mask_prompt) == (300, False)
    assert saved.data.data == str(single)

    splits = load_splits(single, 0.3, 0.1, 7)  # what the trainer makes of it
    assert data_page.split_label.text() == \
        f"train {len(splits.train)} · validation {len(splits.valid)} · test {len(splits.test)}"


def test_a_folder_with_its_own_valid_jsonl_shows_the_engines_split(qtbot, tmp_path):
    state, data_page, _train_page, _started = pages(qtbot, tmp_path)
    folder = tmp_path / "set"
    folder.mkdir()
    write(folder / "train.jsonl", 134)
    write(folder / "valid.jsonl", 15)
    with qtbot.waitSignal(data_page.controller.dataset_checked, timeout=30_000):
        data_page.open(str(folder))
    assert data_page.split_label.text() == "train 134 · validation 15 (valid.jsonl) · test 0"
    assert not data_page.valid_ratio.isEnabled()  # a ratio that does not apply cannot be edited
    splits = load_splits(folder, state.config.data.valid_ratio, 0.0, 0)
    assert (len(splits.train), len(splits.valid)) == (134, 15)


def test_start_is_refused_on_a_dataset_with_problems_named_once(qtbot, tmp_path):
    state, data_page, train_page, started = pages(qtbot, tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(chat(1) + "\n" + '{"messages": [{"role": "user"' + "\n" + chat(2) + "\n")
    with qtbot.waitSignal(data_page.controller.dataset_checked, timeout=30_000):
        data_page.open(str(broken))
    assert not train_page.start_button.isEnabled()
    assert not train_page.data_problem.isHidden()
    text = train_page.data_problem.text()
    assert "1 problem in the dataset — broken.jsonl 2: " in text and text.count("problem") == 1

    fine = tmp_path / "fine.jsonl"
    write(fine, 10)
    with qtbot.waitSignal(data_page.controller.dataset_checked, timeout=30_000):
        data_page.open(str(fine))
    assert train_page.start_button.isEnabled() and train_page.data_problem.isHidden()
    assert started == []
