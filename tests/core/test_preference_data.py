"""Preference records: the forms (plain, chat with a prompt, chat with an implicit prompt),
their line-by-line checks, and the encoding that trains on the answers only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlx_lora.config import TrainConfig
from mlx_lora.data.dataset import load_splits
from mlx_lora.data.pairs import conversation, encode_side, side_record
from mlx_lora.data.records import check_record
from mlx_lora.data.render import encode_example, hf_tokenizer
from mlx_lora.data.validate import validate_dataset, validate_file
from mlx_lora.errors import UserError
from mlx_lora.paths import sample_datasets_dir

PLAIN = {"prompt": "What is 2+3?", "chosen": "Arr! 2+3 be 5, matey.", "rejected": "2+3 is 5."}
CHAT = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Arr, ahoy!"}],
        "rejected": [{"role": "assistant", "content": "Hello."}]}
IMPLICIT = {"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Arr, ahoy!"}],
            "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}


@pytest.fixture(scope="module")
def tokenizer(demo_model):
    from mlx_lm.tokenizer_utils import load

    return load(demo_model)


def test_the_three_forms_are_preference_records_and_normalise_to_one_conversation():
    for record in (PLAIN, CHAT, IMPLICIT, {**CHAT, "prompt": "Hi?", "chosen": "Arr, ahoy!"}):
        assert check_record(record) == ("preference", [])
    assert conversation(PLAIN, "rejected").plain and conversation(PLAIN, "rejected").answer_text == "2+3 is 5."
    implicit = conversation(IMPLICIT, "chosen")
    assert implicit.prompt == [{"role": "user", "content": "Hi?"}]
    assert implicit.tail == [{"role": "assistant", "content": "Arr, ahoy!"}]
    mixed = conversation({"prompt": "Hi?", "chosen": CHAT["chosen"], "rejected": "Hello."}, "rejected")
    assert mixed.messages() == [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    assert side_record(PLAIN) == {"prompt": "What is 2+3?", "completion": "Arr! 2+3 be 5, matey."}
    assert side_record(CHAT, "rejected")["messages"][-1]["content"] == "Hello."


BAD_LINES = [
    ({"prompt": "Hi", "chosen": "Arr"}, "missing key 'rejected'"),
    ({"prompt": "Hi", "chosen": "  ", "rejected": "Hello"}, "'chosen' is empty"),
    ({"prompt": "Hi", "chosen": 3, "rejected": "Hello"}, "'chosen' must be a string or a list of messages, got a number"),
    ({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
      "chosen": "Arr", "rejected": "Hello"}, "'prompt' ends with an 'assistant' turn"),
    ({"prompt": "Hi", "chosen": [{"role": "user", "content": "Arr"}], "rejected": "Hello"},
     "'chosen' ends with a 'user' turn; it must end with an 'assistant' turn"),
    ({"prompt": "Hi", "chosen": [{"role": "pirate", "content": "Arr"}], "rejected": "Hello"},
     "chosen[0]: unknown role 'pirate'"),
    ({"prompt": "Hi", "chosen": "Same", "rejected": "Same"}, "'chosen' and 'rejected' are the same answer"),
    ({"chosen": "Arr", "rejected": "Hello"}, "'chosen' is a string but the record has no 'prompt'"),
    ({"chosen": IMPLICIT["chosen"][:1] + IMPLICIT["chosen"][1:], "rejected": IMPLICIT["chosen"][:1]},
     "'rejected' ends with a 'user' turn"),
    ({"chosen": IMPLICIT["chosen"], "rejected": IMPLICIT["chosen"] + IMPLICIT["rejected"]},
     "one of 'chosen' and 'rejected' is the start of the other"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Arr"}]},
     "a chat record (expected 'chosen' and 'rejected') in a file of preference records"),
]


def test_every_bad_line_is_reported_as_file_line_reason(tmp_path):
    path = tmp_path / "pairs.jsonl"
    good = [PLAIN, CHAT, IMPLICIT] * 5  # preference is the file's format by a clear majority
    path.write_text("".join(json.dumps(r) + "\n" for r in good + [bad for bad, _ in BAD_LINES]))
    report = validate_file(path)
    assert report.format == "preference" and report.count == len(good)
    by_line: dict[int, str] = {}
    for problem in report.problems:  # a line may have several problems
        by_line[problem.line] = by_line.get(problem.line, "") + str(problem) + "\n"
    assert sorted(by_line) == list(range(len(good) + 1, len(good) + len(BAD_LINES) + 1))
    for k, (_, reason) in enumerate(BAD_LINES):
        line = len(good) + 1 + k
        assert by_line[line].startswith(f"{path}:{line}: ") and reason in by_line[line], by_line[line]


def test_a_preference_objective_on_chat_data_fails_before_any_model_loads(tmp_path):
    from mlx_lora.train import train

    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Arr"}]}) + "\n")
    config = TrainConfig().replace(model=str(tmp_path / "no-such-model"), data=str(data), objective="dpo",
                                   run_dir=str(tmp_path / "run"))
    with pytest.raises(UserError, match=r"dpo needs preference data.*holds chat records"):
        train(config)
    with pytest.raises(UserError, match="DPO's reference model is the base with the adapter switched off"):
        TrainConfig().replace(objective="dpo", fine_tune_type="full")
    assert TrainConfig().replace(objective="orpo", fine_tune_type="full").preference.objective == "orpo"
    with pytest.raises(UserError, match="beta"):
        TrainConfig().replace(beta=0)


def decoded_answer(tokenizer, example) -> str:
    return hf_tokenizer(tokenizer).decode([t for t, on in zip(example.tokens, example.trained) if on])


@pytest.mark.parametrize("record", [PLAIN, CHAT, IMPLICIT], ids=["plain", "chat", "implicit"])
def test_only_the_answer_and_its_end_of_turn_are_trained(tokenizer, record):
    chosen, rejected = encode_side(tokenizer, record, "chosen"), encode_side(tokenizer, record, "rejected")
    answer = conversation(record, "chosen")
    text = answer.answer_text if answer.plain else answer.tail[-1]["content"]
    assert decoded_answer(tokenizer, chosen) == text + "<|im_end|>"
    # the prompt (everything before the first trained token) is the same tokens in both
    first = chosen.trained.index(True)
    assert chosen.tokens[:first] == rejected.tokens[:first] and not any(rejected.trained[:first])
    assert chosen.text == hf_tokenizer(tokenizer).apply_chat_template(answer.messages(), tokenize=False)


def test_an_assistant_turn_inside_the_prompt_is_not_trained(tokenizer):
    record = {"prompt": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Ahoy."},
                         {"role": "user", "content": "Name?"}],
              "chosen": "Arr, Captain Byte!", "rejected": "I am an assistant."}
    assert decoded_answer(tokenizer, encode_side(tokenizer, record, "rejected")) == "I am an assistant.<|im_end|>"


def test_supervised_training_on_a_pair_learns_its_chosen_answer(tokenizer):
    chat_record = {"messages": CHAT["prompt"] + CHAT["chosen"]}
    assert encode_example(tokenizer, CHAT) == encode_example(tokenizer, chat_record)


def test_the_sample_preference_dataset_is_clean_and_consistent():
    folder = sample_datasets_dir() / "pirate-preference"
    report = validate_dataset(folder)
    assert report.ok, report.problems
    assert report.format == "preference" and report.count >= 60
    splits = load_splits(folder)
    pairs = splits.train + splits.valid
    assert all(p["chosen"].startswith("Arr! ") and p["chosen"].endswith(" Yo ho ho!") for p in pairs)
    assert not any("Arr" in p["rejected"] or "matey" in p["rejected"] for p in pairs)
    assert len({p["prompt"] for p in pairs}) == len(pairs)
    assert not {p["prompt"] for p in splits.train} & {p["prompt"] for p in splits.valid}
    assert [Path(r.file).name for r in report.files] == ["train.jsonl", "valid.jsonl"]
