"""``mlx-lora train --objective dpo|orpo`` end to end on the tiny model, and the error for
preference objectives on data without pairs."""

from __future__ import annotations

import json
import math

from mlx_lora.cli.main import main
from tests.core.test_preference_train import write_pairs
from tests.core.test_train_helpers import write_dataset


def test_dpo_from_the_command_line_prints_and_logs_reward_margins(tiny_model, tmp_path, capsys):
    data = write_pairs(tmp_path / "pairs", train=12, valid=4)
    common = ["--model", str(tiny_model), "--data", str(data), "--iters", "4", "--batch-size", "2",
              "--learning-rate", "5e-3", "--lr-schedule", "constant", "--steps-per-eval", "4",
              "--num-layers", "-1", "--max-seq-length", "128", "--steps-per-report", "1"]
    assert main(["train", *common, "--objective", "dpo", "--beta", "0.2", "--run-dir", str(tmp_path / "dpo")]) == 0
    out = capsys.readouterr().out
    assert "val loss 0.6931  reward margin 0.0000  accuracy 0%" in out  # step 0: policy == reference
    assert "note: DPO (beta 0.2)" in out and "finished at step 4" in out
    saved = (tmp_path / "dpo" / "config.yaml").read_text()
    assert "preference:\n  objective: dpo\n  beta: 0.2\n" in saved

    assert main(["train", *common, "--objective", "orpo", "--run-dir", str(tmp_path / "orpo"), "--json-events"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    evals = [e for e in events if e["event"] == "eval_report"]
    assert [e["step"] for e in evals] == [0, 4]
    assert all(math.isfinite(e["reward_margin"]) and 0 <= e["reward_accuracy"] <= 1 for e in evals)
    assert events[-1]["event"] == "run_finished"


def test_dpo_on_chat_data_is_a_user_error(tiny_model, tmp_path, capsys):
    data = write_dataset(tmp_path / "chat", train=4, valid=2)
    code = main(["train", "--model", str(tiny_model), "--data", str(data), "--objective", "dpo",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "dpo needs preference data" in err and "holds chat records" in err
