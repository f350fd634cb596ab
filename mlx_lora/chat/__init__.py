"""Chat with a base model and its adapters: streaming answers, base-vs-tuned with one
model in memory, adapter switching and weighted combination. No Qt.

    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model

    chat_model = load_chat_model("demo", adapter="runs/my-run/best")
    session = ChatSession(chat_model.model, chat_model.tokenizer)
    for delta in session.stream([{"role": "user", "content": "Hi"}], ChatSettings(seed=0)):
        ...
    for side, delta in session.compare(messages, settings):  # "base" and "tuned", a token of each in turn
        ...
    for delta in session.stream_sides([ChatRequest("base", history_a, use_adapter=False),
                                       ChatRequest("tuned", history_b)], settings, should_stop):
        delta.side, delta.text, delta.tokens_per_second
    chat_model.use_adapter("runs/my-run/checkpoints/step-200")  # no reload of the base
"""

from mlx_lora.chat.model import ChatModel, load_chat_model, prepare_base
from mlx_lora.chat.session import ChatAnswer, ChatDelta, ChatPrompt, ChatRequest, ChatSession, ChatSettings, end_of_turn_ids

__all__ = [
    "ChatAnswer", "ChatDelta", "ChatModel", "ChatPrompt", "ChatRequest", "ChatSession", "ChatSettings", "end_of_turn_ids", "load_chat_model",
    "prepare_base",
]
