"""Rendering chat templates safely, with errors a person can act on.

A chat template is Jinja code that came with a downloaded model: untrusted. It
is only ever rendered in :class:`~mlx_lora.data.sandbox.BoundedSandbox`, jinja2's
``ImmutableSandboxedEnvironment`` with a budget of steps, CPU time and size per
render; :func:`~mlx_lora.data.sandbox.install` makes transformers compile every
template in it, so ``apply_chat_template`` is bounded wherever it is called. We
reuse transformers' renderer rather than a Jinja setup of our own so that the
training render is byte-for-byte the chat render (same filters such as
``tojson``, same ``raise_exception``, same trimming). A template that reaches
for Python internals raises jinja2's ``SecurityError``; one over the budget
``TemplateTooExpensive`` ("FILE: chat template: too expensive (...)"); those,
and any other template failure, become a :class:`~mlx_lora.errors.UserError`.

:func:`render_chat` renders a template string; :func:`apply_template` renders
through a tokenizer (mlx-lm's ``TokenizerWrapper`` or a Hugging Face tokenizer),
which also covers mlx-lm's Python chat renderers for models without a template.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from mlx_lora.data import sandbox
from mlx_lora.errors import UserError

sandbox.install()


def template_source(tokenizer) -> str:
    """Where a tokenizer's chat template came from, for messages: the file in its
    folder that transformers reads it from, else "the chat template"."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    hf = tokenizer._tokenizer if isinstance(tokenizer, TokenizerWrapper) else tokenizer
    folder = Path(str(getattr(hf, "name_or_path", "") or ""))
    if str(folder) not in ("", ".") and folder.is_dir():
        for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
            if (folder / name).is_file():
                return str(folder / name)
    return "the chat template"


def _template_error(exc: Exception, source: str = "the chat template") -> UserError:
    if isinstance(exc, sandbox.TemplateTooExpensive):
        place = f"{source}: chat template" if source != "the chat template" else "chat template"
        return UserError(f"{place}: too expensive ({exc}); this model's template cannot be rendered safely")
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return UserError(f"the model's chat template tried something unsafe and was stopped by the sandbox: {exc}")
    if isinstance(exc, jinja2.exceptions.TemplateSyntaxError):
        return UserError(f"the chat template has a syntax error at line {exc.lineno}: {exc.message}")
    return UserError(f"the model's chat template failed on this conversation: {type(exc).__name__}: {exc}")


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    bos_token: str = "",
    eos_token: str = "",
) -> str:
    """Render ``messages`` with a Jinja chat template, in the bounded sandbox."""
    from transformers.utils.chat_template_utils import render_jinja_template

    sandbox.install()
    try:
        rendered, _ = render_jinja_template(
            conversations=[messages],
            tools=tools,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
        )
    except Exception as exc:  # anything a template raises is about the template or the data
        raise _template_error(exc) from exc
    return rendered[0]


def has_chat_template(tokenizer) -> bool:
    """Whether the tokenizer can render chats (a Jinja template or mlx-lm's own renderer)."""
    known = getattr(tokenizer, "has_chat_template", None)  # TokenizerWrapper
    if isinstance(known, bool):
        return known
    return getattr(tokenizer, "chat_template", None) is not None


def apply_template(
    tokenizer,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = False,
) -> str:
    """The chat as text, exactly as ``tokenizer.apply_chat_template(..., tokenize=False)``
    renders it, with template failures turned into :class:`UserError`."""
    if not has_chat_template(tokenizer):
        raise UserError("the model's tokenizer has no chat template, so it cannot render chat records; "
                        "use a model with a chat template, or write the data as completion or text records")
    sandbox.install()  # cheap when done; covers a transformers reloaded since
    try:
        return tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    except Exception as exc:
        raise _template_error(exc, template_source(tokenizer)) from exc


_OWN = "_mlx_lora_own_chat_template"  # the tokenizer's own (template, mlx-lm renderer, has_chat_template)


def use_chat_template(tokenizer, name: str = "model") -> None:
    """Render this tokenizer's chats with ``name``: ``model`` (its own template, put back if
    another was picked before) or a family of :data:`mlx_lora.chat_templates.FAMILY_TEMPLATES`
    (the config's ``data.chat_template``). The tokenizer is changed in place — mlx-lm's
    ``TokenizerWrapper`` or a Hugging Face tokenizer — so every render that follows
    (:func:`apply_template`: training, the data preview, chat) uses it, in the sandbox."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from mlx_lora.chat_templates import CHAT_TEMPLATE_NAMES, FAMILY_TEMPLATES

    if name not in CHAT_TEMPLATE_NAMES:
        raise UserError(f"chat template must be one of {', '.join(CHAT_TEMPLATE_NAMES)}, not {name!r}")
    wrapper = tokenizer if isinstance(tokenizer, TokenizerWrapper) else None
    hf = tokenizer._tokenizer if wrapper is not None else tokenizer
    holder = wrapper if wrapper is not None else hf
    own = holder.__dict__.get(_OWN)
    if own is None:
        own = (hf.chat_template, getattr(wrapper, "_chat_template", None), getattr(wrapper, "has_chat_template", None))
        holder.__dict__[_OWN] = own
    if name == "model":
        hf.chat_template = own[0]
        if wrapper is not None:
            wrapper._chat_template, wrapper.has_chat_template = own[1], own[2]
        return
    hf.chat_template = FAMILY_TEMPLATES[name]
    if wrapper is not None:
        # mlx-lm's wrapper renders with its own Python renderer when it has one; a picked family wins
        wrapper._chat_template, wrapper.has_chat_template = None, True
