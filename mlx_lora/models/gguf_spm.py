"""A SentencePiece GGUF vocabulary (``tokenizer.ggml.model = llama``: Llama 2, Mistral,
Gemma…) rebuilt as a Hugging Face ``tokenizer.json`` that tokenises as llama.cpp does.

llama.cpp's SentencePiece tokenizer (``llm_tokenizer_spm`` in llama-vocab.cpp), which is
what Ollama and LM Studio run on these files:

- special tokens (control, user-defined) are cut out of the text first; every other
  piece of text gets a leading space when ``add_space_prefix`` (default true) — after a
  special token too — and its spaces become ``▁`` (U+2581);
- the piece is split into UTF-8 characters, then adjacent pairs are merged while a merge
  makes a token, the pair whose merged token has the highest score first;
- a character left that is not a token becomes its bytes' ``<0xXX>`` tokens.

The Hugging Face equivalent: a ``Prepend("▁")`` + ``Replace(" ", "▁")`` normalizer (it runs
on each stretch of text between added tokens, as llama.cpp's prefix does), no
pre-tokenizer, and a BPE model with byte fallback whose merges are every split of every
token into two tokens, ranked by the merged token's score (as transformers'
``generate_merges`` rebuilds them for its own GGUF loader). Scores tie only among
tokens no merge makes (bytes, specials, 0.0), so rank and score order agree.
Checked against llama.cpp's own tokenisation (tests/models/test_gguf_sentencepiece.py).
"""

from __future__ import annotations

import json
from typing import Any

from mlx_lora.errors import UserError

SPACE = "\u2581"
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _values(value) -> list:
    if value is None:
        return []
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def merges_from_scores(tokens: list[str], scores: list[float], types: list[int]) -> list[list[str]]:
    """Every (left, right) whose concatenation is a token, best merged token first."""
    ids = {}
    for i, token in enumerate(tokens):
        if types[i] in (_NORMAL, _USER_DEFINED, _UNKNOWN, _CONTROL, _BYTE, _UNUSED):
            ids.setdefault(token, i)
    ranked = []
    for i, token in enumerate(tokens):
        if types[i] not in (_NORMAL, _USER_DEFINED) or len(token) < 2 or ids.get(token) != i:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[i], i, ids[left], left, right))
    ranked.sort()
    return [[left, right] for *_, left, right in ranked]


def spm_tokenizer_files(metadata: dict, where) -> dict[str, str]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json for a SentencePiece GGUF."""
    tokens = _values(metadata.get("tokenizer.ggml.tokens"))
    scores = [float(s) for s in _values(metadata.get("tokenizer.ggml.scores"))]
    types = [int(t) for t in _values(metadata.get("tokenizer.ggml.token_type"))] or [_NORMAL] * len(tokens)
    if len(scores) != len(tokens):
        raise UserError(f"{where}: a SentencePiece vocabulary needs tokenizer.ggml.scores, one per token "
                        f"({len(scores):,} scores for {len(tokens):,} tokens)")
    if len(types) != len(tokens) or not all(0 <= t <= 6 for t in types):
        raise UserError(f"{where}: tokenizer.ggml.token_type must give each of the {len(tokens):,} tokens a type 0-6")
    if not all(isinstance(t, str) for t in tokens):
        raise UserError(f"{where}: the token list must hold strings")
    prefix = bool(_scalar(metadata.get("tokenizer.ggml.add_space_prefix", True)))
    add_bos = bool(_scalar(metadata.get("tokenizer.ggml.add_bos_token", True)))  # llama.cpp's default for SPM
    add_eos = bool(_scalar(metadata.get("tokenizer.ggml.add_eos_token", False)))

    def special_id(name: str) -> int | None:
        value = metadata.get(f"tokenizer.ggml.{name}_token_id")
        return int(_scalar(value)) if value is not None else None

    ids = {name: special_id(name) for name in ("bos", "eos", "padding", "unknown")}
    unk = ids["unknown"] if ids["unknown"] is not None else next((i for i, t in enumerate(types) if t == _UNKNOWN),
                                                                 None)
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    added = [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": types[i] == _CONTROL}
        for i in range(len(tokens)) if types[i] in (_CONTROL, _USER_DEFINED) and vocab.get(tokens[i]) == i
    ]
    normalizer = [{"type": "Prepend", "prepend": SPACE}] if prefix else []
    normalizer.append({"type": "Replace", "pattern": {"String": " "}, "content": SPACE})
    decoder = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
               {"type": "ByteFallback"}, {"type": "Fuse"}]
    if prefix:
        decoder.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    single, special = [{"Sequence": {"id": "A", "type_id": 0}}], {}
    for flag, name, first in ((add_bos, "bos", True), (add_eos, "eos", False)):
        if flag and ids[name] is not None and ids[name] < len(tokens):
            token = tokens[ids[name]]
            entry = {"SpecialToken": {"id": token, "type_id": 0}}
            single = [entry, *single] if first else [*single, entry]
            special[token] = {"id": token, "ids": [ids[name]], "tokens": [token]}
    tokenizer_json = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizer},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": single,
                           "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": special},
        "decoder": {"type": "Sequence", "decoders": decoder},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": tokens[unk] if unk is not None else None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
            "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
            "merges": merges_from_scores(tokens, scores, types),
        },
    }
    return tokenizer_file_texts(tokenizer_json, tokens, ids, metadata, add_bos_token=add_bos, add_eos_token=add_eos,
                                legacy=True)  # legacy: a space after special tokens, as llama.cpp adds one


def tokenizer_file_texts(tokenizer_json: dict, tokens: list[str], ids: dict, metadata: dict,
                         **settings: Any) -> dict[str, str]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json of a GGUF's vocabulary
    (byte-level BPE or SentencePiece): ``ids`` the GGUF's bos/eos/padding/unknown token ids,
    ``settings`` the tokenizer_config entries of its kind (add_bos_token, …)."""
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000,
                              "clean_up_tokenization_spaces": False, **settings}
    for key, name in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding"), ("unk_token", "unknown")):
        if ids[name] is not None and ids[name] < len(tokens):
            config[key] = tokens[ids[name]]
    template = metadata.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = str(template)
    special_map = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in config}
    return {
        "tokenizer.json": json.dumps(tokenizer_json, ensure_ascii=False),
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False),
        "special_tokens_map.json": json.dumps(special_map, indent=2, ensure_ascii=False),
    }
