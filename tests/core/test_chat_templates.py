"""Named chat-template families (data.chat_template): each renders in the sandbox, the
pick changes what chat, the data preview and training render, and "model" puts the
model's own template back."""

from __future__ import annotations

import pytest

import mlx_lora  # noqa: F401
from mlx_lora.chat_templates import CHAT_TEMPLATE_NAMES, FAMILY_TEMPLATES
from mlx_lora.config import TrainConfig
from mlx_lora.errors import UserError

CHAT = [{"role": "system", "content": "Be a pirate."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Arr"}, {"role": "user", "content": "More"}]


@pytest.fixture
def tokenizer(tiny_model):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_model)


def test_every_family_renders_the_whole_chat_in_the_sandbox():
    from mlx_lora.data.template import render_chat

    for name, source in FAMILY_TEMPLATES.items():
        text = render_chat(source, CHAT, add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
        assert all(part in text for part in ("Be a pirate.", "Hi", "Arr", "More")), name
    llama3 = render_chat(FAMILY_TEMPLATES["llama3"], CHAT[1:2], add_generation_prompt=True, bos_token="<s>")
    assert llama3 == ("<s><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n")
    gemma = render_chat(FAMILY_TEMPLATES["gemma"], CHAT[:2], add_generation_prompt=True)
    assert gemma == "<start_of_turn>user\nBe a pirate.\n\nHi<end_of_turn>\n<start_of_turn>model\n"


def test_picking_a_family_changes_chat_and_training_renders_and_model_puts_it_back(tokenizer):
    from mlx_lora.chat import ChatSession
    from mlx_lora.data.render import preview
    from mlx_lora.data.template import use_chat_template

    class NoModel:
        pass

    session = ChatSession(NoModel(), tokenizer)
    own = session.prompt_text(CHAT[1:2])
    assert "<|im_start|>user\nHi<|im_end|>" in own  # SmolLM's own adds a default system turn
    session.set_chat_template("phi3")
    assert session.prompt_text(CHAT[1:2]) == "<|user|>\nHi<|end|>\n<|assistant|>\n"
    # the data preview / training render the same tokenizer's way
    spans = preview(session.tokenizer, {"messages": CHAT[1:3]}, True)
    assert "<|user|>" in "".join(span.text for span in spans)
    session.set_chat_template("model")
    assert session.prompt_text(CHAT[1:2]) == own
    use_chat_template(tokenizer, "gemma")
    use_chat_template(tokenizer, "llama3")
    use_chat_template(tokenizer, "model")  # back to the model's own, whatever was picked in between
    assert ChatSession(NoModel(), tokenizer).prompt_text(CHAT[1:2]) == own
    with pytest.raises(UserError, match="chat template must be one of"):
        use_chat_template(tokenizer, "vicuna")


def test_the_setting_is_one_config_field_with_its_flag():
    import argparse

    from mlx_lora.cli.config_flags import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert config_from_args(parser.parse_args(["--chat-template", "gemma"])).data.chat_template == "gemma"
    assert TrainConfig().data.chat_template == "model"
    assert set(CHAT_TEMPLATE_NAMES) == {"model", *FAMILY_TEMPLATES}
    assert TrainConfig().replace(chat_template="mistral").data.chat_template == "mistral"
    with pytest.raises(UserError, match="chat_template"):
        TrainConfig().replace(chat_template="vicuna")
