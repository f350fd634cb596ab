"""Chat with a base model and its adapters: streaming answers, base-vs-tuned with one
model in memory, adapter switching and weighted combination. No Qt.

    from mlx_lora.chat import ChatSession, ChatSettings, load_chat_model

    chat_model = load_chat_model("demo", adapter="runs/my-run/best")
    session = ChatSession(chat_model.model, chat_model.tokenizer)
    for delta in session.stream([{"role": "user", "content": "Hi"}], ChatSettings(seed=0)):
        ...
    for side, delta in session.compare(messages, settings):  # "base", then "tuned"
        ...
    chat_model.use_adapter("runs/my-run/checkpoints/step-200")  # no reload of the base
"""

from mlx_lora.chat.model import ChatModel, load_chat_model, prepare_base
from mlx_lora.chat.session import ChatAnswer, ChatDelta, ChatSession, ChatSettings, end_of_turn_ids

__all__ = [
    "ChatAnswer", "ChatDelta", "ChatModel", "ChatSession", "ChatSettings", "end_of_turn_ids", "load_chat_model",
    "prepare_base",
]
