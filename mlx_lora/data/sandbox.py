"""The Jinja sandbox chat templates run in, bounded in time and size.

A chat template is code from a downloaded model. jinja2's
``ImmutableSandboxedEnvironment`` (what transformers renders templates in)
stops it reaching Python internals, but not from running forever or filling the
memory: nested ``range(100000)`` loops ran for hours and ``'a' * 10**9`` took a
gigabyte at once. :class:`BoundedSandbox` is that sandbox with a budget per
render (:data:`LIMITS`):

- **steps and time**: every loop iteration and every call (macros, methods,
  filters) is a step; a render may take ``LIMITS.steps`` of them and
  ``LIMITS.seconds`` of CPU time of its thread, checked at every step. Loops
  are counted by rewriting each ``{% for %}``'s iterable at parse time.
- **size**: no value a template builds, and not its output, may be longer than
  ``LIMITS.text`` characters or ``LIMITS.text_per_input`` times the data being
  rendered, whichever is more. Repetition (``*``), ``**``, concatenation
  (``+``, ``~``), ``%``-formatting, list and dict literals and every filter and
  call result are checked — the operations that can amplify are checked
  *before* they run (their result size is estimated), so nothing huge is ever
  allocated; the others produce at most a few times their input and are
  checked after.
- **widths**: a width or count given to a filter or string method
  (``center(10**9)``, ``batch(10**9)``, ``"{:>1000000000}"``) is at most
  ``LIMITS.width``; an integer a template computes at most
  ``LIMITS.int_bits`` bits.
- a few builtins whose cost the budget cannot see are removed (``lipsum``;
  the ``striptags`` and ``urlize`` filters, quadratic on crafted input, that no
  chat template needs).

Going over any limit raises :class:`TemplateTooExpensive`.
:func:`install` makes transformers compile every chat template in this sandbox,
so ``tokenizer.apply_chat_template`` — chat, training, ``data check``, mlx-lm —
is bounded too, not only our own :func:`mlx_lora.data.template.render_chat`.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
import string
import time
from typing import Any, Iterable

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer


@dataclasses.dataclass(frozen=True)
class RenderLimits:
    """What one render of a chat template may cost. Real templates (Llama 3,
    Qwen 3 with tools, Gemma 3, Mistral, DeepSeek) take a few hundred steps
    and milliseconds on a long conversation, and never pass a width beyond a
    few hundred: these are hundreds of times that."""

    steps: int = 1_000_000  # loop iterations + calls (0.5-3 s of pure stepping)
    seconds: float = 2.0  # CPU time of the rendering thread (not wall time: a busy machine is no reason)
    text: int = 4 * 1024 * 1024  # characters of any value and of the output ...
    text_per_input: int = 8  # ... or this many times the data rendered, if more
    width: int = 100_000  # a width/count argument (center, batch, indent, format widths)
    int_bits: int = 4096  # an integer computed by the template (``2**4096`` is 1,234 digits)
    json_indent: int = 16  # tojson(indent=...): each level of nesting repeats it on every line
    template_chars: int = 1_000_000  # the template's source (real ones: 1-30 kB)


LIMITS = RenderLimits()


class TemplateTooExpensive(jinja2.exceptions.TemplateError):
    """A render went over :data:`LIMITS`."""


class _Budget:
    __slots__ = ("limits", "steps_left", "deadline", "text")

    def __init__(self, limits: RenderLimits, input_weight: int) -> None:
        self.limits = limits
        self.steps_left = limits.steps
        self.deadline = time.thread_time() + limits.seconds
        self.text = max(limits.text, limits.text_per_input * input_weight)

    def tick(self) -> None:
        self.steps_left -= 1
        if self.steps_left < 0:
            raise TemplateTooExpensive(f"it takes more than {self.limits.steps:,} loop iterations and calls")
        if time.thread_time() > self.deadline:
            raise TemplateTooExpensive(f"it takes more than {self.limits.seconds:g} s")

    def check_size(self, size: int, what: str) -> None:
        if size > self.text:
            raise TemplateTooExpensive(f"{what} would be {size:,} characters long; at most {self.text:,} are allowed")

    def check_value(self, value: Any, what: str) -> Any:
        self.check_size(weight(value), what)
        return value

    def check_width(self, value: Any, what: str) -> None:
        if type(value) is int and abs(value) > self.limits.width:
            raise TemplateTooExpensive(f"{what} is given {value:,}; at most {self.limits.width:,} is allowed")


# The budget of the render running in this thread (set when its Context is made):
# for environment.concat, which is not given the context.
_current: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("mlx_lora_template_budget", default=None)


def _budget(context: Any) -> _Budget:
    budget = getattr(context, "budget", None)
    if budget is None:  # a context we did not make (cannot happen in BoundedSandbox); bound it anyway
        budget = _current.get() or _Budget(LIMITS, 0)
    return budget


def weight(root: Any) -> int:
    """About how many characters ``str(root)`` has, without building it: the
    characters of every string, counted as often as it occurs (as ``str`` would),
    plus a little per container item. Each distinct object is visited once, so a
    list repeated into itself a million times costs nothing to measure."""
    if type(root) is str:
        return len(root)
    memo: dict[int, int] = {}
    stack = [root]
    while stack:
        obj = stack[-1]
        key = id(obj)
        if key in memo and memo[key] >= 0:
            stack.pop()
            continue
        kids = _children(obj)
        if kids is None:
            memo[key] = _leaf_weight(obj)
            stack.pop()
            continue
        if key not in memo:  # first visit: weigh the children first
            memo[key] = -1  # in progress (a namespace may hold itself: repr shows it as "...")
            stack.extend(k for k in kids if id(k) not in memo)
            continue
        memo[key] = 2 + sum(max(memo.get(id(k), 3), 3) + 2 for k in kids)
        stack.pop()
    return memo[id(root)]


def _children(obj: Any) -> list | None:
    if isinstance(obj, str):
        return None
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, Namespace):
        attrs = object.__getattribute__(obj, "_Namespace__attrs")
        return [*attrs.keys(), *attrs.values()]
    return None


def _leaf_weight(obj: Any) -> int:
    if isinstance(obj, str):
        return len(obj)
    if type(obj) is int:
        return obj.bit_length() * 3 // 10 + 1  # decimal digits
    return 24  # floats, None, functions, undefined: a short repr


class _CountedIterable:
    """An iterable whose every item is a step of the render's budget (keeps
    ``len`` where the wrapped one has it, for ``loop.length``)."""

    __slots__ = ("_iterable", "_budget")

    def __init__(self, iterable: Iterable, budget: _Budget) -> None:
        self._iterable = iterable
        self._budget = budget

    def __iter__(self):
        tick = self._budget.tick
        for item in self._iterable:
            tick()
            yield item

    def __len__(self) -> int:
        return len(self._iterable)  # TypeError for generators: LoopContext handles it


class _Bounding(NodeTransformer):
    """Rewrites a parsed template so the budget sees its loops, literals and ``~``."""

    def __init__(self, environment: jinja2.Environment) -> None:
        self.eval_ctx = nodes.EvalContext(environment)

    def _wrap(self, helper: str, node: nodes.Expr) -> nodes.Expr:
        call = nodes.Call(nodes.EnvironmentAttribute(helper), [nodes.ContextReference(), node], [], None, None)
        return call.set_lineno(node.lineno or 1)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self._wrap("_bounded_iter", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self._wrap("_bounded_text", node)

    def _literal(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        if getattr(node, "ctx", "load") != "load":
            return node  # an assignment target ({% set a, b = ... %})
        try:
            node.as_const(self.eval_ctx)  # all constants: bounded by the source
            return node
        except nodes.Impossible:
            return self._wrap("_bounded_value", node)

    visit_List = visit_Tuple = visit_Dict = _literal


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")
_STRFTIME = re.compile(r"%[-_0^#]*(\d+)")
_WIDTH_FILTERS = {"batch", "center", "indent", "slice", "truncate", "wordwrap"}
_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}
_REMOVED_FILTERS = ("striptags", "urlize")


def _int_args(args: tuple, kwargs: dict) -> list:
    return [a for a in (*args, *kwargs.values()) if type(a) is int]


def _check_printf(budget: _Budget, fmt: str, values: Any, what: str) -> None:
    starred = False
    for match in _PRINTF.finditer(fmt):
        for number in match.groups():
            if number == "*":
                starred = True
            elif number:
                budget.check_width(int(number), what)
    if starred:
        for value in values if isinstance(values, (tuple, list)) else (values,):
            budget.check_width(value, what)


def _check_format_spec(budget: _Budget, fmt: str, args: tuple, kwargs: dict, what: str) -> None:
    nested = False
    for _, _, spec, _ in string.Formatter().parse(fmt):
        if spec:
            nested = nested or "{" in spec
            for number in re.findall(r"\d+", spec):
                budget.check_width(int(number), what)
    if nested:  # "{:{w}}": the width is an argument
        for value in _int_args(args, kwargs):
            budget.check_width(value, what)


def _join_size(budget: _Budget, items: list, separator: Any) -> int:
    return sum(weight(item) for item in items) + len(str(separator)) * max(len(items) - 1, 0)


def _replace_size(text: str, old: str, new: str, count: Any = -1) -> int:
    hits = text.count(old) if old else len(text) + 1
    if type(count) is int and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def _check_str_method(budget: _Budget, text: str, name: str, args: tuple, kwargs: dict) -> tuple:
    """Estimate what a str method would build, before it runs; returns the
    arguments to call it with (an iterable given to ``join`` is materialised)."""
    what = f"str.{name}()"
    if name in _WIDTH_METHODS:
        for value in _int_args(args, kwargs):
            budget.check_width(value, what)
        if name == "expandtabs":
            size = (_int_args(args, kwargs) or [8])[0]
            budget.check_size(len(text) + text.count("\t") * max(size, 0), what)
    elif name == "join" and args:
        items = list(args[0])
        budget.check_size(_join_size(budget, items, text), what)
        args = (items, *args[1:])
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        budget.check_size(_replace_size(text, *args[:3]), what)
    elif name in ("format", "format_map"):
        _check_format_spec(budget, text, args, kwargs, what)
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((weight(v) for v in args[0].values() if v is not None), default=1)
        budget.check_size(len(text) * max(longest, 1), what)
    return args


def _check_filter(budget: _Budget, name: str, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple]:
    """Estimate what a filter would build, before it runs; returns the value and
    arguments to call it with."""
    what = f"the {name} filter"
    if name in _WIDTH_FILTERS:
        for number in _int_args(args, kwargs):
            budget.check_width(number, what)
    if name == "join":
        value = value if isinstance(value, (list, tuple, str)) else list(value)
        separator = args[0] if args else kwargs.get("d", "")
        budget.check_size(_join_size(budget, list(value), separator), what)
    elif name == "replace" and len(args) >= 2:
        budget.check_size(_replace_size(str(value), str(args[0]), str(args[1]), *args[2:3]), what)
    elif name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        per_line = width if type(width) is int else len(str(width))
        text = str(value)
        budget.check_size(len(text) + (text.count("\n") + 1) * max(per_line, 0), what)
    elif name == "wordwrap":
        text = str(value)
        budget.check_width(len(text), f"the text given to {what}")  # textwrap's cost is not a step
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring") or "\n"
        width = args[0] if args and type(args[0]) is int else 79
        budget.check_size(len(text) + (len(text) // max(width, 1) + text.count("\n") + 1) * len(str(wrap)), what)
    elif name == "format" and isinstance(value, str):
        _check_printf(budget, value, args or tuple(kwargs.values()), what)
    elif name == "tojson":
        indent = args[1] if len(args) > 1 else kwargs.get("indent")
        size = indent if type(indent) is int else len(indent) if isinstance(indent, str) else 0
        if size > budget.limits.json_indent:
            raise TemplateTooExpensive(f"tojson is given an indent of {size:,}; at most "
                                       f"{budget.limits.json_indent} is allowed")
    return value, args


def _bounded_filter(name: str, func: Any) -> Any:
    """``func`` behind the budget: a step, the estimate of what it builds, the
    size of what it built. Receives the context (pass_context) and passes on
    whatever ``func`` asks for."""
    wants = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    def bounded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget(context)
        budget.tick()
        value, args = _check_filter(budget, name, value, args, kwargs)
        lead = (context,) if wants == "context" else (context.eval_ctx,) if wants == "eval_context" else \
            (context.environment,) if wants == "environment" else ()
        result = func(*lead, value, *args, **kwargs)
        if not hasattr(result, "__next__"):  # generators (map, select) are measured where consumed
            budget.check_value(result, f"the result of the {name} filter")
        return result

    bounded.__name__ = getattr(func, "__name__", name)
    bounded.__doc__ = getattr(func, "__doc__", None)
    bounded.bounded_original = func  # type: ignore[attr-defined]
    return jinja2.pass_context(bounded)


class _BoundedFilters(dict):
    """The environment's filters, each behind :func:`_bounded_filter` however it is added."""

    def __init__(self, filters: dict) -> None:
        super().__init__()
        self.update(filters)

    def __setitem__(self, name: str, func: Any) -> None:
        if not hasattr(func, "bounded_original"):
            func = _bounded_filter(name, func)
        super().__setitem__(name, func)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for name, func in dict(*args, **kwargs).items():
            self[name] = func

    def setdefault(self, name: str, func: Any = None) -> Any:
        if name not in self:
            self[name] = func
        return self[name]


class BoundedContext(Context):
    """A render's context, carrying its :class:`_Budget`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        data = {k: v for k, v in self.parent.items() if k not in self.environment.globals}
        self.budget = _Budget(getattr(self.environment, "limits", LIMITS), weight(data))
        _current.set(self.budget)


def _bounded_concat(pieces: Iterable[str]) -> str:
    """``environment.concat`` (how output, macro bodies and ``{% set %}`` blocks
    are joined), stopping as soon as the text passes the budget."""
    budget = _current.get() or _Budget(LIMITS, 0)
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > budget.text:
            budget.check_size(size, "the rendered text")
        out.append(piece)
    return "".join(out)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with the render budget (see the module docstring)."""

    context_class = BoundedContext
    concat = staticmethod(_bounded_concat)
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    limits = LIMITS
    _helpers = frozenset({"_bounded_iter", "_bounded_text", "_bounded_value"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals.pop("lipsum", None)  # lipsum(10**6) is one call that loops in Python
        for name in _REMOVED_FILTERS:
            self.filters.pop(name, None)
        self.filters = _BoundedFilters(self.filters)

    # ---- parse: count the loops, check literals and ~ -------------------------

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        if len(source) > self.limits.template_chars:
            raise TemplateTooExpensive(f"the template is {len(source):,} characters long; at most "
                                       f"{self.limits.template_chars:,} are allowed")
        tree = _Bounding(self).visit(super()._parse(source, name, filename))
        return tree.set_environment(self)

    def _bounded_iter(self, context: Context, iterable: Any) -> _CountedIterable:
        return _CountedIterable(iterable, _budget(context))

    def _bounded_text(self, context: Context, text: str) -> str:
        _budget(context).check_size(len(text), "a joined string (~)")
        return text

    def _bounded_value(self, context: Context, value: Any) -> Any:
        return _budget(context).check_value(value, "a list or dict")

    # ---- run time ---------------------------------------------------------------

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if getattr(obj, "__self__", None) is self and getattr(obj, "__name__", None) in self._helpers:
            return obj(*args)  # our own, put in by _Bounding (kwargs: jinja's _loop_vars/_block_vars)
        budget = _budget(context)
        budget.tick()
        # the sandbox hands out str.format wrapped (update_wrapper keeps the method as __wrapped__)
        method = getattr(obj, "__wrapped__", obj)
        owner = getattr(method, "__self__", None)
        name = getattr(method, "__name__", "")
        if isinstance(owner, str):
            args = _check_str_method(budget, owner, name, args, kwargs)
        elif name in ("strftime_now", "strftime") and args and isinstance(args[0], str):
            for width in _STRFTIME.findall(args[0]):
                budget.check_width(int(width), name)
        result = super().call(context, obj, *args, **kwargs)
        if not hasattr(result, "__next__"):
            budget.check_value(result, f"the result of {name or 'a call'}()")
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget = _budget(context)
        ints = type(left) is int and type(right) is int
        if operator == "**" and ints and right > 0 and abs(left) > 1:
            if abs(left).bit_length() * right > self.limits.int_bits:
                raise TemplateTooExpensive(f"{left} ** {right} has more than {self.limits.int_bits:,} bits")
        elif operator == "*" and ints:
            if left.bit_length() + right.bit_length() > self.limits.int_bits:
                raise TemplateTooExpensive(f"a product of more than {self.limits.int_bits:,} bits")
        elif operator == "*":
            sequence, times = (left, right) if type(right) is int else (right, left)
            if type(times) is int and isinstance(sequence, (str, list, tuple)) and times > 0:
                budget.check_size(weight(sequence) * times, "a repetition (*)")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            budget.check_size(weight(left) + weight(right), "a concatenation (+)")
        elif operator == "%" and isinstance(left, str):
            _check_printf(budget, left, right, "%-formatting")
        result = super().call_binop(context, operator, left, right)
        if operator == "%" and isinstance(result, str):
            budget.check_size(len(result), "%-formatting")
        return result


def install() -> None:
    """Make transformers compile chat templates in :class:`BoundedSandbox`
    (``apply_chat_template`` and ``render_jinja_template`` both go through
    ``chat_template_utils._compile_jinja_template``). Idempotent."""
    from transformers.utils import chat_template_utils as ctu

    if ctu.ImmutableSandboxedEnvironment is not BoundedSandbox:
        ctu.ImmutableSandboxedEnvironment = BoundedSandbox
        ctu._compile_jinja_template.cache_clear()  # templates compiled before are in the plain sandbox
