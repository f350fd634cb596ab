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

``compare`` answers the same conversation twice with ONE model in memory: with
the adapter switched off (:func:`~mlx_lora.adapters.adapter_disabled`) and
on, with the same seed.
"""

from __future__ import annotations

import dataclasses
import threading
from contextlib import nullcontext
from typing import Any, Callable, Iterator

from mlx_lora.errors import UserError
from mlx_lora.events import never_stop

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
class ChatDelta:
    """A piece of an answer. The last piece has ``finished`` True and a ``finish_reason``:
    "stop" (end of turn / EOS), "length" (max_tokens) or "cancelled"."""

    text: str
    token_count: int  # tokens generated so far
    tokens_per_second: float  # generation speed so far (prompt processing excluded)
    finished: bool = False
    finish_reason: str | None = None
    prompt_tokens: int = 0


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

    def __init__(self, model, tokenizer) -> None:
        from mlx_lm.tokenizer_utils import TokenizerWrapper

        self.model = model
        self.tokenizer = tokenizer if isinstance(tokenizer, TokenizerWrapper) else TokenizerWrapper(tokenizer)
        self.stop_ids = end_of_turn_ids(self.tokenizer)
        # stream_generate stops at tokenizer.eos_token_ids: add the end-of-turn tokens there
        self.tokenizer.eos_token_ids = set(self.tokenizer.eos_token_ids) | self.stop_ids
        self._busy = threading.Lock()

    # ---- the prompt --------------------------------------------------------------

    def conversation(self, messages: list[dict[str, Any]], settings: ChatSettings) -> list[dict[str, Any]]:
        _check_messages(messages)
        if settings.system_prompt and messages[0]["role"] != "system":
            return [{"role": "system", "content": settings.system_prompt}, *messages]
        return list(messages)

    def encode(self, messages: list[dict[str, Any]], settings: ChatSettings = ChatSettings()) -> list[int]:
        """The prompt's token ids: the chat through the template (as the training data is
        rendered), or — for a model without one — the turns' text with the tokenizer's BOS."""
        from mlx_lm.tokenizer_utils import TokenizerWrapper

        from mlx_lora.data.template import apply_template, has_chat_template

        conversation = self.conversation(messages, settings)
        if has_chat_template(self.tokenizer):
            text = apply_template(self.tokenizer, conversation, add_generation_prompt=True)
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        text = "\n".join(m["content"] for m in conversation)
        assert isinstance(self.tokenizer, TokenizerWrapper)
        return list(self.tokenizer.encode(text, add_special_tokens=True))

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
        import mlx.core as mx
        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        from mlx_lora.adapters import adapter_disabled

        prompt = self.encode(messages, settings)
        sampler = make_sampler(settings.temperature, top_p=settings.top_p if settings.top_p < 1 else 0.0,
                               min_p=settings.min_p, top_k=settings.top_k)
        processors = make_logits_processors(
            repetition_penalty=settings.repetition_penalty if settings.repetition_penalty != 1.0 else None)
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this chat session is already answering; wait for the answer or cancel it")
        try:
            with nullcontext() if use_adapter else adapter_disabled(self.model):
                if should_stop():
                    yield ChatDelta("", 0, 0.0, True, "cancelled", len(prompt))
                    return
                if settings.seed is not None:
                    mx.random.seed(settings.seed)
                count, speed = 0, 0.0
                generator = stream_generate(self.model, self.tokenizer, mx.array(prompt),
                                            max_tokens=settings.max_tokens, sampler=sampler,
                                            logits_processors=processors)
                try:
                    for response in generator:
                        count, speed = response.generation_tokens, response.generation_tps
                        if response.finish_reason is not None:
                            yield ChatDelta(response.text, count, speed, True, response.finish_reason, len(prompt))
                            return
                        yield ChatDelta(response.text, count, speed, prompt_tokens=len(prompt))
                        if should_stop():  # between two tokens: the next one is not waited for
                            yield ChatDelta("", count, speed, True, "cancelled", len(prompt))
                            return
                finally:
                    generator.close()
        finally:
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
                should_stop: Callable[[], bool] = never_stop) -> Iterator[tuple[str, ChatDelta]]:
        """The base's answer, then the tuned model's, as ("base" | "tuned", delta) pairs.
        Without a seed in ``settings`` both use the same fresh seed, so the sampling noise
        is the same and the difference is the adapter's."""
        import random

        if settings.seed is None:
            settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        for side, use_adapter in (("base", False), ("tuned", True)):
            for delta in self.stream(messages, settings, should_stop, use_adapter):
                yield side, delta
                if delta.finish_reason == "cancelled":
                    return
