"""Prompt records (objective grpo): validated by line like every other format, the sample
dataset, and the objective refusing data it cannot train on before any model loads."""

from __future__ import annotations

import json
import re

import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.data.records import PROMPT, check_record
from mlx_lora.data.validate import validate_dataset, validate_file
from mlx_lora.errors import UserError
from mlx_lora.paths import sample_datasets_dir
from mlx_lora.train.objectives import objective_for


def line(obj) -> bytes:
    return (json.dumps(obj) + "\n").encode()


def test_prompt_records_are_a_format_of_their_own():
    assert check_record({"prompt": "What is 1 plus one?", "answer": "2"}) == (PROMPT, [])
    chat = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}], "answer": 2}
    assert check_record(chat) == (PROMPT, [])


def test_bad_prompt_records_are_named_by_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(line({"prompt": "What is 1 plus one?", "answer": "2"})
                     + line({"prompt": "", "answer": "3"})
                     + line({"prompt": 7})
                     + line({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]})
                     + line({"prompt": [{"role": "user"}]})
                     + line({"prompt": "ok", "tools": "nope"})
                     + line({"prompt": "p", "completion": "c"}))
    report = validate_file(path)
    assert report.format == PROMPT and report.count == 1
    assert [str(p) for p in report.problems] == [
        f"{path}:2: 'prompt' is empty",
        f"{path}:3: 'prompt' must be a string or a list of messages, got a number",
        f"{path}:4: 'prompt' ends with an 'assistant' turn; for grpo the prompt ends with the question and the "
        "model writes the answer",
        f"{path}:5: prompt[0]: missing key 'content'",
        f"{path}:6: 'tools' must be a list of objects, got a string",
        f"{path}:7: a completion record (expected 'prompt' only (no 'completion')) in a file of prompt records "
        "(6 of 7 records are prompt); one file holds one format",
    ]


def test_a_prompt_alone_in_a_completion_file_still_misses_its_completion(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(line({"prompt": "a", "completion": "b"}) * 2 + line({"prompt": "only"}))
    assert [str(p) for p in validate_file(path).problems] == [f"{path}:3: missing key 'completion'"]


def test_the_plus_one_sample_is_valid_prompt_data_with_answers():
    report = validate_dataset(sample_datasets_dir() / "plus-one")
    assert report.ok and report.format == PROMPT
    records = [json.loads(t) for t in (sample_datasets_dir() / "plus-one" / "train.jsonl").read_text().splitlines()]
    assert len(records) >= 100
    for record in records:
        n = int(re.search(r"\d+", record["prompt"]).group())  # the one number of each question
        assert record["answer"] == str(n + 1)


def test_objectives_refuse_the_wrong_data_before_the_model_loads():
    grpo = TrainConfig().replace(objective="grpo", data="d")
    with pytest.raises(UserError, match="grpo needs prompt records"):
        objective_for(grpo, "chat")
    with pytest.raises(UserError, match="which only --objective grpo trains on"):
        objective_for(TrainConfig().replace(data="d"), PROMPT)
    assert objective_for(grpo, PROMPT).name == "grpo"


@pytest.mark.parametrize("settings, message", [
    ({"rewards": ("exact",)}, "unknown reward 'exact'"),
    ({"rewards": ("format:high",)}, "the weight after ':' must be a number"),
    ({"reward_pattern": "(["}, "not a regular expression"),
    ({"group_size": 1}, "group_size"),
    ({"rewards": ()}, "GRPO needs at least one reward"),
    ({"fine_tune_type": "full"}, "needs --fine-tune-type lora or dora"),
])
def test_grpo_settings_are_validated(settings, message):
    with pytest.raises(UserError, match=message):
        TrainConfig().replace(objective="grpo", **settings)


def test_the_memory_estimate_covers_the_groups_kv_cache_and_the_update_batch():
    from mlx_lora.train.memory import estimate_training_memory, read_model_shape

    shape = read_model_shape("demo")
    sft = estimate_training_memory(TrainConfig().replace(batch_size=2, max_seq_length=64), shape=shape, device="cpu")
    grpo = TrainConfig().replace(objective="grpo", batch_size=2, max_seq_length=64, group_size=4,
                                 max_completion_tokens=16)
    estimate = estimate_training_memory(grpo, shape=shape, device="cpu")
    assert "kv_cache" not in sft.parts
    assert estimate.batch == (8, 80)  # 2 prompts × 4 answers, prompt + answer
    kv = 2 * shape.num_layers * 4 * 80 * shape.num_kv_heads * shape.head_dim * 4 + 4 * shape.vocab_size * 4
    assert estimate.parts["kv_cache"] == kv
    bigger = estimate_training_memory(grpo.replace(group_size=8), shape=shape, device="cpu")
    assert bigger.parts["activations"] == 2 * estimate.parts["activations"]
    assert bigger.parts["kv_cache"] > estimate.parts["kv_cache"]
