"""Message templates: sandboxed Jinja2 over a supporter's fields.

The sandbox keeps a template published by a compromised account from reaching into Python;
``StrictUndefined`` makes a misspelt field fail that one message (contract §4) instead of
sending "Hi ," to a million people.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape

from messaging.errors import InputError


class RenderError(InputError):
    """A template failed for one supporter; that one message fails, the blast goes on."""


@lru_cache(maxsize=2)
def _environment(html: bool) -> ImmutableSandboxedEnvironment:
    # Built on first use, not at import. HTML parts autoescape supporter fields (a name like
    # "<b>" must not become markup); SMS and text parts must not, or "&" turns into "&amp;".
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=html)


@lru_cache(maxsize=256)
def _compile(source: str, html: bool = False) -> Any:
    return _environment(html).from_string(source)


def check_template(source: str, where: str) -> str:
    """Compile ``source`` now, so a syntax error rejects the alert, not a million messages."""
    try:
        _compile(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{where}: template error on line {exc.lineno}: {exc.message}") from None
    return source


def render(source: str, fields: Mapping[str, Any], *, html: bool = False) -> str:
    """Render ``source`` for one supporter; :class:`RenderError` if it cannot be."""
    parts = plain_parts(source)
    if parts is not None:  # the same text, without Jinja's per-render context (~10 µs)
        return assemble(parts, fields, html=html)
    try:
        return str(_compile(source, html).render(fields))
    except TemplateError as exc:
        raise RenderError(f"template failed: {exc.message or type(exc).__name__}") from None
    except Exception as exc:  # a sandbox SecurityError or a filter crash: still one message
        raise RenderError(f"template failed: {type(exc).__name__}: {exc}") from None


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
    try:
        tree = _environment(False).parse(source)
    except TemplateSyntaxError:
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
