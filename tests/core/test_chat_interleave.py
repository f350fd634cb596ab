"""Base and tuned answers streamed at once, a token of each in turn, over ONE model:
each answer equals what it gives alone (greedy against plain mlx-lm on a fresh base; sampled
with a seed against the answers one after the other), for LoRA and for a full fine-tune
(whose switch swaps weights, not layers); a stop ends both mid-stream."""

from __future__ import annotations

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.chat import ChatRequest, ChatSession, ChatSettings, load_chat_model
from mlx_lora.chat.sampling import KeyedSampler
from tests.core.test_chat import CountingModel
from tests.core.test_chat_helpers import make_adapter, tiny_run, user  # noqa: F401

PROMPT = user("Tell me a long story about the sea.")


@pytest.fixture(scope="module", params=["lora", "full"])
def tuned(request, tiny_model, tmp_path_factory):
    """(the tiny model with an adapter of that kind on it, the tiny base loaded alone)."""
    adapter = make_adapter(tiny_model, tmp_path_factory.mktemp(request.param) / "adapter",
                           fine_tune_type=request.param, b_std=0.05 if request.param == "lora" else 0.5)
    return load_chat_model(tiny_model, adapter), load_chat_model(tiny_model)


def alone(chat, prompt: list[int], max_tokens: int) -> str:
    """mlx-lm's own greedy answer on ``chat``'s model as it is now."""
    from mlx_lm import generate

    return generate(chat.model, ChatSession(chat.model, chat.tokenizer).tokenizer, prompt, max_tokens=max_tokens)


def texts(deltas) -> dict[str, str]:
    out: dict[str, str] = {}
    for delta in deltas:
        delta = delta[1] if isinstance(delta, tuple) else delta  # compare() gives (side, delta)
        out[delta.side] = out.get(delta.side, "") + delta.text
    return out


def test_keyed_sampler_draws_what_a_global_seed_draws():
    import mlx.core as mx

    logits = mx.random.normal((1, 64), key=mx.random.key(3))
    mx.random.seed(11)
    global_draws = [mx.random.categorical(logits * (1 / 0.8)).item() for _ in range(8)]
    sampler = KeyedSampler(0.8, 11)
    assert [sampler(logits).item() for _ in range(8)] == global_draws


def test_interleaved_greedy_answers_equal_each_alone(tuned):
    chat, base = tuned
    session = ChatSession(chat.model, chat.tokenizer)
    settings = ChatSettings(temperature=0.0, max_tokens=12)
    deltas = [delta for _side, delta in session.compare(PROMPT, settings)]

    # really interleaved: base, tuned, base, tuned… (the tiny model never stops early)
    assert [d.side for d in deltas] == ["base", "tuned"] * 12
    assert all(d.tokens_per_second > 0 for d in deltas)  # a live speed on every delta of each side
    assert [d.token_count for d in deltas if d.side == "tuned"] == list(range(1, 13))
    got = texts(deltas)
    prompt = session.encode(PROMPT, settings)
    assert got["tuned"] == alone(chat, prompt, 12)  # the adapter on, as mlx-lm answers with it
    assert got["base"] == alone(base, prompt, 12)  # a base loaded on its own
    assert got["base"] != got["tuned"]
    assert chat.adapter is not None and alone(chat, prompt, 12) == got["tuned"]  # the adapter is back on


def test_interleaved_sampling_equals_one_answer_after_the_other(tuned):
    chat, _ = tuned
    session = ChatSession(chat.model, chat.tokenizer)
    settings = ChatSettings(temperature=1.0, top_p=0.9, repetition_penalty=1.3, max_tokens=10, seed=5)
    at_once = texts(session.compare(PROMPT, settings))
    one_then_other = texts(session.compare(PROMPT, settings, interleaved=False))
    assert at_once == one_then_other
    assert at_once["tuned"] == session.answer(PROMPT, settings).text
    assert at_once["base"] == session.answer(PROMPT, settings, use_adapter=False).text


def test_each_side_keeps_its_own_conversation(tiny_run):
    chat = load_chat_model(adapter=tiny_run)
    session = ChatSession(chat.model, chat.tokenizer)
    settings = ChatSettings(temperature=0.0, max_tokens=6)
    history = [*user("Hi"), {"role": "assistant", "content": "Ahoy"}, *user("More")]
    got = texts(session.stream_sides([ChatRequest("base", user("Hi"), False), ChatRequest("tuned", history)],
                                     settings))
    assert got["base"] == session.answer(user("Hi"), settings, use_adapter=False).text
    assert got["tuned"] == session.answer(history, settings).text


def test_stop_mid_stream_ends_both_answers(tiny_run):
    chat = load_chat_model(adapter=tiny_run)
    model = CountingModel(chat.model)
    session = ChatSession(model, chat.tokenizer)
    seen = []

    for _side, delta in session.compare(PROMPT, ChatSettings(max_tokens=200), lambda: len(seen) >= 7):
        seen.append(delta)

    finished = {d.side: d for d in seen if d.finished}
    assert set(finished) == {"base", "tuned"}
    assert {d.finish_reason for d in finished.values()} == {"cancelled"}
    assert finished["base"].token_count == 4 and finished["tuned"].token_count == 3  # 7 tokens delivered
    # each side computes one token ahead, and no more than that
    assert model.decode_calls <= 7 + 2
    # the session is free again, the adapter back on
    assert session.answer(PROMPT, ChatSettings(max_tokens=2)).token_count == 2 and chat.adapter is not None
