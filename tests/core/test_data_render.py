"""Records → tokens and loss masks, with the demo model's tokenizer (SmolLM2, ChatML:
``<|im_start|>role\\n...<|im_end|>\\n``); chat templates rendered in the sandbox."""

from __future__ import annotations

import jinja2
import pytest

from mlx_lora.data.render import Span, encode_example, preview
from mlx_lora.data.template import render_chat
from mlx_lora.errors import UserError

IM_END = "<|im_end|>"

MULTI_TURN = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Arr! Paris, matey."},
    {"role": "user", "content": "And of Spain?"},
    {"role": "assistant", "content": "Arr! Madrid, me hearty."},
]


@pytest.fixture(scope="module")
def tokenizer(demo_model):
    """mlx-lm's TokenizerWrapper, as training and chat use it."""
    from mlx_lm.tokenizer_utils import load

    return load(demo_model)


def hf_with_template(demo_model, template: str | None):
    """A fresh Hugging Face tokenizer of the demo model with another chat template."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(demo_model)
    hf.chat_template = template
    return hf


def trained_runs(tokenizer, example) -> list[str]:
    """The decoded text of each run of consecutive trained tokens."""
    runs, current = [], []
    for token, trained in zip(example.tokens, example.trained):
        if trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_every_assistant_turn_is_trained_and_everything_else_masked(tokenizer):
    example = encode_example(tokenizer, {"messages": MULTI_TURN})

    assert trained_runs(tokenizer, example) == [f"Arr! Paris, matey.{IM_END}", f"Arr! Madrid, me hearty.{IM_END}"]
    # the headers, system and user turns and the newline after the last <|im_end|> are masked
    masked = tokenizer.decode([t for t, m in zip(example.tokens, example.trained) if not m])
    assert masked.count("<|im_start|>assistant\n") == 2
    assert "capital of France" in masked and "You are a pirate." in masked and "Paris" not in masked
    last_trained = max(i for i, m in enumerate(example.trained) if m)
    assert tokenizer.decode([example.tokens[last_trained]]) == IM_END
    assert not example.appended_eos and example.missing_eos_turns == 0


def test_the_training_render_is_the_chat_render(tokenizer):
    tool_chat = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Let me look."},
        {"role": "tool", "content": '{"celsius": 3}'},
        {"role": "assistant", "content": "It is 3 °C. 🌧️"},
    ]
    for messages in (MULTI_TURN, MULTI_TURN[1:3], tool_chat):
        example = encode_example(tokenizer, {"messages": messages})
        assert example.tokens == tokenizer.apply_chat_template(messages)
        assert len(example.trained) == len(example.tokens)


def test_a_raw_hugging_face_tokenizer_gives_the_same_example(tokenizer, demo_model):
    hf = hf_with_template(demo_model, tokenizer.chat_template)
    a = encode_example(tokenizer, {"messages": MULTI_TURN})
    b = encode_example(hf, {"messages": MULTI_TURN})
    assert (a.tokens, a.trained) == (b.tokens, b.trained)


def test_without_prompt_masking_every_token_is_trained(tokenizer):
    example = encode_example(tokenizer, {"messages": MULTI_TURN}, mask_prompt=False)
    assert all(example.trained)
    assert example.tokens == tokenizer.apply_chat_template(MULTI_TURN)


def test_a_completion_record_is_a_one_turn_chat(tokenizer):
    record = {"prompt": "Write a haiku about rain.", "completion": "Soft rain on the roof"}
    messages = [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    example = encode_example(tokenizer, record)
    assert example.tokens == tokenizer.apply_chat_template(messages)
    assert trained_runs(tokenizer, example) == [f"Soft rain on the roof{IM_END}"]


def test_a_text_record_is_trained_whole_and_ends_with_eos(tokenizer):
    example = encode_example(tokenizer, {"text": "Arr, the sea."})
    assert example.tokens == tokenizer.encode("Arr, the sea.") + [tokenizer.eos_token_id]
    assert all(example.trained) and example.appended_eos
    already = encode_example(tokenizer, {"text": f"Arr, the sea.{IM_END}"})
    assert already.tokens == example.tokens and not already.appended_eos


def test_without_a_chat_template_a_completion_is_prompt_plus_completion(demo_model):
    hf = hf_with_template(demo_model, None)
    example = encode_example(hf, {"prompt": "Q: 2+2?\nA:", "completion": " 4"})
    assert example.tokens[-1] == hf.eos_token_id
    assert hf.decode(example.tokens) == f"Q: 2+2?\nA: 4{IM_END}"
    assert trained_runs(hf, example) == [f" 4{IM_END}"]
    with pytest.raises(UserError, match="no chat template"):
        encode_example(hf, {"messages": MULTI_TURN[1:3]})


def test_a_template_that_leaves_out_the_end_of_turn_gets_eos_appended(demo_model):
    # each turn is "role: content\n" - no <|im_end|> anywhere
    hf = hf_with_template(demo_model, "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                                      "{% if add_generation_prompt %}assistant: {% endif %}")
    example = encode_example(hf, {"messages": MULTI_TURN})
    assert example.appended_eos and example.missing_eos_turns == 2
    assert example.tokens == hf.apply_chat_template(MULTI_TURN, return_dict=False) + [hf.eos_token_id]
    assert example.trained[-1]
    # the first reply token carries the space after "assistant:" (BPE merges it), so it overlaps the turn
    assert trained_runs(hf, example) == [" Arr! Paris, matey.\n", f" Arr! Madrid, me hearty.\n{IM_END}"]


def test_a_template_that_is_not_prefix_stable_is_still_masked_right(demo_model):
    # the message count up front changes every prefix render, so turns are found by their content
    template = ("{{ messages | length }}\n{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
                "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    hf = hf_with_template(demo_model, template)
    example = encode_example(hf, {"messages": MULTI_TURN})
    assert example.tokens == hf.apply_chat_template(MULTI_TURN, return_dict=False)
    assert trained_runs(hf, example) == [f"Arr! Paris, matey.{IM_END}", f"Arr! Madrid, me hearty.{IM_END}"]


EVIL = "{{ ''.__class__.__mro__[1].__subclasses__() }}"


def test_templates_reaching_python_internals_are_stopped_by_the_sandbox(demo_model):
    with pytest.raises(UserError, match="sandbox") as info:
        render_chat(EVIL, MULTI_TURN)
    assert isinstance(info.value.__cause__, jinja2.exceptions.SecurityError)

    hf = hf_with_template(demo_model, EVIL)
    with pytest.raises(UserError, match="sandbox") as info:
        encode_example(hf, {"messages": MULTI_TURN})
    assert isinstance(info.value.__cause__, jinja2.exceptions.SecurityError)


# Templates that would run for hours or take gigabytes (each took one or the
# other before the render budget of mlx_lora.data.sandbox).
EXPENSIVE = {
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "repetition": "{{ 'a' * 10**9 }}",
    "power": "{{ 7 ** 10000000 }}",  # (jinja reads 7 ** 10 ** 7 as (7 ** 10) ** 7)
    "doubling with ~": "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s }}",
    "doubling with +": "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                       "{% endfor %}{{ ns.s }}",
    "exponential macro": "{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
                         "{{ f(0) }}",
    "width filter": "{{ 'a'|center(10**9) }}",
    "width method": "{{ 'a'.ljust(10**9) }}",
    "format width": "{{ '{:>1000000000}'.format(1) }}",
    "printf width": "{{ '%1000000000d' % 1 }}",
    "join separator": "{{ range(100000)|join('x' * 100000) }}",
    "replace": "{{ ('a' * 10000)|replace('', 'b' * 10000) }}",
    "batch fill": "{{ [1]|batch(10**9, 'x')|list }}",
    "nested literals": "{% set a = 'a' * 4000000 %}{% set b = [a, a, a, a, a, a, a, a] %}{{ [b, b, b, b] }}",
    "shared values": "{{ dict.fromkeys(range(100000), 'x' * 100000) }}",
    "output flood": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "set block": "{% set ns = namespace(s='a' * 1000000) %}{% for i in range(40) %}{% set x %}{{ ns.s }}{{ ns.s }}"
                 "{% endset %}{% set ns.s = x %}{% endfor %}",
}


@pytest.mark.parametrize("name", list(EXPENSIVE))
def test_expensive_templates_are_stopped_by_the_render_budget(name):
    from mlx_lora.data.sandbox import TemplateTooExpensive

    with pytest.raises(UserError, match=r"^chat template: too expensive \(") as info:
        render_chat(EXPENSIVE[name], MULTI_TURN)
    assert isinstance(info.value.__cause__, TemplateTooExpensive)


def test_the_tokenizers_own_render_is_bounded_and_named_by_file(demo_model, tmp_path):
    import shutil

    from mlx_lora.data.sandbox import TemplateTooExpensive

    model = tmp_path / "model"
    shutil.copytree(demo_model, model)
    hf = hf_with_template(model, EXPENSIVE["nested ranges"])
    # straight through transformers, as mlx-lm would call it: the same sandbox
    with pytest.raises(TemplateTooExpensive):
        hf.apply_chat_template(MULTI_TURN, tokenize=False)
    with pytest.raises(UserError, match="tokenizer_config.json: chat template: too expensive") as info:
        encode_example(hf, {"messages": MULTI_TURN})
    assert str(info.value).startswith(str(model))


def test_templates_are_limited_in_source_size_too():
    with pytest.raises(UserError, match="too expensive .*characters long"):
        render_chat("x" * 2_000_000, MULTI_TURN)


# What real templates do (Llama 3, Qwen 3, Gemma 3, Mistral idioms): all within the budget.
REAL_IDIOMS = (
    "{{ bos_token }}{% set ns = namespace(system='', tools=[]) %}"
    "{% for m in messages %}{% if m.role == 'system' %}{% set ns.system = m.content|trim %}{% endif %}{% endfor %}"
    "{% if tools %}{% for t in tools %}{{ t|tojson(indent=4) }}\n{% endfor %}{% endif %}"
    "{% for m in messages|rejectattr('role', 'equalto', 'system') %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content']|trim + '<|eot_id|>' }}"
    "{% if m.content.startswith('Arr') %}{{ m.content.split('!')[0]|upper }}{% endif %}"
    "{% if loop.last and loop.length > 1 %}{{ '%s/%d' % (m.role, loop.index) }}{% endif %}"
    "{{ '{}:{}'.format(loop.index0, m.role|length) }}{{ (m.content ~ ' ')|replace('Arr', 'Yarr')|indent(2) }}"
    "{% endfor %}{{ [ns.system, messages|length]|join(',') }}{{ dict(a=1)|items|list }}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def test_real_template_idioms_render_as_in_the_plain_sandbox():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    plain.filters["tojson"] = lambda x, indent=None: __import__("json").dumps(x, indent=indent)
    expected = plain.from_string(REAL_IDIOMS).render(messages=MULTI_TURN, tools=tools, bos_token="<s>",
                                                     add_generation_prompt=True)
    ours = render_chat(REAL_IDIOMS, MULTI_TURN, add_generation_prompt=True, tools=tools, bos_token="<s>")
    assert ours == expected and "Yarr! Madrid" in ours and "assistant/4" in ours


def test_render_chat_matches_the_tokenizer_render(tokenizer):
    for generation_prompt in (False, True):
        ours = render_chat(tokenizer.chat_template, MULTI_TURN, generation_prompt,
                           bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
        assert ours == tokenizer.apply_chat_template(MULTI_TURN, add_generation_prompt=generation_prompt,
                                                     tokenize=False)
    with pytest.raises(UserError, match="syntax error"):
        render_chat("{% for %}", MULTI_TURN)


def test_preview_merges_tokens_into_trained_and_masked_spans(tokenizer):
    record = {"messages": MULTI_TURN}
    spans = preview(tokenizer, record)
    example = encode_example(tokenizer, record)

    assert [s.trained for s in spans] == [False, True, False, True, False]
    assert spans[1] == Span(f"Arr! Paris, matey.{IM_END}", True, spans[1].token_count)
    assert spans[3].text == f"Arr! Madrid, me hearty.{IM_END}"
    assert spans[4].text == "\n"
    assert "".join(s.text for s in spans) == example.text
    assert sum(s.token_count for s in spans) == len(example.tokens)
    assert spans[3].token_count == sum(example.trained[len(example.tokens) - 1 - spans[3].token_count:])


def test_an_invalid_record_is_a_user_error(tokenizer):
    with pytest.raises(UserError, match="ends with a 'user' turn"):
        encode_example(tokenizer, {"messages": MULTI_TURN[:2]})


def test_a_template_that_refuses_cut_conversations_falls_back_to_finding_the_turns(demo_model):
    # renders only whole conversations, as some templates insist on a final assistant turn
    template = ("{% if messages[-1].role != 'assistant' %}{{ raise_exception('must end with assistant') }}{% endif %}"
                "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
    hf = hf_with_template(demo_model, template)
    example = encode_example(hf, {"messages": MULTI_TURN})
    assert example.tokens == hf.apply_chat_template(MULTI_TURN, return_dict=False)
    assert trained_runs(hf, example) == [f"Arr! Paris, matey.{IM_END}", f"Arr! Madrid, me hearty.{IM_END}"]
