"""ChatSession: the chat template, streaming, sampling settings, stop tokens, cancel,
base vs tuned with one model — on the tiny random llama (and once on the demo model)."""

from __future__ import annotations

import json
import shutil

import pytest

import mlx_lora  # noqa: F401
from mlx_lora import backend
from mlx_lora.adapters import strip_adapters
from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model
from mlx_lora.errors import UserError
from tests.core.test_chat_helpers import tiny_run, user  # noqa: F401


class CountingModel:
    """Wraps an mlx-lm model: counts the calls that pick a token and, after ``force_after``
    tokens, makes ``force_token`` the likeliest next one. mlx-lm prefills all but the
    prompt's last token in one call; the last prompt token and every generated token then
    go in one at a time, and each of those calls picks one token."""

    def __init__(self, inner, force_token: int | None = None, force_after: int = 0) -> None:
        self.inner = inner
        self.layers = inner.layers
        self.decode_calls = 0
        self.force_token, self.force_after = force_token, force_after

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, inputs, cache=None, **kwargs):
        import mlx.core as mx

        logits = self.inner(inputs, cache=cache, **kwargs)
        if inputs.shape[1] == 1:
            self.decode_calls += 1  # this call picks token number decode_calls
        if self.force_token is not None and self.decode_calls > self.force_after:
            boost = mx.zeros(logits.shape[-1]).at[self.force_token].add(1e4)
            logits = logits + boost
        return logits


@pytest.fixture(scope="module")
def tiny_chat(tiny_run):
    return load_chat_model(adapter=tiny_run)


def test_stream_matches_mlx_lm_generate_token_for_token(tiny_chat):
    from mlx_lm import generate

    session = ChatSession(tiny_chat.model, tiny_chat.tokenizer)
    settings = ChatSettings(temperature=0.0, max_tokens=12)
    deltas = list(session.stream(user("Tell me a story."), settings))

    assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
    assert deltas[-1].finish_reason == "length" and deltas[-1].token_count == 12
    assert [d.token_count for d in deltas] == list(range(1, 13))
    assert all(d.tokens_per_second > 0 for d in deltas)
    prompt = session.encode(user("Tell me a story."), settings)
    expected = generate(tiny_chat.model, tiny_chat.tokenizer, prompt, max_tokens=12)
    assert "".join(d.text for d in deltas) == expected


def test_prompt_is_the_chat_template_with_system_prompt_and_history(tiny_chat):
    session = ChatSession(tiny_chat.model, tiny_chat.tokenizer)
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy!"},
               {"role": "user", "content": "Where is the treasure?"}]
    ids = session.encode(history, ChatSettings(system_prompt="You are a pirate."))
    text = tiny_chat.tokenizer.decode(ids)
    assert text == (
        "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nAhoy!<|im_end|>\n<|im_start|>user\nWhere is the treasure?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # a conversation that brings its own system message keeps it
    own = session.encode([{"role": "system", "content": "Be brief."}, *user("Hi")],
                         ChatSettings(system_prompt="ignored"))
    assert "Be brief." in tiny_chat.tokenizer.decode(own) and "ignored" not in tiny_chat.tokenizer.decode(own)


def test_stops_at_the_templates_end_of_turn_token_even_when_the_config_eos_differs(tiny_model, tmp_path):
    # config says EOS is <|endoftext|> (0); the ChatML template ends turns with <|im_end|> (2)
    base = tmp_path / "eos0"
    shutil.copytree(tiny_model, base)
    for name in ("config.json", "generation_config.json"):
        data = json.loads((base / name).read_text())
        data["eos_token_id"] = 0
        (base / name).write_text(json.dumps(data))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        data = json.loads((base / name).read_text())
        data["eos_token"] = "<|endoftext|>"
        (base / name).write_text(json.dumps(data))
    chat = load_chat_model(base)
    im_end = chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end == 2 and chat.tokenizer.eos_token_id == 0
    model = CountingModel(chat.model, force_token=im_end, force_after=3)
    session = ChatSession(model, chat.tokenizer)

    deltas = list(session.stream(user("Hi"), ChatSettings(temperature=0.0, max_tokens=50)))

    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].token_count == 4  # three tokens, then <|im_end|>
    assert "<|im_end|>" not in "".join(d.text for d in deltas)


def test_cancel_stops_within_one_token(tiny_chat):
    model = CountingModel(tiny_chat.model)
    session = ChatSession(model, tiny_chat.tokenizer)
    seen = []

    def should_stop() -> bool:
        return len(seen) >= 5

    for delta in session.stream(user("Count to a hundred."), ChatSettings(max_tokens=200), should_stop):
        seen.append(delta)

    assert seen[-1].finished and seen[-1].finish_reason == "cancelled"
    assert seen[-1].token_count == 5
    # 5 tokens delivered; mlx-lm computes the next one ahead, and no more than that
    assert model.decode_calls <= 6


def test_cancel_before_the_first_token_processes_nothing(tiny_chat):
    model = CountingModel(tiny_chat.model)
    deltas = list(ChatSession(model, tiny_chat.tokenizer).stream(user("Hi"), ChatSettings(), lambda: True))
    assert [(d.finished, d.finish_reason, d.token_count) for d in deltas] == [(True, "cancelled", 0)]
    assert model.decode_calls == 0


def test_seed_makes_sampling_repeatable_and_settings_change_the_answer(tiny_chat):
    session = ChatSession(tiny_chat.model, tiny_chat.tokenizer)
    hot = ChatSettings(temperature=1.5, max_tokens=16, seed=7)
    first = session.answer(user("Hi"), hot).text
    assert session.answer(user("Hi"), hot).text == first
    assert session.answer(user("Hi"), ChatSettings(temperature=1.5, max_tokens=16, seed=8)).text != first
    greedy = session.answer(user("Hi"), ChatSettings(temperature=0.0, max_tokens=16)).text
    # top_k=1 is greedy whatever the temperature; a strong repetition penalty changes the greedy answer
    assert session.answer(user("Hi"), ChatSettings(temperature=1.5, top_k=1, max_tokens=16, seed=3)).text == greedy
    penalised = session.answer(user("Hi"), ChatSettings(temperature=0.0, repetition_penalty=5.0, max_tokens=16))
    assert penalised.text != greedy


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0), dict(min_p=1.0), dict(max_tokens=0),
                                 dict(repetition_penalty=0), dict(top_k=-1)])
def test_bad_settings_are_user_errors(bad):
    with pytest.raises(UserError):
        ChatSettings(**bad)


def test_bad_conversations_are_user_errors(tiny_chat):
    session = ChatSession(tiny_chat.model, tiny_chat.tokenizer)
    with pytest.raises(UserError, match="empty"):
        session.encode([])
    with pytest.raises(UserError, match="message 1"):
        session.encode([{"role": "robot", "content": "x"}])


def test_compare_answers_with_base_and_adapter_from_one_model(tiny_chat, tiny_run):
    session = ChatSession(tiny_chat.model, tiny_chat.tokenizer)
    settings = ChatSettings(temperature=0.0, max_tokens=10)
    answers: dict[str, str] = {"base": "", "tuned": ""}
    for side, delta in session.compare(user("Hello there"), settings):
        answers[side] += delta.text

    tuned_alone = session.answer(user("Hello there"), settings).text
    base_alone = load_chat_model(tiny_chat.base_dir)
    base_answer = ChatSession(base_alone.model, base_alone.tokenizer).answer(user("Hello there"), settings).text
    assert answers["tuned"] == tuned_alone
    assert answers["base"] == base_answer
    assert answers["base"] != answers["tuned"]
    assert tiny_chat.adapter is not None  # the adapter is back on after the base's answer


def test_a_second_stream_on_the_same_session_while_one_runs_is_refused(tiny_chat):
    session = ChatSession(tiny_chat.model, tiny_chat.tokenizer)
    first = session.stream(user("Hi"), ChatSettings(max_tokens=5))
    next(first)
    with pytest.raises(RuntimeError, match="already answering"):
        next(session.stream(user("Hi"), ChatSettings(max_tokens=5)))
    first.close()
    assert session.answer(user("Hi"), ChatSettings(max_tokens=2)).token_count == 2


def test_without_adapter_the_base_answers(tiny_model, tiny_run):
    chat = load_chat_model(adapter=tiny_run)
    session = ChatSession(chat.model, chat.tokenizer)
    settings = ChatSettings(temperature=0.0, max_tokens=8)
    with_adapter = session.answer(user("Hi"), settings).text
    base_via_flag = session.answer(user("Hi"), settings, use_adapter=False).text
    strip_adapters(chat.model)
    assert chat.adapter is None
    assert session.answer(user("Hi"), settings).text == base_via_flag != with_adapter


@pytest.mark.demo
def test_demo_model_answers_and_stops_at_end_of_turn(demo_model):
    chat = load_chat_model("demo")
    session = ChatSession(chat.model, chat.tokenizer)
    answer = session.answer(user("What is the capital of France?"), ChatSettings(temperature=0.0, max_tokens=40))
    assert "Paris" in answer.text
    assert answer.finish_reason == "stop" and answer.token_count < 40
    # CPU: float32 compute (quantised matmuls skip BLAS there); a GPU keeps the 4-bit weights
    assert any("dequantised" in note for note in chat.notes) == (backend.device_kind() == "cpu")
