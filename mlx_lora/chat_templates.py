"""Named chat-template families, for models whose own template is missing or wrong.

``model`` means the tokenizer's own template. The others are the common families'
turn formats, written plainly (system, user and assistant turns; no tools): a
base model without a template, or one whose template is broken, can still be
chatted with and trained on chat records in a known format. They are Jinja
source only — rendering is :mod:`mlx_lora.data.template`'s, in the bounded
sandbox like any template — and :mod:`mlx_lora.config` offers their names as
``data.chat_template`` (the one setting chat, the data preview and training read).

A family's end-of-turn token only acts as one when the model's vocabulary has it
(ChatML's ``<|im_end|>`` on a Llama tokenizer is just text): pick the family the
model was trained with.
"""

from __future__ import annotations

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Gemma has no system turn: the system text opens the first user turn (as Gemma 3's own template does).
GEMMA = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set prefix = messages[0]['content'] + '\\n\\n' %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set prefix = '' %}{%- set turns = messages %}{%- endif %}"
    "{%- for message in turns %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

# Mistral's [INST] format: the answer follows [/INST] directly (no generation prompt of its own),
# each answer ends with EOS; a system message opens the first instruction.
MISTRAL = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    "{%- for message in turns %}"
    "{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + ((system + '\\n\\n') if (loop.first and system) else '') + message['content'] + '[/INST]' }}"
    "{%- else %}{{- ' ' + message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)

PHI3 = (
    "{%- for message in messages %}"
    "{{- '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)

# name -> Jinja source ("model": the tokenizer's own, no source here)
FAMILY_TEMPLATES: dict[str, str] = {"chatml": CHATML, "llama3": LLAMA3, "gemma": GEMMA, "mistral": MISTRAL,
                                    "phi3": PHI3}
CHAT_TEMPLATE_NAMES: tuple[str, ...] = ("model", *FAMILY_TEMPLATES)
CHAT_TEMPLATE_LABELS: dict[str, str] = {
    "model": "the model's own", "chatml": "ChatML (Qwen, SmolLM, …)", "llama3": "Llama 3", "gemma": "Gemma",
    "mistral": "Mistral [INST]", "phi3": "Phi-3",
}
