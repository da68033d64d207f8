"""Message templates: sandboxed Jinja2 over a supporter's fields.

The sandbox keeps a template published by a compromised account from reaching into Python;
``StrictUndefined`` makes a misspelt field fail that one message (contract §4) instead of
sending "Hi ," to a million people.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
    try:
        return str(_compile(source, html).render(fields))
    except TemplateError as exc:
        raise RenderError(f"template failed: {exc.message or type(exc).__name__}") from None
    except Exception as exc:  # a sandbox SecurityError or a filter crash: still one message
        raise RenderError(f"template failed: {type(exc).__name__}: {exc}") from None
