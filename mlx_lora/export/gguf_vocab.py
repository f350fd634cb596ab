"""The tokenizer of a GGUF export, as llama.cpp reads it: ``tokenizer.ggml.*``.

Two kinds, as ``convert_hf_to_gguf.py`` writes them:

- byte-level BPE (Llama 3, Qwen, SmolLM, Phi-3 here…): ``tokenizer.ggml.model = gpt2``,
  tokens by id, token types (control for special added tokens), merges, and the
  pre-tokenizer's llama.cpp name (``tokenizer.ggml.pre``; the importer's table read
  backwards, :data:`mlx_lora.models.gguf._PRE_TOKENIZERS`);
- SentencePiece (a ``tokenizer.model`` beside the weights: Mistral, Llama 2, Gemma):
  ``tokenizer.ggml.model = llama``, pieces, scores and types from the model itself
  (``_create_vocab_sentencepiece``), the added tokens of ``tokenizer_config.json``, and
  ``tokenizer.ggml.add_space_prefix`` — whether SentencePiece puts "▁" before the text.

Both are padded to the embedding's rows with unused ``[PADn]`` tokens. The special ids
(BOS, EOS, the chat's end of turn as EOT, PAD, UNK), ``add_bos_token`` and the chat template
are written for either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlx_lora.errors import UserError

# llama.cpp's token types (llama.h, enum llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _pre_tokenizer_name(tokenizer_json: dict) -> str | None:
    from mlx_lora.models.gguf import _PRE_TOKENIZERS  # the importer's table, read backwards

    pre = tokenizer_json.get("pre_tokenizer")
    for name, value in _PRE_TOKENIZERS.items():
        if value == pre:
            return name
    return None


def vocabulary(base_dir: Path, n_vocab: int) -> dict[str, Any]:
    """Tokens, types, merges and the pre-tokenizer of a byte-level BPE tokenizer.json."""
    path = base_dir / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{base_dir}: no tokenizer.json or tokenizer.model: the GGUF needs the base's tokenizer")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("pre_tokenizer")):
        raise UserError(f"{path}: GGUF export writes byte-level BPE (Llama 3, SmolLM, Qwen…) and SentencePiece "
                        "(a tokenizer.model) vocabularies; this tokenizer is neither — export --format mlx or hf")
    by_id: dict[int, tuple[str, int]] = {i: (tok, NORMAL) for tok, i in model["vocab"].items()}
    for added in data.get("added_tokens") or []:
        by_id[added["id"]] = (added["content"], CONTROL if added.get("special") else USER_DEFINED)
    size = max(n_vocab, max(by_id) + 1)
    tokens = [by_id.get(i, (f"[PAD{i}]", UNUSED))[0] for i in range(size)]
    types = [by_id.get(i, ("", UNUSED))[1] for i in range(size)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"model": "gpt2", "tokens": tokens, "types": types, "merges": merges, "pre": _pre_tokenizer_name(data)}


def sentencepiece_vocabulary(base_dir: Path, n_vocab: int) -> dict[str, Any]:
    """Pieces, scores and types of ``tokenizer.model``, with the added tokens of
    tokenizer_config.json (convert_hf_to_gguf.py's ``_create_vocab_sentencepiece``)."""
    from sentencepiece import SentencePieceProcessor

    processor = SentencePieceProcessor()
    processor.LoadFromFile(str(base_dir / "tokenizer.model"))
    size = max(n_vocab, processor.vocab_size())
    tokens = [f"[PAD{i}]" for i in range(size)]
    scores = [-10000.0] * size
    types = [UNUSED] * size
    for i in range(processor.vocab_size()):
        tokens[i], scores[i] = processor.IdToPiece(i), processor.GetScore(i)
        types[i] = (UNKNOWN if processor.IsUnknown(i) else CONTROL if processor.IsControl(i)
                    else UNUSED if processor.IsUnused(i) else BYTE if processor.IsByte(i) else NORMAL)
    config_path = base_dir / "tokenizer_config.json"
    decoder = json.loads(config_path.read_text()).get("added_tokens_decoder", {}) if config_path.is_file() else {}
    for key, added in decoder.items():
        i = int(key)
        if i < size:
            special = added.get("special")
            tokens[i] = added["content"] if special else added["content"].replace("\u2581", " ")
            scores[i], types[i] = -1000.0, CONTROL if special else USER_DEFINED
    # SentencePiece's add_dummy_prefix (normalizer_spec): "a" is "▁a" when it is on
    add_space_prefix = processor.EncodeAsPieces("a")[:1] == ["\u2581a"]
    return {"model": "llama", "tokens": tokens, "types": types, "scores": scores, "pre": "default",
            "add_space_prefix": add_space_prefix}


def read_vocabulary(base_dir: Path, n_vocab: int) -> dict[str, Any]:
    """SentencePiece when the base has a ``tokenizer.model`` (as convert_hf_to_gguf.py's
    llama/gemma models prefer it), else byte-level BPE from tokenizer.json."""
    if (base_dir / "tokenizer.model").is_file():
        return sentencepiece_vocabulary(base_dir, n_vocab)
    return vocabulary(base_dir, n_vocab)


def chat_template(base_dir: Path) -> str | None:
    config_path = base_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not template and (base_dir / "chat_template.jinja").is_file():
        template = (base_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return template or None


def write_vocabulary(writer, vocab: dict[str, Any], tokenizer, base_dir: Path, eos_ids: set[int]) -> list[str]:
    """``tokenizer.ggml.*`` and the chat template into ``writer``; returns notes for the card."""
    notes = []
    writer.add_tokenizer_model(vocab["model"])
    if vocab["pre"] is None:
        notes.append("the tokenizer's pre-tokenizer has no llama.cpp name here: written as 'default' (GPT-2's)")
    writer.add_tokenizer_pre(vocab["pre"] or "default")
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    if "scores" in vocab:
        writer.add_token_scores(vocab["scores"])
    if "merges" in vocab:
        writer.add_token_merges(vocab["merges"])
    if "add_space_prefix" in vocab:
        writer.add_add_space_prefix(vocab["add_space_prefix"])
    hf = getattr(tokenizer, "_tokenizer", tokenizer)
    eos = sorted(eos_ids)
    if hf.bos_token_id is not None:
        writer.add_bos_token_id(int(hf.bos_token_id))
    if eos:
        # the chat's end-of-turn token is what must stop generation
        end_of_turn = [i for i in eos if i != hf.eos_token_id] or eos
        writer.add_eos_token_id(int(hf.eos_token_id if hf.eos_token_id in eos else end_of_turn[0]))
        writer.add_eot_token_id(int(end_of_turn[0]))
    if hf.pad_token_id is not None:
        writer.add_pad_token_id(int(hf.pad_token_id))
    if hf.unk_token_id is not None:
        writer.add_unk_token_id(int(hf.unk_token_id))
    writer.add_add_bos_token(bool(getattr(hf, "add_bos_token", False)))
    template = chat_template(base_dir)
    if template:
        writer.add_chat_template(template)
    else:
        notes.append("the base has no chat template: the GGUF has none either")
    return notes
