"""``mlx-lora train --objective grpo`` end to end on the tiny model: the flags come from
the grpo config section, the progress lines show the mean reward, the run folder keeps
the settings; bad prompt data and a missing reward file are named before any model loads."""

from __future__ import annotations

import json

from mlx_lora.cli.main import main
from tests.core.test_grpo_train import write_prompts


def test_grpo_from_the_command_line_prints_rewards(tiny_model, tmp_path, capsys):
    data = write_prompts(tmp_path / "prompts", train=6, valid=1)
    code = main(["train", "--model", str(tiny_model), "--data", str(data), "--objective", "grpo", "--iters", "2",
                 "--batch-size", "1", "--group-size", "3", "--max-completion-tokens", "4", "--rewards", "format",
                 "length:0.5", "--reward-pattern", "^ ?[a-m]", "--grpo-beta", "0.05", "--steps-per-report", "1",
                 "--steps-per-eval", "2", "--val-batches", "1", "--num-layers", "-1",
                 "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "note: GRPO: 3 answers per prompt (up to 4 tokens, temperature 0.8), rewards format, length" in out
    assert "step     1  reward " in out and "(format " in out and "kl 0.0000" in out
    assert "val reward" in out and "finished at step 2" in out
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "grpo:\n  group_size: 3\n  grpo_beta: 0.05\n" in saved and "- length:0.5" in saved
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged if e["event"] == "reward_report"] == [1, 2]


def test_bad_prompt_data_and_a_missing_reward_file_are_named(tiny_model, tmp_path, capsys):
    data = tmp_path / "bad"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": ""}) + "\n")
    code = main(["train", "--model", str(tiny_model), "--data", str(data), "--objective", "grpo",
                 "--rewards", "format", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and f"{data / 'train.jsonl'}:2: 'prompt' is empty" in err
    good = write_prompts(tmp_path / "good", train=3, valid=1)
    code = main(["train", "--model", str(tiny_model), "--data", str(good), "--objective", "grpo",
                 "--reward-file", str(tmp_path / "nope.py"), "--run-dir", str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert code == 2 and "reward_file (grpo.reward_file, --reward-file)" in err and "no such file" in err
