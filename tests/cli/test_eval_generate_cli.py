"""``mlx-lora eval --generate``: the summary table, where the results were saved, --json,
and bad settings refused before any model is loaded (on the tiny model: fast)."""

from __future__ import annotations

import json

import pytest

from mlx_lora.cli.main import main
from mlx_lora.run_folder import GENERATION_EVAL_FILE
from mlx_lora.train import train
from tests.core.test_train_helpers import tiny_config, write_dataset


@pytest.fixture(scope="module")
def run_dir(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-generate")
    data = write_dataset(folder / "data", train=8, valid=2, test=3)
    config = tiny_config(tiny_model, data, folder / "run", iters=2, steps_per_eval=100, save_every=100)
    assert train(config).status == "finished"
    return folder / "run"


def test_the_summary_table_and_where_it_was_saved(run_dir, capsys):
    assert main(["eval", "--run", str(run_dir), "--generate", "--limit", "2", "--max-tokens", "3"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith("2 of 3 test examples; greedy answers of at most 3 new tokens; adapter final")
    for label in ("exact match", "token F1", "ROUGE-L", "reference loss/token", "best (tuned − base ROUGE-L):",
                  "worst:", "reference: Arr!"):
        assert label in out
    assert f"saved: {run_dir / GENERATION_EVAL_FILE}" in out
    assert "generating 2/2 (tuned)" in captured.err  # progress on stderr, the table alone on stdout
    saved = json.loads((run_dir / GENERATION_EVAL_FILE).read_text())
    assert saved["settings"]["max_tokens"] == 3 and len(saved["examples"]) == 2


def test_json_and_the_validation_split(run_dir, capsys):
    assert main(["eval", "--run", str(run_dir), "--generate", "--split", "valid", "--limit", "1",
                 "--max-tokens", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "valid" and len(result["examples"]) == 1
    assert result["saved"].endswith(GENERATION_EVAL_FILE)
    assert set(result["tuned"]) == {"exact_match", "token_f1", "rouge_l", "loss", "perplexity"}


def test_bad_settings_are_refused(run_dir, capsys):
    assert main(["eval", "--run", str(run_dir), "--generate", "--max-tokens", "0"]) == 2
    assert "max_tokens must be at least 1" in capsys.readouterr().err


def test_a_judge_with_its_own_prompt_and_a_bad_prompt_refused(run_dir, tmp_path, capsys):
    assert main(["eval", "--print-judge-prompt"]) == 0
    default = capsys.readouterr().out
    assert "{answer_a}" in default and "{reference}" in default
    own = tmp_path / "judge.txt"
    own.write_text("Question: {prompt}\nA: {answer_a}\nB: {answer_b}\nBetter (A or B)?")
    assert main(["eval", "--run", str(run_dir), "--generate", "--limit", "1", "--max-tokens", "2", "--judge",
                 "--judge-prompt", str(own), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["judge"] == "base" and result["settings"]["judge_prompt"] == own.read_text()
    assert result["examples"][0]["judge"] in ("tuned", "base", "tie")
    own.write_text("no answers here: {question}")
    assert main(["eval", "--run", str(run_dir), "--generate", "--judge", "--judge-prompt", str(own)]) == 2
    assert "unknown placeholder(s) {question}" in capsys.readouterr().err
