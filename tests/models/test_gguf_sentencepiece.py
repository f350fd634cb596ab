"""A SentencePiece GGUF (``tokenizer.ggml.model = llama``, scores, token types,
``add_space_prefix``: what llama.cpp's converter writes for Llama 2 and Mistral) imports
with a tokenizer that tokenises as llama.cpp itself does (llama-cpp-python), on text with
accents, emoji, code, leading and repeated spaces, newlines and special tokens.

The vocabulary is the tiny mistral's SentencePiece model (:mod:`tests.models.make_tiny`,
1,000 pieces with byte fallback, padded to 32,768 as Mistral's is), read with
sentencepiece in the judges' interpreter the way llama.cpp's ``convert_hf_to_gguf.py``
reads it; the GGUF is written with gguf-py around random weights."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from mlx_lora.export import llama_cpp_check
from mlx_lora.models.gguf import import_gguf

TEXTS = [
    "Hello world",
    " leading space",
    "   three leading spaces and  two inside",
    "naïve café, crème brûlée — Ærøskøbing",
    "emoji 😀🚀 and 中文字符 and ﬁ ligature",
    "def f(x):\n    return x ** 2  # code\n\n\tTabbed",
    "[INST] What is 2+2? [/INST] Four.</s>",
    "<s>[INST]Ahoy[/INST]",
    "numbers 1234567 and 3.14159",
    "trailing spaces   ",
    "\n\nnewlines first",
    "",
]

# llama.cpp's convert_hf_to_gguf.py, _create_vocab_sentencepiece: the piece types it writes
_READ = r"""
import json, sys
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

path, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
sp = spm.SentencePieceProcessor(model_file=path)
proto = pb.ModelProto()
proto.ParseFromString(open(path, "rb").read())
tokens, scores, types = [], [], []
for i in range(sp.vocab_size()):
    tokens.append(sp.id_to_piece(i))
    scores.append(sp.get_score(i))
    kind = 1
    if sp.is_unknown(i): kind = 2
    elif sp.is_control(i): kind = 3
    elif sp.is_unused(i): kind = 5
    elif sp.is_byte(i): kind = 6
    elif proto.pieces[i].type == 4: kind = 4
    types.append(kind)
for i in range(len(tokens), size):
    tokens.append(f"[PAD{i}]"); scores.append(-1000.0); types.append(5)
json.dump({"tokens": tokens, "scores": scores, "types": types,
           "add_space_prefix": proto.normalizer_spec.add_dummy_prefix}, open(out, "w"))
"""


@pytest.fixture(scope="module", params=[True, False], ids=["space-prefix", "no-space-prefix"])
def spm_gguf(request, tiny_families, judges_python, tmp_path_factory):
    """The vocabulary as Llama 2 and Mistral write it (a space before the text), and as Gemma's
    does (``add_space_prefix`` false: Gemma2Model.set_vocab in llama.cpp's converter)."""
    import gguf

    from tests.reliability.ggufs import tiny_spec, write_gguf

    mistral = tiny_families / "mistral"
    work = tmp_path_factory.mktemp("spm")
    vocab_size = json.loads((mistral / "config.json").read_text())["vocab_size"]
    (work / "read.py").write_text(_READ)
    subprocess.run([judges_python, str(work / "read.py"), str(mistral / "tokenizer.model"), str(work / "vocab.json"),
                    str(vocab_size)], check=True, capture_output=True, timeout=300)
    vocab = json.loads((work / "vocab.json").read_text())
    spec = tiny_spec()
    rng = np.random.default_rng(0)
    spec.tensors["token_embd.weight"] = ((rng.standard_normal((len(vocab["tokens"]), 64)) * 0.02)
                                         .astype(np.float32), "F16")
    for key in ("tokenizer.ggml.merges", "tokenizer.ggml.pre"):
        del spec.metadata[key]
    spec.metadata.update({
        "tokenizer.ggml.model": ("llama", "STRING"),
        "tokenizer.ggml.tokens": (vocab["tokens"], "ARRAY", "STRING"),
        "tokenizer.ggml.scores": (vocab["scores"], "ARRAY", "FLOAT32"),
        "tokenizer.ggml.token_type": (vocab["types"], "ARRAY", "INT32"),
        "tokenizer.ggml.add_space_prefix": (bool(vocab["add_space_prefix"]) and request.param, "BOOL"),
        "tokenizer.ggml.unknown_token_id": (0, "UINT32"),
        "tokenizer.ggml.bos_token_id": (1, "UINT32"),
        "tokenizer.ggml.eos_token_id": (2, "UINT32"),
        "tokenizer.ggml.add_bos_token": (True, "BOOL"),
        "llama.vocab_size": (len(vocab["tokens"]), "UINT32"),
    })
    assert gguf  # the writer's package
    return write_gguf(spec, work / "tiny-spm.gguf"), {**vocab, "written_space_prefix": request.param}


def test_sentencepiece_gguf_tokenises_as_llama_cpp_does(spm_gguf, tiny_families, tmp_path):
    from transformers import PreTrainedTokenizerFast

    path, vocab = spm_gguf
    assert vocab["add_space_prefix"] is True and vocab["types"].count(6) == 256  # byte fallback pieces
    if not llama_cpp_check.available():
        pytest.fail("llama-cpp-python is not importable: run `make setup-gguf`")
    _, info = llama_cpp_check.llama_cpp_logits(path, [[1, 100, 200]], n_predict=0, texts=TEXTS)
    imported = import_gguf(path, tmp_path / "imported")
    ours = PreTrainedTokenizerFast(tokenizer_file=str(imported / "tokenizer.json"))
    assert info["tokens"][6][0] == 3 and info["tokens"][7][:2] == [1, 3]  # [INST], <s> parsed as specials
    for text, theirs in zip(TEXTS, info["tokens"]):
        assert ours.encode(text, add_special_tokens=False) == theirs, text
    # the strings tell tokenizers apart: transformers' own conversion of the same SentencePiece
    # model (no prefix space after a special token, none added before a leading space) differs
    original = PreTrainedTokenizerFast(tokenizer_file=str(tiny_families / "mistral" / "tokenizer.json"))
    differ = [t for t, theirs in zip(TEXTS, info["tokens"]) if original.encode(t, add_special_tokens=False) != theirs]
    assert len(differ) >= 3, differ
    if not vocab["written_space_prefix"]:  # no space is added: "Hello" and " Hello" tokenise apart
        assert ours.encode("Hello", add_special_tokens=False) != ours.encode(" Hello", add_special_tokens=False)
    # BOS as llama.cpp adds it, and the text comes back from the ids
    assert ours.encode("Hello world")[:1] == [1]
    for text in TEXTS[:6] + TEXTS[8:]:
        assert ours.decode(ours.encode(text, add_special_tokens=False)) == text, text
