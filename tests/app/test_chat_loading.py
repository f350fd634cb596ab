"""Loading a chat model builds the tokenizer's vocabulary once: each build holds the GIL
(~40 ms for a 49k vocabulary), and mlx-lm's loader asks for it three times."""

from __future__ import annotations

from transformers.tokenization_utils_tokenizers import PreTrainedTokenizerFast

from app.controllers.chat import _vocab_built_once


def test_the_vocabulary_is_built_once_per_tokenizer_while_loading(monkeypatch):
    builds = []

    def counting_get_vocab(self):
        builds.append(id(self))
        return {"a": 0, "b": 1}

    monkeypatch.setattr(PreTrainedTokenizerFast, "get_vocab", counting_get_vocab)
    one, two = object.__new__(PreTrainedTokenizerFast), object.__new__(PreTrainedTokenizerFast)
    with _vocab_built_once():
        first = one.get_vocab()
        first["c"] = 2  # callers get a copy: changing it does not change what the next caller sees
        assert one.get_vocab() == {"a": 0, "b": 1}
        two.get_vocab()
        two.get_vocab()
    assert builds == [id(one), id(two)]
    assert PreTrainedTokenizerFast.get_vocab is counting_get_vocab  # restored after the load
    one.get_vocab()
    assert len(builds) == 3
