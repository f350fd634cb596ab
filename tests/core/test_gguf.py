"""GGUF import: the demo model converts, answers correctly, and bad files fail clearly."""

import json

import pytest

from mlx_lora.errors import UserError
from mlx_lora.models.gguf import _unpermute, import_gguf


def test_demo_model_answers_paris(demo_model):
    from mlx_lm import generate, load

    model, tokenizer = load(str(demo_model))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    answer = generate(model, tokenizer, prompt, max_tokens=12)
    assert "Paris" in answer


def test_demo_model_keeps_quantisation_and_chat_template(demo_model):
    config = json.loads((demo_model / "config.json").read_text())
    assert config["quantization"]["bits"] == 4
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8
    tok_config = json.loads((demo_model / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]
    assert tok_config["eos_token"] == "<|im_end|>"


def test_tokenizer_round_trips_text(demo_model):
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    tokenizer = load_tokenizer(demo_model)
    text = "Hello world, 12345\n\n  tabs\tand ünïcode 😀"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    # digits are split one by one (SmolLM's pre-tokenizer)
    assert len(tokenizer.encode("12345")) == 5


def test_unpermute_inverts_llama_cpp_permute():
    import mlx.core as mx

    n_head, rows, cols = 3, 12, 5
    w = mx.arange(rows * cols).reshape(rows, cols)
    permuted = w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)
    assert mx.array_equal(_unpermute(permuted, n_head), w)


def test_dequantized_import_matches_quantized(demo_model, tmp_path):
    import mlx.core as mx
    from mlx_lm import load

    from mlx_lora.models.demo import demo_gguf_path

    out = import_gguf(demo_gguf_path(), tmp_path / "f32", dequantize="float32")
    config = json.loads((out / "config.json").read_text())
    assert "quantization" not in config
    q_model, tokenizer = load(str(demo_model))
    f_model, _ = load(str(out))
    ids = mx.array([tokenizer.encode("The capital of France is")])
    q_logits, f_logits = q_model(ids), f_model(ids)
    assert mx.argmax(q_logits[0, -1]).item() == mx.argmax(f_logits[0, -1]).item()
    assert mx.allclose(q_logits.astype(mx.float32), f_logits, atol=0.5).item()


def test_not_a_gguf_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(UserError, match="not a GGUF file"):
        import_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_gguf_is_a_clear_error(tmp_path):
    from mlx_lora.models.demo import demo_gguf_path

    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(demo_gguf_path().read_bytes()[:200_000])
    with pytest.raises(UserError, match="truncated.gguf"):
        import_gguf(truncated, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stop_at_call", [2, 4])  # after reading the file; after writing, before publishing
def test_a_cancelled_import_leaves_nothing(demo_model, tmp_path, stop_at_call):
    from mlx_lora.errors import Cancelled
    from mlx_lora.events import RecordingReporter
    from mlx_lora.models.demo import demo_gguf_path

    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= stop_at_call

    reporter = RecordingReporter()
    with pytest.raises(Cancelled):
        import_gguf(demo_gguf_path(), tmp_path / "imported", reporter=reporter, should_stop=should_stop)
    assert len(calls) == stop_at_call
    assert [e.done for e in reporter.events] == list(range(stop_at_call - 1))  # the stages it reached
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary
