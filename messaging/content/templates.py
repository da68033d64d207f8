"""Message templates: sandboxed Jinja2 over a supporter's fields, with limits.

Anyone who can publish an alert (SNS or the API) writes code that every sender runs once per
recipient, so the sandbox is the boundary against a compromised or careless publisher. Jinja's
own sandbox stops attribute escapes; it does not stop a template from eating memory or time.
Ours adds, on top of it:

- no compile-time constant folding of ``*``, ``**`` and ``%`` (``{{ 'x' * 400000000 }}`` used
  to allocate 400 MB while the alert was *validated*); at render time the operators refuse
  results longer than :data:`MAX_VALUE_CHARS`;
- ``range`` capped at :data:`MAX_RANGE` items, and every loop iteration, call and operator
  checks a per-render CPU deadline (:mod:`messaging.content.render_budget`), so nested loops end in
  milliseconds instead of minutes;
- padding and repetition (``center``, ``ljust``, ``format`` widths, ``replace``, ``lipsum``)
  refused beyond :data:`MAX_VALUE_CHARS`;
- the rendered text capped per part (:data:`SMS_RENDERED_MAX_CHARS`,
  :data:`EMAIL_RENDERED_MAX_CHARS`, :data:`SUBJECT_RENDERED_MAX_CHARS`).

``StrictUndefined`` makes a misspelt field fail that one message (contract §4) instead of
sending "Hi ," to a million people. An alert whose template breaks a limit whatever the
supporter's fields are is refused at validation (:func:`check_template`), so it goes to the
dead-letter queue with its reason instead of failing a million messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    meta,
    nodes,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import escape

from messaging.content.render_budget import TemplateLimitError, bounded
from messaging.content.render_budget import tick as _tick
from messaging.errors import InputError

#: Longest SMS body, in characters, before the first-contact wrapper: 10 GSM-7 segments.
SMS_RENDERED_MAX_CHARS: Final = 1600
#: Longest rendered email text or HTML part, in characters (Gmail clips a message at 102 KB).
EMAIL_RENDERED_MAX_CHARS: Final = 100_000
#: Longest rendered subject, in characters (RFC 5322's line limit).
SUBJECT_RENDERED_MAX_CHARS: Final = 998
#: Longest template source we compile, in characters (an email HTML part with inline CSS).
TEMPLATE_MAX_CHARS: Final = 100_000
#: Longest string or sequence an operator, a method or a filter may build while rendering.
MAX_VALUE_CHARS: Final = EMAIL_RENDERED_MAX_CHARS
#: Most items ``range`` gives a template (Jinja's own cap is 100 000).
MAX_RANGE: Final = 10_000
#: Largest integer ``**`` and ``*`` may produce, in bits (a 300-digit number).
MAX_INT_BITS: Final = 1024


class RenderError(InputError):
    """A template failed for one supporter; that one message fails, the blast goes on."""


def _approx_chars(value: Any) -> int:
    """What ``str(value)`` would cost, roughly, without building it."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return 2 + sum(_approx_chars(v) + 2 for v in value)
    return 8


def _check_size(value: Any, what: str) -> Any:
    if isinstance(value, str | bytes | list | tuple) and _approx_chars(value) > MAX_VALUE_CHARS:
        raise TemplateLimitError(f"{what} would be longer than {MAX_VALUE_CHARS} characters")
    return value


def _sized(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """The pieces of a ``~`` concatenation, refused before joining if the result is too long."""
    if sum(_approx_chars(i) for i in items) > MAX_VALUE_CHARS:
        raise TemplateLimitError(f"'~' would be longer than {MAX_VALUE_CHARS} characters")
    return items


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """What every ``{% for %}`` iterates: checks the deadline once per item."""
    for item in iterable:
        _tick()
        yield item


def _bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise TemplateLimitError(f"range is limited to {MAX_RANGE} items")
    return rng


class _BoundedNamespace(Namespace):
    """``namespace()`` whose attributes cannot grow past the limit (a loop could double one)."""

    def __setitem__(self, name: str, value: Any) -> None:
        _tick()
        super().__setitem__(name, _check_size(value, f"namespace.{name}"))


# Width and precision in %-formats and in str.format specs: 'x' padded to a gigabyte is the
# same attack as 'x' * 10**9.
_PERCENT_WIDTH = re.compile(r"%[#0\- +]*(\d+|\*)?(?:\.(\d+|\*))?")
_BRACE_WIDTH = re.compile(r"\{[^{}]*?:[^{}]*?(\d+)[^{}]*?\}")


def _check_format(fmt: str, args: Iterable[Any]) -> None:
    widths = [w for m in _PERCENT_WIDTH.finditer(fmt) for w in m.groups() if w and w != "*"]
    widths += _BRACE_WIDTH.findall(fmt)
    star = "*" in fmt and any(isinstance(a, int) and abs(a) > MAX_VALUE_CHARS for a in args)
    if star or any(int(w) > MAX_VALUE_CHARS for w in widths):
        raise TemplateLimitError(f"format width over {MAX_VALUE_CHARS} characters")


def _replace_size(text: str, old: str, new: str, count: int = -1) -> int:
    hits = text.count(old) if count < 0 else min(count, text.count(old))
    return len(text) + hits * (len(new) - len(old))


def _check_str_method(name: str, text: str, args: tuple[Any, ...]) -> None:
    if name in ("center", "ljust", "rjust", "zfill") and args:
        if isinstance(args[0], int) and args[0] > MAX_VALUE_CHARS:
            raise TemplateLimitError(f"{name} width over {MAX_VALUE_CHARS} characters")
    elif name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        if size * text.count("\t") > MAX_VALUE_CHARS:
            raise TemplateLimitError(f"expandtabs over {MAX_VALUE_CHARS} characters")
    elif name == "replace" and len(args) >= 2:
        if _replace_size(text, str(args[0]), str(args[1]), *args[2:3]) > MAX_VALUE_CHARS:
            raise TemplateLimitError(f"replace would be longer than {MAX_VALUE_CHARS} characters")
    elif name in ("format", "format_map"):
        _check_format(text, args)


def _bounded_filter(name: str, filter_: Callable[..., Any]) -> Callable[..., Any]:
    """A default filter that refuses widths, counts and results past the limit."""

    # Filters marked pass_context/pass_environment get that first, then the value.
    skip = 2 if hasattr(filter_, "jinja_pass_arg") else 1

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        # The size-like arguments are the integers after the value.
        ints = [a for a in (*args[skip:], *kwargs.values()) if isinstance(a, int)]
        if name == "join" and len(args) >= skip:
            items = list(args[skip - 1])
            _sized(tuple(items))
            args = (*args[: skip - 1], items, *args[skip:])
        if name == "format":
            value = next((a for a in args if isinstance(a, str)), "")
            _check_format(value, [*args, *kwargs.values()])
        elif name == "replace":
            strings = [a for a in args if isinstance(a, str)]
            size = _replace_size(strings[0], strings[1], strings[2]) if len(strings) > 2 else 0
            if size > MAX_VALUE_CHARS:
                raise TemplateLimitError(f"replace would be longer than {MAX_VALUE_CHARS}")
        elif any(abs(i) > MAX_VALUE_CHARS for i in ints):
            raise TemplateLimitError(f"{name}: argument over {MAX_VALUE_CHARS}")
        return _check_size(filter_(*args, **kwargs), f"the {name} filter's result")

    if hasattr(filter_, "jinja_pass_arg"):
        bounded.jinja_pass_arg = filter_.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


def _check_int(value: Any, what: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"{what} would be larger than {MAX_INT_BITS} bits")
    return value


def _mul(left: Any, right: Any) -> Any:
    for seq, n in ((left, right), (right, left)):
        sequence = isinstance(seq, str | bytes | list | tuple) and isinstance(n, int)
        if sequence and _approx_chars(seq) * n > MAX_VALUE_CHARS:
            raise TemplateLimitError(f"'*' would build more than {MAX_VALUE_CHARS} items")
    both_ints = isinstance(left, int) and isinstance(right, int)
    if both_ints and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"'*' would be larger than {MAX_INT_BITS} bits")
    return left * right


def _pow(left: Any, right: Any) -> Any:
    both_ints = isinstance(left, int) and isinstance(right, int)
    if both_ints and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
        raise TemplateLimitError(f"'**' would be larger than {MAX_INT_BITS} bits")
    return left**right


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        _check_format(left, right if isinstance(right, tuple) else (right,))
        return _check_size(left % right, "'%'")
    return left % right


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's compiler, with every ``~`` concatenation's pieces measured before the join."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        """``a ~ b ~ …`` → ``join(environment.sized((a, b, …)))``."""
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.sized((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with size and time limits (see the module docstring)."""

    #: Intercepted operators are never constant-folded at compile time: Jinja defers them to
    #: :meth:`call_binop` at render time, where the limits apply.
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    _BINOPS: Final[dict[str, Callable[[Any, Any], Any]]] = {"*": _mul, "**": _pow, "%": _mod}
    code_generator_class = _BoundedCodeGenerator
    sized = staticmethod(_sized)

    def __init__(self, *, html: bool, strict: bool = True) -> None:
        super().__init__(
            undefined=StrictUndefined if strict else ChainableUndefined, autoescape=html
        )
        self.globals = {
            "range": _bounded_range,
            "dict": dict,
            "namespace": _BoundedNamespace,
            "cycler": self.globals["cycler"],
            "joiner": self.globals["joiner"],
            "_rr_bounded_iter": _bounded_iter,
        }
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Every arithmetic operator at render time: the deadline, then the size limits."""
        _tick()
        special = self._BINOPS.get(operator)
        result = special(left, right) if special else self.binop_table[operator](left, right)
        return _check_int(_check_size(result, f"{operator!r}"), f"{operator!r}")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Every call a template makes: the deadline, and padding methods of strings."""
        _tick()
        # A recursive macro doubling a string passes it as an argument each time.
        _sized(args)
        # The sandbox hands out str.format wrapped; the bound method is its __wrapped__.
        method = getattr(__obj, "__wrapped__", __obj)
        owner = getattr(method, "__self__", None)
        if isinstance(owner, str):
            _check_str_method(getattr(method, "__name__", ""), owner, args)
        result = super().call(__context, __obj, *args, **kwargs)
        return _check_size(result, "a call's result")

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every loop iterates through _rr_bounded_iter, which checks the deadline per item: a
        # loop body that outputs nothing would otherwise never reach a check.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.Name("_rr_bounded_iter", "load"), [loop.iter], [], None, None
            )
        return tree


@lru_cache(maxsize=4)
def _environment(html: bool, strict: bool = True) -> BoundedSandbox:
    # Built on first use, not at import. HTML parts autoescape supporter fields (a name like
    # "<b>" must not become markup); SMS and text parts must not, or "&" turns into "&amp;".
    return BoundedSandbox(html=html, strict=strict)


@lru_cache(maxsize=256)
def _compile(source: str, html: bool = False, strict: bool = True) -> Any:
    if len(source) > TEMPLATE_MAX_CHARS:
        raise TemplateLimitError(f"template longer than {TEMPLATE_MAX_CHARS} characters")
    return _environment(html, strict).from_string(source)


#: Fields a validation render uses: any other name is a lenient undefined (renders empty).
_SAMPLE_FIELDS: Final = {
    "first_name": "Alexandria",
    "last_name": "Montgomery-Smith",
    "postal_code": "15213",
    "state": "PA",
    "fields": {},
}


def check_template(
    source: str, where: str, *, max_chars: int = EMAIL_RENDERED_MAX_CHARS, html: bool = False
) -> str:
    """Compile ``source`` and render it once with sample fields; ValueError naming the problem.

    A syntax error, or a limit broken whatever the fields are, rejects the alert now, not a
    million messages later. Other render errors depend on the supporter (a missing field)
    and are left to the per-message render.
    """
    try:
        _compile(source, html)
        _render_bounded(_compile(source, html, False), _SAMPLE_FIELDS, max_chars)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{where}: template error on line {exc.lineno}: {exc.message}") from None
    except TemplateLimitError as exc:
        raise ValueError(f"{where}: template over a limit: {exc}") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"{where}: template too deeply nested or too large") from None
    except Exception:  # noqa: S110 - depends on the supporter's fields; judged per message
        pass
    return source


def _render_bounded(template: Any, fields: Mapping[str, Any], max_chars: int) -> str:
    """Render with the deadline set, streaming, stopping once the output passes ``max_chars``."""
    with bounded():
        out: list[str] = []
        size = 0
        for chunk in template.generate(fields):
            size += len(chunk)
            if size > max_chars:
                raise TemplateLimitError(f"rendered text longer than {max_chars} characters")
            out.append(chunk)
            _tick()
        return "".join(out)


def render(
    source: str,
    fields: Mapping[str, Any],
    *,
    html: bool = False,
    max_chars: int = EMAIL_RENDERED_MAX_CHARS,
) -> str:
    """Render ``source`` for one supporter; :class:`RenderError` if it cannot be.

    ``max_chars`` is the longest rendered text accepted (:data:`SMS_RENDERED_MAX_CHARS` for
    an SMS body): longer fails the message rather than sending a truncated one.
    """
    parts = plain_parts(source)
    if parts is not None:  # the same text, without Jinja's per-render context (~10 µs)
        text = assemble(parts, fields, html=html)
        if len(text) > max_chars:
            raise RenderError(f"template failed: rendered text longer than {max_chars} characters")
        return text
    try:
        return _render_bounded(_compile(source, html), fields, max_chars)
    except TemplateError as exc:
        raise RenderError(f"template failed: {exc.message or type(exc).__name__}") from None
    except Exception as exc:  # a filter crash, a RecursionError: still one message
        raise RenderError(f"template failed: {type(exc).__name__}: {exc}") from None


#: Line breaks and other control characters: one in a subject would start a new mail header.
_HEADER_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")


def header_line(text: str) -> str:
    """``text`` as one header line: every run of control characters becomes one space."""
    return _HEADER_BREAKS.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class Field:
    """A ``{{ name }}`` in a plain template."""

    name: str


@lru_cache(maxsize=256)
def plain_parts(source: str) -> tuple[str | Field, ...] | None:
    """The template as literal text and bare ``{{ field }}`` outputs, or None if it is more.

    Most alerts are exactly that ("Hi {{ first_name }}, watch …"). Such a template renders
    the same without Jinja (:func:`assemble`), and an email body can travel once per batch
    with the fields as per-recipient substitutions. Anything else (filters, tags,
    expressions) goes through :func:`render`.
    """
    if len(source) > TEMPLATE_MAX_CHARS:
        return None
    try:
        tree = _environment(False).parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    parts: list[str | Field] = []
    for node in tree.body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                parts.append(child.data)
            elif isinstance(child, nodes.Name) and child.ctx == "load":
                parts.append(Field(child.name))
            else:
                return None
    return tuple(parts)


@lru_cache(maxsize=256)
def template_names(source: str) -> frozenset[str] | None:
    """The names ``source`` reads from its fields, or None if that cannot be told (a
    template that does not parse: it reads whatever it reads, and fails when rendered).

    A sender reads only these of each recipient's fields. Jinja has no way to look a
    variable up by a computed name, so the names the template does not declare itself are
    all it can read (``{{ fields.ward }}`` reads ``fields``).
    """
    if len(source) > TEMPLATE_MAX_CHARS:
        return None
    try:
        tree = _environment(False).parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    return frozenset(meta.find_undeclared_variables(tree))


#: Characters HTML escaping changes (markupsafe's set).
_HTML_SPECIAL = re.compile(r"[&<>\"']")


def field_value(value: Any, *, html: bool = False) -> str:
    """One field as Jinja would print it (HTML-escaped in HTML parts)."""
    text = str(value)
    if html and _HTML_SPECIAL.search(text):
        return str(escape(text))
    return text


def assemble(
    parts: tuple[str | Field, ...], fields: Mapping[str, Any], *, html: bool = False
) -> str:
    """Render plain ``parts`` for one supporter, exactly as :func:`render` would."""
    out = []
    for part in parts:
        if isinstance(part, Field):
            if part.name not in fields:
                raise RenderError(f"template failed: '{part.name}' is undefined")
            out.append(field_value(fields[part.name], html=html))
        else:
            out.append(part)
    return "".join(out)
