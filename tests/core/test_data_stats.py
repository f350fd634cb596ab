"""Token statistics, checked on a hand-made set with a one-token-per-character
tokenizer (so every number can be counted by eye), and on the demo tokenizer."""

from __future__ import annotations

import pytest

from mlx_lora.data.stats import dataset_stats, percentile, train_valid_overlap
from mlx_lora.errors import Cancelled

EOS = 0


class CharTokenizer:
    """One token per character (its code point); EOS is 0; no chat template."""

    eos_token_id = EOS
    chat_template = None

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        return {"input_ids": [ord(c) for c in text], "offset_mapping": [(i, i + 1) for i in range(len(text))]}

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids)


RECORDS = [
    {"text": "hello"},  # 5 + EOS = 6 tokens, all trained
    {"prompt": "ab", "completion": "cd"},  # 4 + EOS = 5; trained: c, d, EOS = 3
    {"text": "hello"},  # a duplicate: 6
    {"text": "x" * 20},  # 21: 11 over a limit of 10
    {"prompt": "p" * 12, "completion": "q"},  # 14, trained q + EOS both past token 10
]


def test_numbers_of_a_hand_made_set():
    stats = dataset_stats(CharTokenizer(), RECORDS, max_seq_length=10)
    assert stats.examples == 5
    assert stats.lengths == [6, 5, 6, 21, 14]
    assert stats.total_tokens == 52
    assert (stats.p50_length, stats.p90_length, stats.max_length) == (6, 21, 21)  # sorted: 5 6 6 14 21
    assert stats.over_max_length == 2
    assert stats.truncated_tokens == 11 + 4
    assert stats.no_trained_tokens_left == 1
    assert stats.trained_tokens == 6 + 3 + 6 + 21 + 2
    assert stats.prompt_tokens == 2 + 12
    assert stats.duplicates == 1
    assert stats.missing_eos == 0


def test_without_prompt_masking_everything_is_trained():
    stats = dataset_stats(CharTokenizer(), RECORDS, max_seq_length=10, mask_prompt=False)
    assert stats.trained_tokens == stats.total_tokens and stats.prompt_tokens == 0
    assert stats.no_trained_tokens_left == 0


def test_nearest_rank_percentiles():
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 11)), 90) == 9
    assert percentile([7], 90) == 7
    assert percentile([], 50) == 0
    assert dataset_stats(CharTokenizer(), []).max_length == 0


def test_replies_without_an_end_of_turn_token_are_counted(demo_model):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(demo_model)
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr!"}]}
    assert dataset_stats(hf, [chat, chat]).missing_eos == 0
    hf.chat_template = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                        "{% if add_generation_prompt %}assistant: {% endif %}")
    stats = dataset_stats(hf, [chat, {"text": "plain text gets its EOS quietly"}])
    assert stats.missing_eos == 1


def test_train_valid_overlap_names_the_valid_records_seen_in_train():
    train = [{"text": "a"}, {"prompt": "p", "completion": "c"}]
    valid = [{"text": "b"}, {"completion": "c", "prompt": "p"}, {"text": "a"}]
    assert train_valid_overlap(train, valid) == [1, 2]  # key order does not matter


def test_statistics_can_be_stopped_and_report_progress():
    seen = []
    dataset_stats(CharTokenizer(), RECORDS * 50, progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 250) and seen[-1] == (250, 250)
    with pytest.raises(Cancelled):
        dataset_stats(CharTokenizer(), RECORDS, should_stop=lambda: True)


def test_a_failing_template_names_the_example(demo_model):
    from transformers import AutoTokenizer

    from mlx_lora.errors import UserError

    hf = AutoTokenizer.from_pretrained(demo_model)
    hf.chat_template = "{{ raise_exception('no ' + messages[0].content) }}"
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr!"}]}
    with pytest.raises(UserError, match=r"example 2: the model's chat template failed.*no hi"):
        dataset_stats(hf, [{"text": "fine"}, chat])
