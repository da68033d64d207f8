"""The one settings object, read once from the environment at process start (contract §2).

Entry points call :func:`load_settings` and pass the frozen :class:`Settings` down; nothing
else in the code base reads ``os.environ``. A missing or malformed value raises
:class:`~messaging.errors.ConfigError` whose message names the variable, so the process dies
at start with one readable line instead of failing mid-blast.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from email.utils import parseaddr
from typing import Any, TypeVar
from urllib.parse import urlsplit

from config.caps import FrequencyCap, parse_frequency_cap
from config.errors import ConfigError

T = TypeVar("T")

_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_SID_RE = re.compile(r"^(AC|MG)[0-9a-fA-F]{32}$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily local-time window in which no SMS is sent; it may wrap midnight."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, as read from the environment (contract §2 and extensions)."""

    prefix: str = "rapid"
    database_url: str = "sqlite:///rapid.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_messaging_service_sid: str | None = None
    twilio_from_numbers: tuple[str, ...] = ()
    twilio_api_base_url: str = "https://api.twilio.com"
    sendgrid_api_key: str | None = field(default=None, repr=False)
    sendgrid_api_base_url: str = "https://api.sendgrid.com"
    sendgrid_webhook_public_key: str | None = None
    email_from: str | None = None
    org_name: str | None = None
    org_postal_address: str | None = None
    #: How a HELP reply and the STOP confirmation say to reach the org (URL, email, phone).
    org_help_contact: str | None = None
    #: At most N blasts per supporter per window on each channel (``N/24h``); None: off.
    sms_frequency_cap: FrequencyCap | None = None
    email_frequency_cap: FrequencyCap | None = None
    public_base_url: str = "http://127.0.0.1:8000"
    #: Where tracked short links point, ``{base}/l/{code}`` (a short domain routed to
    #: ``rapid web``); None: ``public_base_url``.
    short_link_base_url: str | None = None
    #: The query parameter a short link's redirect adds with the blast id (ActBlue's).
    link_refcode_param: str = "refcode"
    #: Messages per second per From number (1 long code, 3 toll-free, 100 short code).
    sms_rate_per_sender: float = 1.0
    #: Messages per second across the fleet and the whole sender pool.
    sms_rate_account: float = 100.0
    #: Email recipients per second across the fleet.
    email_rate: float = 1000.0
    quiet_hours: QuietHours = QuietHours(time(21, 0), time(8, 0))
    api_token: str | None = field(default=None, repr=False)
    #: The operator a CLI command acts as (audit log, approvals). ``load_settings`` defaults
    #: it to the OS user name.
    operator: str = "unknown"
    #: A blast messaging more recipients than this waits for a second operator's approval;
    #: None: never (``off``), 0: every blast.
    approval_threshold: int | None = 10_000
    #: HMAC key of unsubscribe and short-link tokens (>= 32 bytes); never derived from another
    #: secret. Required outside demo/test by ``rapid web`` and email senders.
    secret_key: str | None = field(default=None, repr=False)
    #: The key before the last rotation: tokens made with it still verify (links in sent mail).
    secret_key_previous: str | None = field(default=None, repr=False)
    #: ``production`` (the default: every secret required, https links), ``demo`` (set by
    #: ``rapid demo``) or ``test``; the last two may run without RAPID_SECRET_KEY.
    environment: str = "production"
    #: A second port serving only ``/metrics`` without a token (keep it off the load
    #: balancer); unset: ``/metrics`` is on ``PORT`` behind an operator token.
    metrics_port: int | None = None
    #: Contract §13, ``RAPID_BREAKERS``: the fleet's circuit-breaker thresholds that replace
    #: the defaults (``window=500,carrier_filtering=0.02,failure_rate=0.10,optout_rate=0.03``,
    #: any subset); an alert's ``"breakers"`` override these in turn.
    breakers: tuple[tuple[str, float], ...] = ()
    #: TCP port of ``rapid web`` (Procfile platforms set ``PORT``).
    port: int = 8000
    #: Dry-run estimates: price of one SMS segment and of one email, in USD.
    sms_segment_price: float = 0.0079
    email_price: float = 0.0006
    #: Dry-run estimates: price of one MMS (``sms.media_url``), in USD: billed per message,
    #: whatever its length (Twilio US list price).
    mms_price: float = 0.02
    #: ``json`` (production), ``console`` (a person at a terminal) or ``auto``.
    log_format: str = "auto"
    log_level: str = "INFO"

    def unsubscribe_key(self) -> bytes:
        """The HMAC key that makes unsubscribe tokens; :class:`ConfigError` if there is none.

        Demo and test runs without ``RAPID_SECRET_KEY`` get a throwaway key derived from the
        prefix (not from any secret: it protects nothing and every process agrees on it).
        """
        import hashlib

        if self.secret_key:
            return self.secret_key.encode()
        if self.environment in ("demo", "test"):
            return hashlib.sha256(f"rapid-{self.environment}-only:{self.prefix}".encode()).digest()
        raise ConfigError(
            "RAPID_SECRET_KEY: required (at least 32 bytes) to make and check unsubscribe "
            "links; generate one with `openssl rand -hex 32`"
        )

    def unsubscribe_keys(self) -> tuple[bytes, ...]:
        """Every key a token may verify with: the current one, then the previous one."""
        previous = (self.secret_key_previous.encode(),) if self.secret_key_previous else ()
        return (self.unsubscribe_key(), *previous)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and ``rapid demo`` use it)."""
        return replace(self, **changes)


# --- parsers: each takes the raw string and returns the value or raises ValueError -----------


def _prefix(raw: str) -> str:
    if not _PREFIX_RE.match(raw):
        raise ValueError(
            "must be 1-40 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    return raw


def _database_url(raw: str) -> str:
    from sqlalchemy.engine import make_url  # local: keep settings import light
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ValueError(f"not a SQLAlchemy URL ({exc})") from None
    if url.get_backend_name() not in ("postgresql", "sqlite"):
        raise ValueError("must be a postgresql+psycopg:// or sqlite:/// URL")
    return raw


def _redis_url(raw: str) -> str:
    if urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss:// or unix://")
    return raw


def _region(raw: str) -> str:
    if not _REGION_RE.match(raw):
        raise ValueError("not an AWS region name such as us-east-1")
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return raw.rstrip("/")


def _query_param(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", raw):
        raise ValueError("must be a URL query parameter name (letters, digits, _ . -)")
    return raw


def _sid(raw: str) -> str:
    if not _SID_RE.match(raw):
        raise ValueError("not a Twilio SID (AC… or MG… followed by 32 hex digits)")
    return raw


def _from_numbers(raw: str) -> tuple[str, ...]:
    numbers = tuple(n.strip() for n in raw.split(",") if n.strip())
    bad = [n for n in numbers if not _E164_RE.match(n)]
    if bad:
        raise ValueError(f"not E.164: {', '.join(bad)}")
    if len(set(numbers)) != len(numbers):
        raise ValueError("lists a number twice")
    return numbers


def _public_key(raw: str) -> str:
    try:
        base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    return raw


def _email_from(raw: str) -> str:
    _name, address = parseaddr(raw)
    if "@" not in address:
        raise ValueError("must look like 'Name <address@example.org>'")
    return raw


def _rate(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a positive number") from None
    if not 0 < value < float("inf"):
        raise ValueError("must be a positive number")
    return value


def _price(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("must be a price in USD, e.g. 0.0079") from None
    if not 0 <= value < 100:
        raise ValueError("must be a price in USD, e.g. 0.0079")
    return value


def parse_quiet_hours(raw: str) -> QuietHours:
    """``"21:00-08:00"`` → :class:`QuietHours`; ValueError with the rule otherwise (also
    read by ``rapid topics create --quiet-hours``)."""
    start, sep, end = raw.partition("-")
    m1, m2 = _HHMM_RE.match(start.strip()), _HHMM_RE.match(end.strip())
    if not sep or not m1 or not m2:
        raise ValueError("must be HH:MM-HH:MM, e.g. 21:00-08:00")
    window = QuietHours(time(int(m1[1]), int(m1[2])), time(int(m2[1]), int(m2[2])))
    if window.start == window.end:
        raise ValueError("start and end are equal")
    return window


#: Breaker names the variable takes.
_BREAKERS = ("window", "carrier_filtering", "failure_rate", "optout_rate")


def _breakers(raw: str) -> tuple[tuple[str, float], ...]:
    out = []
    for part in filter(None, (p.strip() for p in raw.split(","))):
        name, _, value = (x.strip() for x in part.partition("="))
        if name not in _BREAKERS:
            raise ValueError(f"unknown breaker {name!r}; known: {', '.join(_BREAKERS)}")
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if name == "window" and not (number == int(number) and 50 <= number <= 100_000):
            raise ValueError("window must be a whole number of sends, 50-100000")
        if name != "window" and not 0 < number <= 1:
            raise ValueError(f"{name} must be a share in (0, 1]")
        out.append((name, number))
    return tuple(out)


def _port(raw: str) -> int:
    value = int(raw) if raw.isdigit() else 0
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port, 1-65535")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    by_folded = {c.casefold(): c for c in choices}

    def parse(raw: str) -> str:
        try:
            return by_folded[raw.casefold()]
        except KeyError:
            raise ValueError(f"must be one of {', '.join(choices)}") from None

    return parse


def _text(raw: str) -> str:
    return raw


#: Shortest bootstrap API token accepted, in characters (``openssl rand -hex 16`` is 32).
API_TOKEN_MIN_CHARS = 32


def _api_token(raw: str) -> str:
    if len(raw) < API_TOKEN_MIN_CHARS:
        raise ValueError(
            f"must be at least {API_TOKEN_MIN_CHARS} characters (e.g. `openssl rand -hex 32`)"
        )
    return raw


def _operator(raw: str) -> str:
    name = raw.lower()
    if not re.match(r"^[a-z0-9][a-z0-9._-]{0,63}$", name):
        raise ValueError("1-64 characters of a-z, 0-9, '.', '_' and '-'")
    return name


def _threshold(raw: str) -> int | None:
    if raw.lower() == "off":
        return None
    if not raw.isdigit():
        raise ValueError("must be a whole number of recipients (0: every blast) or 'off'")
    return int(raw)


def _secret_key(raw: str) -> str:
    if len(raw.encode()) < 32:
        raise ValueError("must be at least 32 bytes (e.g. `openssl rand -hex 32`)")
    return raw


#: variable name → (settings field, parser). The order is the contract's table.
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "RAPID_PREFIX": ("prefix", _prefix),
    "DATABASE_URL": ("database_url", _database_url),
    "REDIS_URL": ("redis_url", _redis_url),
    "AWS_REGION": ("aws_region", _region),
    "AWS_ENDPOINT_URL": ("aws_endpoint_url", _http_url),
    "TWILIO_ACCOUNT_SID": ("twilio_account_sid", _sid),
    "TWILIO_AUTH_TOKEN": ("twilio_auth_token", _text),
    "TWILIO_MESSAGING_SERVICE_SID": ("twilio_messaging_service_sid", _sid),
    "TWILIO_FROM_NUMBERS": ("twilio_from_numbers", _from_numbers),
    "TWILIO_API_BASE_URL": ("twilio_api_base_url", _http_url),
    "SENDGRID_API_KEY": ("sendgrid_api_key", _text),
    "SENDGRID_API_BASE_URL": ("sendgrid_api_base_url", _http_url),
    "SENDGRID_WEBHOOK_PUBLIC_KEY": ("sendgrid_webhook_public_key", _public_key),
    "EMAIL_FROM": ("email_from", _email_from),
    "ORG_NAME": ("org_name", _text),
    "ORG_POSTAL_ADDRESS": ("org_postal_address", _text),
    "ORG_HELP_CONTACT": ("org_help_contact", _text),
    "SMS_FREQUENCY_CAP": ("sms_frequency_cap", parse_frequency_cap),
    "EMAIL_FREQUENCY_CAP": ("email_frequency_cap", parse_frequency_cap),
    "PUBLIC_BASE_URL": ("public_base_url", _http_url),
    "SHORT_LINK_BASE_URL": ("short_link_base_url", _http_url),
    "LINK_REFCODE_PARAM": ("link_refcode_param", _query_param),
    "SMS_RATE_PER_SENDER": ("sms_rate_per_sender", _rate),
    "SMS_RATE_ACCOUNT": ("sms_rate_account", _rate),
    "EMAIL_RATE": ("email_rate", _rate),
    "QUIET_HOURS": ("quiet_hours", parse_quiet_hours),
    "RAPID_API_TOKEN": ("api_token", _api_token),
    "RAPID_SECRET_KEY": ("secret_key", _secret_key),
    "RAPID_SECRET_KEY_PREVIOUS": ("secret_key_previous", _secret_key),
    "RAPID_ENV": ("environment", _one_of("production", "demo", "test")),
    "RAPID_BREAKERS": ("breakers", _breakers),
    "METRICS_PORT": ("metrics_port", _port),
    "RAPID_OPERATOR": ("operator", _operator),
    "RAPID_APPROVAL_THRESHOLD": ("approval_threshold", _threshold),
    "PORT": ("port", _port),
    "RAPID_SMS_SEGMENT_PRICE": ("sms_segment_price", _price),
    "RAPID_EMAIL_PRICE": ("email_price", _price),
    "RAPID_MMS_PRICE": ("mms_price", _price),
    "RAPID_LOG_FORMAT": ("log_format", _one_of("auto", "json", "console")),
    "RAPID_LOG_LEVEL": ("log_level", _one_of("DEBUG", "INFO", "WARNING", "ERROR")),
}


def _os_user() -> str:
    """The OS user name as an operator name (``RAPID_OPERATOR``'s default)."""
    import getpass

    try:
        return _operator(getpass.getuser())
    except (OSError, KeyError, ValueError):  # no passwd entry (containers), odd characters
        return "unknown"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from an environment mapping (the process environment by default).

    Empty values count as unset. Any ``RAPID_*`` variable we do not know is an error too: a
    typo such as ``RAPID_PREFX`` would otherwise silently put a run into the wrong namespace.
    """
    if environ is None:
        import os

        environ = os.environ
    unknown = sorted(k for k in environ if k.startswith("RAPID_") and k not in _VARIABLES)
    if unknown:
        name = unknown[0]
        hint = difflib.get_close_matches(name, list(_VARIABLES), n=1)
        suggestion = f" (did you mean {hint[0]}?)" if hint else ""
        raise ConfigError(f"{name}: unknown setting{suggestion}")

    values: dict[str, Any] = {}
    for name, (attr, parse) in _VARIABLES.items():
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        try:
            values[attr] = parse(raw)
        except ValueError as exc:
            # Never echo the raw value: it may be a secret.
            raise ConfigError(f"{name}: {exc}") from None
    if "operator" not in values:
        values["operator"] = _os_user()
    settings = Settings(**values)
    if settings.email_rate < 1:
        raise ConfigError("EMAIL_RATE: must be at least 1 recipient per second")
    if settings.metrics_port is not None and settings.metrics_port == settings.port:
        raise ConfigError("METRICS_PORT: must differ from PORT (the public port)")
    production = settings.environment == "production"
    if production and settings.sendgrid_api_key and not _is_https(settings.public_base_url):
        # Unsubscribe links in email are built on it: an http link leaks the token on the way
        # and one on 127.0.0.1 (the default) reaches nobody.
        raise ConfigError(
            "PUBLIC_BASE_URL: must be an https:// URL reachable from the internet when email "
            "is configured (RAPID_ENV=demo or test allow http)"
        )
    return settings


def _is_https(url: str) -> bool:
    return urlsplit(url).scheme == "https"
