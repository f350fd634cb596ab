"""Streaming chat through mlx-lm's generator, with the model's own chat template.

:class:`ChatSession` renders the conversation exactly as the training data is
rendered (:func:`mlx_lora.data.template.apply_template`, then tokenised without
adding special tokens), samples with mlx-lm's ``make_sampler`` /
``make_logits_processors``, and streams :class:`ChatDelta` pieces from
``mlx_lm.generate.stream_generate``. It stops at the model's EOS *and* at the
chat template's end-of-turn token (the tuned model that never stops is the
commonest complaint about chat templates: mlx-examples #756, #1243), at
``max_tokens``, or when ``should_stop()`` turns true — it is asked between every
two tokens, so a cancel costs at most one token.

``stream_sides`` answers several conversations at once with ONE model in
memory, a token of each in turn, the adapter switched off
(:func:`~mlx_lora.adapters.adapter_disabled`) for the base's steps and on for
the tuned model's; ``compare`` is that for one conversation, base and tuned,
with the same seed. Sampling uses a key per answer
(:mod:`mlx_lora.chat.sampling`), so interleaved answers equal what each gives alone.
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import nullcontext
from typing import Any, Callable, Iterator, Sequence

from mlx_lora.errors import UserError
from mlx_lora.events import Event, never_stop

# Tokens that end a turn in well-known chat templates. One counts as a stop token
# for a model only when its chat template writes it.
END_OF_TURN_TOKENS = (
    "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "</s>", "<|END_OF_TURN_TOKEN|>", "<|return|>", "<｜end▁of▁sentence｜>",
)


@dataclasses.dataclass(frozen=True)
class ChatSettings:
    """How to answer. ``temperature`` 0 picks the likeliest token every time."""

    system_prompt: str | None = None
    temperature: float = 0.7
    top_p: float = 1.0  # nucleus sampling; 1 keeps every token
    min_p: float = 0.0  # drop tokens below min_p × the top token's probability
    top_k: int = 0  # 0 keeps every token
    repetition_penalty: float = 1.0  # 1 = off; >1 discourages repeating the last 20 tokens
    max_tokens: int = 512
    seed: int | None = None  # None: a new random answer each time

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be 0 or more"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.top_k >= 0, "top_k must be 0 (off) or more"),
            (self.repetition_penalty > 0, "repetition_penalty must be above 0 (1 turns it off)"),
            (self.max_tokens >= 1, "max_tokens must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)


@dataclasses.dataclass(frozen=True)
class ChatDelta(Event):
    """A piece of an answer. The last piece has ``finished`` True and a ``finish_reason``:
    "stop" (end of turn / EOS), "length" (max_tokens) or "cancelled". ``side`` names the
    answer when several stream at once ("base", "tuned")."""

    text: str
    token_count: int  # tokens generated so far
    tokens_per_second: float  # generation speed so far (prompt processing excluded; wall time, so
    # with two answers interleaved each side's speed is its share of the model's)
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0
    side: str = "tuned"


@dataclasses.dataclass(frozen=True)
class ChatPrompt(Event):
    """The prompt of one side as the model reads it (the chat through ``chat_template``)."""

    side: str
    text: str
    chat_template: str = "model"


@dataclasses.dataclass(frozen=True)
class ChatRequest:
    """One answer to stream: its ``side`` name, the conversation, and whether the adapter is on."""

    side: str
    messages: list[dict[str, Any]]
    use_adapter: bool = True


@dataclasses.dataclass(frozen=True)
class ChatAnswer:
    text: str
    token_count: int
    tokens_per_second: float
    finish_reason: str
    prompt_tokens: int


def end_of_turn_ids(tokenizer) -> set[int]:
    """The model's stop tokens: its EOS ids plus each known end-of-turn token that its
    chat template writes (ChatML's ``<|im_end|>``, Llama 3's ``<|eot_id|>``, …)."""
    from mlx_lora.data.render import end_token_ids, hf_tokenizer

    ids = set(end_token_ids(tokenizer))
    template = getattr(hf_tokenizer(tokenizer), "chat_template", None) or ""
    if isinstance(template, dict):  # named templates
        template = " ".join(template.values())
    vocab = hf_tokenizer(tokenizer).get_vocab()
    for token in END_OF_TURN_TOKENS:
        if token in template and token in vocab:
            ids.add(vocab[token])
    return ids


def _check_messages(messages: list[dict[str, Any]]) -> None:
    if not messages:
        raise UserError("the conversation is empty: add a user message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                or message.get("role") not in ("system", "user", "assistant"):
            raise UserError(f"message {i + 1}: expected {{'role': system|user|assistant, 'content': text}}")


class ChatSession:
    """Chat with ``model`` (an mlx-lm model, adapters on it or not) and its tokenizer."""

    def __init__(self, model, tokenizer, chat_template: str = "model") -> None:
        from mlx_lm.tokenizer_utils import TokenizerWrapper

        self.model = model
        self.tokenizer = tokenizer if isinstance(tokenizer, TokenizerWrapper) else TokenizerWrapper(tokenizer)
        # the tokenizer's own EOS ids, before any session added end-of-turn tokens to them
        self._own_eos = self.tokenizer.__dict__.setdefault("_mlx_lora_own_eos", set(self.tokenizer.eos_token_ids))
        self._busy = threading.Lock()
        self.set_chat_template(chat_template)

    def set_chat_template(self, name: str) -> None:
        """Render with ``name`` (``model``: the model's own; or a family of
        :mod:`mlx_lora.chat_templates`), and stop at that template's end-of-turn token."""
        from mlx_lora.data.template import use_chat_template

        use_chat_template(self.tokenizer, name)
        self.chat_template = name
        self.stop_ids = end_of_turn_ids(self.tokenizer)
        # stream_generate stops at tokenizer.eos_token_ids: add the end-of-turn tokens there
        self.tokenizer.eos_token_ids = set(self._own_eos) | self.stop_ids

    # ---- the prompt --------------------------------------------------------------

    def conversation(self, messages: list[dict[str, Any]], settings: ChatSettings) -> list[dict[str, Any]]:
        _check_messages(messages)
        if settings.system_prompt and messages[0]["role"] != "system":
            return [{"role": "system", "content": settings.system_prompt}, *messages]
        return list(messages)

    def prompt_text(self, messages: list[dict[str, Any]], settings: ChatSettings = ChatSettings()) -> str:
        """The prompt as the model reads it: the chat through the template (as the training
        data is rendered), or — for a model without one — the turns' text, one per line."""
        from mlx_lora.data.template import apply_template, has_chat_template

        conversation = self.conversation(messages, settings)
        if has_chat_template(self.tokenizer):
            return apply_template(self.tokenizer, conversation, add_generation_prompt=True)
        return "\n".join(m["content"] for m in conversation)

    def encode(self, messages: list[dict[str, Any]], settings: ChatSettings = ChatSettings()) -> list[int]:
        """The prompt's token ids: :meth:`prompt_text` tokenised without adding special tokens
        (the template writes them), or with the tokenizer's BOS for a model without a template."""
        from mlx_lora.data.template import has_chat_template

        text = self.prompt_text(messages, settings)
        return list(self.tokenizer.encode(text, add_special_tokens=not has_chat_template(self.tokenizer)))

    # ---- answering ---------------------------------------------------------------

    def stream(
        self,
        messages: list[dict[str, Any]],
        settings: ChatSettings = ChatSettings(),
        should_stop: Callable[[], bool] = never_stop,
        use_adapter: bool = True,
    ) -> Iterator[ChatDelta]:
        """Stream the assistant's answer to ``messages`` (the last one is usually the user's).
        With ``use_adapter=False`` the base model answers (the adapter is switched off for
        this answer only)."""
        side = "tuned" if use_adapter else "base"
        yield from self.stream_sides([ChatRequest(side, messages, use_adapter)], settings, should_stop)

    def stream_sides(
        self,
        requests: Sequence[ChatRequest],
        settings: ChatSettings = ChatSettings(),
        should_stop: Callable[[], bool] = never_stop,
        interleaved: bool = True,
    ) -> Iterator[ChatDelta]:
        """Answer every request with the one model, one token of each in turn (``interleaved``)
        or one whole answer after another. Each delta names its request's ``side``; each side
        ends with one finished delta (a stop ends every side still answering, "cancelled").

        Interleaving is exact — each answer equals what it gives alone (tests/core/
        test_chat_interleave.py) — because every piece of per-answer state is its own: a KV
        cache and a detokenizer per ``stream_generate``, a logits processor and a
        :class:`~mlx_lora.chat.sampling.KeyedSampler` per side, and the adapter is switched
        off/on around each ``next()`` of a side's generator. That ``next()`` is where mlx-lm's
        ``generate_step`` builds the following step's graph (the model is *called* there, which
        looks up the layers now on it; the ``async_eval`` after it only computes that graph), so
        the graph of every base step holds the base layers and every tuned step the adapter's,
        whatever MLX evaluates when."""
        import random

        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_logits_processors

        from mlx_lora.chat.sampling import KeyedSampler

        prompts = [self.encode(r.messages, settings) for r in requests]  # bad input fails before any work
        # one seed for every side: the same sampling noise, so the difference is the adapter's
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this chat session is already answering; wait for the answer or cancel it")
        lanes: list[_Lane] = []
        try:
            if should_stop():
                for request, prompt in zip(requests, prompts):
                    yield ChatDelta("", 0, 0.0, True, "cancelled", len(prompt), request.side)
                return
            import mlx.core as mx

            for request, prompt in zip(requests, prompts):
                sampler = KeyedSampler(settings.temperature, seed, top_p=settings.top_p, min_p=settings.min_p,
                                       top_k=settings.top_k)
                processors = make_logits_processors(
                    repetition_penalty=settings.repetition_penalty if settings.repetition_penalty != 1.0 else None)
                generator = stream_generate(self.model, self.tokenizer, mx.array(prompt),
                                            max_tokens=settings.max_tokens, sampler=sampler,
                                            logits_processors=processors)
                lanes.append(_Lane(request, generator, len(prompt)))
            waiting = list(lanes)
            while waiting:
                turn = list(waiting) if interleaved else waiting[:1]
                for lane in turn:
                    delta = lane.step(self.model)
                    if delta.finished:
                        waiting.remove(lane)
                        lane.close()
                    yield delta
                    if should_stop() and waiting:  # between two tokens: the next one is not waited for
                        for other in waiting:
                            yield other.cancelled()
                        return
        finally:
            for lane in lanes:
                lane.close()
            self._busy.release()

    def answer(self, messages: list[dict[str, Any]], settings: ChatSettings = ChatSettings(),
               should_stop: Callable[[], bool] = never_stop, use_adapter: bool = True) -> ChatAnswer:
        """The whole answer at once."""
        parts, last = [], None
        for last in self.stream(messages, settings, should_stop, use_adapter):
            parts.append(last.text)
        assert last is not None
        return ChatAnswer("".join(parts), last.token_count, last.tokens_per_second,
                          last.finish_reason or "stop", last.prompt_tokens)

    def compare(self, messages: list[dict[str, Any]], settings: ChatSettings = ChatSettings(),
                should_stop: Callable[[], bool] = never_stop,
                interleaved: bool = True) -> Iterator[tuple[str, ChatDelta]]:
        """The base's and the tuned model's answers as ("base" | "tuned", delta) pairs: both
        at once, a token of each in turn (``interleaved``), or the base's first (a terminal
        prints one answer at a time). Both sample with the same seed."""
        requests = [ChatRequest("base", messages, False), ChatRequest("tuned", messages, True)]
        for delta in self.stream_sides(requests, settings, should_stop, interleaved):
            yield delta.side, delta


class _Lane:
    """One side's answer in progress: its mlx-lm generator and where it stands."""

    def __init__(self, request: ChatRequest, generator, prompt_tokens: int) -> None:
        self.request, self.generator, self.prompt_tokens = request, generator, prompt_tokens
        self.count, self.speed = 0, 0.0

    def step(self, model) -> ChatDelta:
        """The next token (and the graph of the one after it, built with this side's adapter state)."""
        from mlx_lora.adapters import adapter_disabled

        with nullcontext() if self.request.use_adapter else adapter_disabled(model):
            response = next(self.generator)
        self.count, self.speed = response.generation_tokens, response.generation_tps
        return ChatDelta(response.text, self.count, self.speed, response.finish_reason is not None,
                         response.finish_reason, self.prompt_tokens, self.request.side)

    def cancelled(self) -> ChatDelta:
        return ChatDelta("", self.count, self.speed, True, "cancelled", self.prompt_tokens, self.request.side)

    def close(self) -> None:
        self.generator.close()
