"""Render a GGUF's own chat template (Jinja) so that it can neither execute anything nor exhaust the machine.

The only module that imports jinja2. A template comes from a file downloaded from a stranger, and
llama-cpp-python once executed code from one (CVE-2024-34359). Two layers:

1. Jinja2's `ImmutableSandboxedEnvironment`: no attribute starting with `_` (so no `__globals__`,
   `__subclasses__`, `cycler.__init__.__globals__`, ...), no mutation of lists and dicts, no loader (no
   include/import/extends). Here reaching for an unsafe attribute fails the render at once instead of
   quietly yielding an undefined value, so a hostile template is refused, not half-rendered.
2. Budgets, because the sandbox alone bounds neither time nor memory (`range(10**5)` nested, `'x' * 10**9`,
   doubling a string in a loop): every step the sandbox lets us see (calls, filters, attribute lookups,
   operators, each loop iteration, string joins, list literals) is counted against a step and time budget,
   and any value it makes is checked against a size budget *before* it is made where the size is
   knowable (`*`, `+`, `%`, `str.format`, `replace`, `join`, `indent`, ...), after otherwise.
Every failure, whatever it is, leaves render() as a TemplateError.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import KeysView, ItemsView, Mapping, Sequence, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any, Callable

from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.runtime import Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

from localchat.errors import TemplateError
from localchat.template_messages import message_pairs

MAX_TEMPLATE_CHARS = 256 * 1024  # real chat templates are 1..20 KB


@dataclass(frozen=True)
class RenderLimits:
    max_output: int = 1_000_000  # characters, on top of twice the conversation's own text
    max_steps: int = 2_000_000  # a long conversation through a real template takes ~50 per message
    max_seconds: float = 2.0
    max_int_arg: int = 65536  # widths, counts, ranges passed to a function or filter
    max_int_bits: int = 4096


class _LimitExceeded(Exception):
    pass


class _TemplateRaised(Exception):
    """The template called raise_exception(): it refuses this conversation on purpose."""


_BUDGET: ContextVar["_Budget | None"] = ContextVar("localchat_template_budget", default=None)
_SIZED = (list, tuple, set, frozenset, dict, KeysView, ValuesView, ItemsView)


class _Budget:
    """What one render (or one compile) may still spend: steps, time, and the size of any one value."""

    def __init__(self, limits: RenderLimits, input_chars: int = 0) -> None:
        self.limits = limits
        self.steps = limits.max_steps
        self.deadline = time.monotonic() + limits.max_seconds
        self.max_chars = limits.max_output + 2 * input_chars
        self._sizes: dict[int, tuple[Any, int]] = {}  # id -> (object kept alive, estimated size)

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise _LimitExceeded(f"it took more than {self.limits.max_steps:,} steps")
        if time.monotonic() > self.deadline:
            raise _LimitExceeded(f"it ran for more than {self.limits.max_seconds:g} s")

    def size(self, value: Any) -> int:
        """Roughly len(str(value)), stopping once it is known to be over the limit."""
        if isinstance(value, (str, bytes)):
            return len(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value.bit_length() // 3 + 2
        if isinstance(value, Namespace):
            value = object.__getattribute__(value, "_Namespace__attrs")
        if not isinstance(value, _SIZED):
            return 0 if isinstance(value, Undefined) else 24
        hit = self._sizes.get(id(value))
        if hit is not None:
            return hit[1]
        total = 2
        items = value.items() if isinstance(value, Mapping) else value
        for item in items:
            total += self.size(item) + 2
            if total > self.max_chars:
                break
        self._sizes[id(value)] = (value, total)
        return total

    def allow(self, estimate: int, what: str) -> None:
        if estimate > self.max_chars:
            raise _LimitExceeded(f"{what} would be over {self.max_chars:,} characters")

    def checked(self, value: Any, what: str = "a value") -> Any:
        self.allow(self.size(value), what)
        if isinstance(value, int) and value.bit_length() > self.limits.max_int_bits:
            raise _LimitExceeded(f"a number grew past {self.limits.max_int_bits} bits")
        return value

    def ints(self, values: Sequence[Any]) -> None:
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > self.limits.max_int_arg:
                raise _LimitExceeded(f"the number {v} is too large (at most {self.limits.max_int_arg:,})")


def _budget() -> _Budget:
    budget = _BUDGET.get()
    return budget if budget is not None else _Budget(RenderLimits())  # outside any render or compile


# -- size estimates of the operations that can multiply the size of their input

_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")


def _widths(budget: _Budget, digits: list[str]) -> int:
    widths = [int(d) for d in digits if d and d != "*"]
    budget.ints(widths)
    return sum(widths) + budget.limits.max_int_arg * sum(1 for d in digits if d == "*")


def _percent_estimate(budget: _Budget, fmt: str, args: Any) -> int:
    values = list(args.values()) if isinstance(args, Mapping) else list(args) if isinstance(args, tuple) else [args]
    biggest = max((budget.size(v) for v in values), default=0)
    fields = list(_PERCENT.finditer(fmt))
    return len(fmt) + len(fields) * biggest + _widths(budget, [g for m in fields for g in m.groups()])


def _format_estimate(budget: _Budget, fmt: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    values = list(args) + list(kwargs.values())
    if len(values) == 1 and isinstance(values[0], Mapping):  # format_map
        values = list(values[0].values())
    biggest = max((budget.size(v) for v in values), default=0)
    fields, digits = 0, []
    for _, name, spec, _ in string.Formatter().parse(fmt):
        if name is not None:
            fields += 1 + (spec or "").count("{")
            digits += re.findall(r"\d+", re.sub(r"\{[^}]*\}", "", spec or ""))
            digits += ["*"] * (spec or "").count("{")
    return len(fmt) + fields * biggest + _widths(budget, digits)


def _join_estimate(budget: _Budget, sep: str, items: list[Any]) -> int:
    return sum(budget.size(i) for i in items) + len(sep) * len(items)


def _replace_estimate(budget: _Budget, s: Any, old: Any, new: Any, count: Any = None) -> int:
    if not (isinstance(s, bytes) and isinstance(old, bytes) and isinstance(new, bytes)):
        old, new = str(old), str(new)  # as the replace filter does
    length = budget.size(s)
    if isinstance(s, (str, bytes)) and type(old) is type(s if isinstance(s, bytes) else ""):
        hits = s.count(old) if old else len(s) + 1
    else:
        hits = length + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return length + hits * max(0, len(new) - len(old))


def _precheck_method(budget: _Budget, func: Any, args: tuple, kwargs: dict) -> tuple:
    """str/bytes methods that can multiply their input; returns the args to call with."""
    bound = getattr(func, "__wrapped__", func)  # the sandbox wraps str.format in its own formatter
    owner, name = getattr(bound, "__self__", None), getattr(bound, "__name__", "")
    if not isinstance(owner, (str, bytes)):
        return args
    if name in ("format", "format_map") and isinstance(owner, str):
        budget.allow(_format_estimate(budget, owner, args, kwargs), "a str.format() result")
    elif name == "replace" and len(args) >= 2:
        budget.allow(_replace_estimate(budget, owner, *args[:3]), "a replace() result")
    elif name == "join" and len(args) == 1:
        items = list(args[0])
        budget.allow(_join_estimate(budget, owner, items), "a join() result")
        args = (items,)
    elif name == "expandtabs":
        tab = (args or [kwargs.get("tabsize", 8)])[0]
        budget.allow(len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * int(tab), "expandtabs()")
    return args


# -- filters: each wrapped to count a step, bound its numeric parameters and its result

def _filter_estimate(budget: _Budget, name: str, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple]:
    if name == "replace" and len(args) >= 2:
        budget.allow(_replace_estimate(budget, value, *args[:3]), "a replace result")
    elif name == "join":
        value = list(value) if not isinstance(value, Undefined) else value
        sep = str(args[0]) if args else str(kwargs.get("d", ""))
        if isinstance(value, list):
            budget.allow(_join_estimate(budget, sep, value), "a join result")
    elif name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        width = len(width) if isinstance(width, str) else int(width)
        lines = value.count("\n") + 1 if isinstance(value, str) else budget.size(value)
        budget.allow(budget.size(value) + lines * width, "an indent result")
    elif name == "wordwrap":
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring") or "\n"
        budget.allow(budget.size(value) * (1 + len(str(wrap))), "a wordwrap result")
    elif name == "format" and isinstance(value, str):
        budget.allow(_percent_estimate(budget, value, kwargs or args), "a format result")
    elif name == "tojson":
        indent = args[1] if len(args) > 1 else kwargs.get("indent")
        if isinstance(indent, int) and indent > 16:
            raise _LimitExceeded("tojson indent is too large")
    elif name == "sum":
        start = args[1] if len(args) > 1 else kwargs.get("start", 0)
        if isinstance(start, (list, tuple)):
            value = list(value)
            budget.allow(budget.size(start) + sum(budget.size(v) for v in value), "a sum of lists")
    return value, args


def _guard_filter(name: str, func: Callable) -> Callable:
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0  # context/eval_ctx/environment

    @wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.step()
        budget.ints(list(args[skip + 1:]) + list(kwargs.values()))
        if len(args) > skip:
            value, rest = _filter_estimate(budget, name, args[skip], args[skip + 1:], kwargs)
            args = args[:skip] + (value,) + rest
        return budget.checked(func(*args, **kwargs), f"the result of the {name!r} filter")

    return guarded


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # As Hugging Face transformers renders chat templates (no HTML escaping, unicode kept).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: Any = "") -> None:
    raise _TemplateRaised(str(message)[:500])


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if n > 20 or max > 200:
        raise _LimitExceeded("lipsum() asked for too much text")
    return generate_lorem_ipsum(n, html, min, max)


# -- code generation: route loops, joins and literals through the budget

class _GuardNodes(NodeTransformer):
    """Wrap each loop's iterable, each `~` join and each list/tuple/dict literal in a call the sandbox sees."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment

    def wrap(self, hook: str, node: nodes.Expr) -> nodes.Expr:
        call = nodes.Call(nodes.EnvironmentAttribute(hook), [node], [], None, None, lineno=node.lineno)
        return call.set_environment(self.environment)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = self.wrap("localchat_iter", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return self.wrap("localchat_checked", node)

    def _literal(self, node: nodes.Expr) -> nodes.Node:
        self.generic_visit(node)
        return self.wrap("localchat_checked", node) if getattr(node, "ctx", "load") == "load" else node

    visit_List = visit_Tuple = visit_Dict = _literal


class _GuardedCodeGenerator(CodeGenerator):
    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        super().visit_Template(_GuardNodes(self.environment).visit(node), frame)


def _iterate(iterable: Any) -> Any:
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _checked_concat(parts: Any) -> str:
    budget, total, out = _budget(), 0, []
    for part in parts:
        total += len(part)
        budget.allow(total, "the text of a block")
        out.append(part)
    return "".join(out)


class GuardedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["+", "-", "*", "/", "//", "%", "**"])
    code_generator_class = _GuardedCodeGenerator

    def __init__(self) -> None:
        # As Hugging Face transformers configures it: templates are written for these settings.
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"],
                         cache_size=0, auto_reload=False)
        self.localchat_iter = _iterate
        self.localchat_checked = lambda value: _budget().checked(value)
        self.concat = _checked_concat  # type: ignore[assignment]
        self.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, lipsum=_lipsum)
        filters = dict(self.filters, tojson=_tojson)
        self.filters = {name: _guard_filter(name, f) for name, f in filters.items()}

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        raise SecurityError(f"access to {attribute!r} on a {type(obj).__name__!r} object is not allowed")

    def getattr(self, obj: Any, attribute: str) -> Any:
        _budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _budget().step()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = _budget()
        budget.step()
        if __obj is __self.localchat_iter or __obj is __self.localchat_checked:
            return __obj(*args)
        budget.ints(list(args) + list(kwargs.values()))
        args = _precheck_method(budget, __obj, args, kwargs)
        return budget.checked(super().call(__context, __obj, *args, **kwargs), "a function's result")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _budget()
        budget.step()
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(n, int) and isinstance(seq, (str, bytes, list, tuple)):
                    budget.allow(budget.size(seq) * max(n, 0), "a repeated value")
            if ints and left.bit_length() + right.bit_length() > budget.limits.max_int_bits:
                raise _LimitExceeded("a product is too large")
        elif operator == "+" and isinstance(left, (str, bytes, list, tuple)):
            budget.allow(budget.size(left) + budget.size(right), "a sum")
        elif operator == "**" and ints and right > 0 and abs(left) > 1:
            if left.bit_length() * right > budget.limits.max_int_bits:
                raise _LimitExceeded("a power is too large")
        elif operator == "%" and isinstance(left, str):
            budget.allow(_percent_estimate(budget, left, right), "a %-formatted string")
        return budget.checked(super().call_binop(context, operator, left, right), f"the result of {operator!r}")


_RESERVED = frozenset({"messages", "add_generation_prompt", "bos_token", "eos_token"})


def _reasoning_of(message: Any) -> str:
    """A message's thought: Message.reasoning, or a mapping's reasoning_content (or reasoning)."""
    if isinstance(message, Mapping):
        value = message.get("reasoning_content", message.get("reasoning"))
    else:
        value = getattr(message, "reasoning", None)
    return value if isinstance(value, str) else ""


def _describe(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class SandboxedTemplate:
    """A GGUF's own chat template. render() returns the prompt or raises TemplateError, nothing else."""

    name = "gguf"

    def __init__(self, source: str, bos_token: str | None = None, eos_token: str | None = None,
                 limits: RenderLimits = RenderLimits(), variables: Mapping[str, Any] | None = None) -> None:
        if not isinstance(source, str) or not source.strip():
            raise TemplateError("the model's chat template is empty")
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateError(f"the model's chat template is {len(source):,} characters long, "
                                f"more than the {MAX_TEMPLATE_CHARS:,} allowed")
        self.source = source
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self.limits = limits
        # Extra template variables (the thinking switch: enable_thinking), scalars only.
        self.variables = {k: v for k, v in (variables or {}).items() if k not in _RESERVED}
        token = _BUDGET.set(_Budget(limits))
        try:
            self._template = GuardedEnvironment().from_string(source)
        except TemplateSyntaxError as e:
            raise TemplateError(f"the model's chat template has an error on line {e.lineno}: {_describe(e)}") from None
        except Exception as e:  # noqa: BLE001 - whatever compiling a hostile template raises
            raise TemplateError(f"the model's chat template cannot be compiled: {_describe(e)}") from None
        finally:
            _BUDGET.reset(token)

    def with_variables(self, **variables: Any) -> "SandboxedTemplate":
        """The same compiled template, rendered with these variables too (e.g. enable_thinking=False)."""
        other = object.__new__(SandboxedTemplate)
        other.__dict__.update(self.__dict__)
        other.variables = {**self.variables, **{k: v for k, v in variables.items() if k not in _RESERVED}}
        return other

    def render(self, messages: Sequence[Any], add_generation_prompt: bool = True) -> str:
        conversation: list[dict[str, Any]] = [{"role": role, "content": content}
                                              for role, content in message_pairs(messages)]
        for entry, message in zip(conversation, messages):
            thought = _reasoning_of(message)  # the template decides whether old thoughts reach the prompt
            if thought:
                entry["reasoning_content"] = thought
        return self.render_dicts(conversation, add_generation_prompt=add_generation_prompt)

    def render_dicts(self, conversation: list[dict], tools: list[dict] | None = None,
                     add_generation_prompt: bool = True) -> str:
        """Messages as the template sees them (tool calls, tool results, reasoning_content) and the tool list,
        if any."""
        extra = {"tools": tools} if tools else {}
        budget = _Budget(self.limits, len(repr(conversation)) + len(repr(tools or "")))
        token = _BUDGET.set(budget)
        try:
            out, total = [], 0
            for chunk in self._template.generate(self.variables, messages=conversation,
                                                 add_generation_prompt=add_generation_prompt,
                                                 bos_token=self.bos_token, eos_token=self.eos_token, **extra):
                total += len(chunk)
                budget.allow(total, "the prompt")
                out.append(chunk)
            return "".join(out)
        except _TemplateRaised as e:
            raise TemplateError(f"the model's chat template refused this conversation: {_describe(e)}") from None
        except SecurityError as e:
            raise TemplateError(f"the model's chat template tried something unsafe and was stopped: {_describe(e)}") from None
        except _LimitExceeded as e:
            raise TemplateError(f"the model's chat template was stopped: {_describe(e)}") from None
        except Exception as e:  # noqa: BLE001 - a template may raise anything; callers get one error type
            raise TemplateError(f"the model's chat template failed: {type(e).__name__}: {_describe(e)}") from None
        finally:
            _BUDGET.reset(token)
