"""structlog, configured once per entry point, with personal data and secrets masked.

Contract §9.8: phone numbers, emails and secrets never appear unmasked in logs. Masking is a
processor that walks every event dict, so a careless ``log.info("x", to=phone)`` anywhere in
the code base is still safe.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from config.outages import OutageLines
from config.settings import Settings

#: Keys whose values are secrets wherever they appear: masked whole.
_SECRET_KEY_RE = re.compile(
    r"(token|secret|password|passwd|api[_-]?key|authorization|auth|signature|credential)",
    re.IGNORECASE,
)
# The lookbehind makes a match start only where a run of local-part characters starts: without
# it, a long run with no "@" was rescanned from each of its characters (quadratic: 64 KB of
# attacker text took 2.9 s).
_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})"
)
# E.164 and the usual national spellings: +14155550100, (415) 555-0100, 415.555.0101.
_PHONE_RE = re.compile(r"(?<![\w])(\+?\d[\d ().-]{6,}\d)(?![\w])")
# SendGrid keys (SG.xxx.yyy) and Bearer tokens inside free text.
_SENDGRID_KEY_RE = re.compile(r"SG\.[\w-]{10,}\.[\w-]{10,}")
_BEARER_RE = re.compile(r"(Bearer|Basic)\s+[\w.~+/=-]+", re.IGNORECASE)
_MASK = "***"


def _mask_phone(match: re.Match[str]) -> str:
    raw = match.group(1)
    digits = re.sub(r"\D", "", raw)
    if len(digits) < 7:  # a date, a count, not a phone number
        return raw
    # Keep the last two digits: enough to tell two numbers apart in an incident, not enough
    # to identify anyone.
    return ("+" if raw.startswith("+") else "") + _MASK + digits[-2:]


_DIGIT_RE = re.compile(r"\d")

#: Longest string value a log line carries, in characters; the rest is cut before masking.
#: A megabyte of attacker text (an SMS reply, a webhook body) is no use in a log line, and
#: masking it would cost ~0.1 s of regex time on every path that logs it.
MAX_LOGGED_CHARS = 16 * 1024
#: Characters that can be part of a phone number, email or token: a value cut inside one is cut
#: back to before it, so no unmasked fragment of it survives the cut.
_WORDISH = "".join(map(chr, range(ord("0"), ord("9") + 1))) + (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._%+-@/=~"
)


def mask_text(text: str) -> str:
    """Mask emails, phone numbers and inline credentials in a free-text string.

    Linear in the length of ``text`` (every pattern starts a match only where its run of
    characters starts), and each pattern runs only when its marker character is present.
    """
    if "SG." in text:
        text = _SENDGRID_KEY_RE.sub("SG." + _MASK, text)
    lowered = text.lower()
    if "bearer" in lowered or "basic" in lowered:
        text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {_MASK}", text)
    if "@" in text:
        text = _EMAIL_RE.sub(lambda m: f"{m.group(1)}{_MASK}@{m.group(2)}", text)
    if _DIGIT_RE.search(text):
        text = _PHONE_RE.sub(_mask_phone, text)
    return text


def _cut(text: str) -> str:
    if len(text) <= MAX_LOGGED_CHARS:
        return text
    head = text[:MAX_LOGGED_CHARS].rstrip(_WORDISH)
    return f"{head} …[{len(text) - len(head)} characters cut]"


def _mask_value(key: str | None, value: Any, secrets: tuple[str, ...]) -> Any:
    if key is not None and _SECRET_KEY_RE.search(key) and value is not None:
        return _MASK
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, _MASK)
        return mask_text(_cut(value))
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask_value(None, v, secrets) for v in value]
    return value


class MaskPersonalData:
    """structlog processor: masks PII and secrets in every value of the event dict.

    ``secrets`` are literal strings (the configured tokens and keys) that are replaced
    wherever they occur, whatever they look like.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = tuple(sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True))

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            if key in ("timestamp", "level", "logger"):
                continue
            event_dict[key] = _mask_value(None if key == "event" else key, value, self._secrets)
        return event_dict


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure structlog (and stdlib logging) for this process. Call once, from an entry point."""
    stream = stream or sys.stderr
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    secrets = tuple(
        s for s in (settings.twilio_auth_token, settings.sendgrid_api_key, settings.api_token) if s
    )
    level = logging.getLevelName(settings.log_level)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    # A dependency's outage is one line (which service, the error), not a traceback per
    # failed call; its repeats are dropped until it has been quiet a while (config/outages).
    outages = OutageLines()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        outages,
        structlog.processors.format_exc_info,
        MaskPersonalData(secrets),
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries (botocore, dramatiq, uvicorn) log through stdlib: route them through the same
    # processors so their lines are JSON and masked too.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(outages)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    for noisy in (
        "alembic",
        "botocore",
        "boto3",
        "urllib3",
        "twilio",
        "python_http_client",
        "werkzeug",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
