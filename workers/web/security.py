"""Who may call ``rapid web``: provider signatures, operator tokens, body size limits.

Every check fails closed: a secret that is not configured refuses the request (403) rather
than accepting it unsigned.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog
from starlette.datastructures import ImmutableMultiDict
from starlette.exceptions import HTTPException
from starlette.requests import Request

from messaging.access.operators import Operator, Operators, Permission
from messaging.errors import ConfigError

log = structlog.get_logger(__name__)

KIB: Final = 1024
#: Largest Twilio webhook body we read, in bytes (a 1600-character SMS is ~5 KiB encoded).
TWILIO_MAX_BODY: Final = 64 * KIB
#: Largest SendGrid event batch we read, in bytes (SendGrid posts batches under 1 MiB).
SENDGRID_MAX_BODY: Final = 1024 * KIB
#: Largest API request body, in bytes (an alert with 10 000 postal codes fits).
API_MAX_BODY: Final = 256 * KIB
#: Largest unsubscribe POST body, in bytes (``List-Unsubscribe=One-Click`` is 26).
UNSUBSCRIBE_MAX_BODY: Final = 8 * KIB

TWILIO_SIGNATURE_HEADER: Final = "X-Twilio-Signature"
SENDGRID_SIGNATURE_HEADER: Final = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER: Final = "X-Twilio-Email-Event-Webhook-Timestamp"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, or 413 once it passes ``max_bytes`` (without reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, "request body too large")
    chunks: list[bytes] = []
    size = 0
    # Streamed and counted: Content-Length may be absent (chunked) or wrong.
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, "request body too large")
        chunks.append(chunk)
    return b"".join(chunks)


def form_params(body: bytes) -> ImmutableMultiDict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a multi-dict (what Twilio signs)."""
    from urllib.parse import parse_qsl

    # Undecodable bytes become U+FFFD: such a body was never signed by Twilio, so the
    # signature check (not a 400 before it) is what refuses it.
    text = body.decode("utf-8", errors="replace")
    return ImmutableMultiDict(parse_qsl(text, keep_blank_values=True))


def public_url(request: Request, public_base_url: str) -> str:
    """The URL the provider called, as seen from the internet.

    Behind a load balancer the request reaches us as ``http://10.0.3.7:8000/…``, but Twilio
    signed ``https://rapid.example.org/…``: rebuild it from ``PUBLIC_BASE_URL``, the path
    inside this app and the query string exactly as sent.
    """
    path = request.scope.get("path", "/")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    query = request.scope.get("query_string", b"").decode("latin-1")
    return public_base_url.rstrip("/") + path + (f"?{query}" if query else "")


class TwilioSignature:
    """Checks ``X-Twilio-Signature`` with the official validator and the account auth token."""

    def __init__(self, auth_token: str | None) -> None:
        from twilio.request_validator import RequestValidator

        self._validator = RequestValidator(auth_token) if auth_token else None

    def valid(self, url: str, params: Any, signature: str | None) -> bool:
        """True only for a request Twilio signed for ``url`` with these params."""
        if self._validator is None or not signature:
            return False
        return bool(self._validator.validate(url, params, signature))


class SendGridSignature:
    """Checks SendGrid's signed event webhook (ECDSA P-256 over ``timestamp + body``)."""

    def __init__(self, public_key: str | None) -> None:
        from sendgrid.helpers.eventwebhook import EventWebhook

        self._helper = EventWebhook()
        self._key: Any = None
        if public_key:
            try:
                self._key = self._helper.convert_public_key_to_ecdsa(public_key)
            except (ValueError, TypeError, binascii.Error) as exc:
                # Contract §2: a malformed value fails at start, naming the variable.
                raise ConfigError(
                    "SENDGRID_WEBHOOK_PUBLIC_KEY: not a base64 DER elliptic-curve public key "
                    f"({type(exc).__name__})"
                ) from None

    @property
    def configured(self) -> bool:
        """False when no public key is set: every event batch is refused."""
        return self._key is not None

    def valid(self, payload: bytes, signature: str | None, timestamp: str | None) -> bool:
        """True only for a body SendGrid signed with this timestamp."""
        if self._key is None or not signature or not timestamp:
            return False
        try:
            base64.b64decode(signature, validate=True)
            text = payload.decode("utf-8")
            return bool(self._helper.verify_signature(text, signature, timestamp, self._key))
        except (ValueError, TypeError, UnicodeDecodeError):
            return False


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a request was refused: its HTTP status, a message and response headers."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


class FailureLimiter(Protocol):
    """Counts failed bearer attempts per client address (Redis: fleet-wide)."""

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        ...

    def failed(self, address: str) -> float:
        """Count one failure; returns the wait it now faces (0: none yet)."""
        ...


#: Failed bearer attempts one client address may make per window before it waits (429).
AUTH_FAILURE_LIMIT: Final = 20
#: The window of :data:`AUTH_FAILURE_LIMIT`, in seconds.
AUTH_FAILURE_WINDOW_S: Final = 300.0


class InMemoryFailureLimiter:
    """The one-process twin of :class:`queues.flow.auth_failures.RedisFailureLimiter`."""

    def __init__(
        self,
        *,
        limit: int = AUTH_FAILURE_LIMIT,
        window_s: float = AUTH_FAILURE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (ends at, failures)
        self._lock = threading.Lock()

    def _wait(self, address: str, add: bool) -> float:
        now = self._clock()
        with self._lock:
            ends, failures = self._windows.get(address, (0.0, 0))
            if now >= ends:
                ends, failures = now + self._window_s, 0
            if add:
                failures += 1
                self._windows[address] = (ends, failures)
        return ends - now if failures >= self._limit else 0.0

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        return self._wait(address, add=False)

    def failed(self, address: str) -> float:
        """Count one failure; returns the wait it now faces."""
        return self._wait(address, add=True)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return None
    return given.strip()


def client_address(request: Request) -> str:
    """Who is calling, as far as we can tell (the proxy's view when uvicorn trusts it)."""
    return request.client.host if request.client else "unknown"


class OperatorAuth:
    """The HTTP API's (and the dashboard's) check: a bearer operator token with the role.

    Answers 401 for a missing or unknown token, 403 for a role that may not do this, and
    429 once an address has failed :data:`AUTH_FAILURE_LIMIT` times in a window, so
    tokens cannot be guessed at the speed of the fleet. Blocking calls (the database, Redis):
    run it off the event loop.
    """

    def __init__(self, operators: Operators, failures: FailureLimiter) -> None:
        self._operators = operators
        self._failures = failures

    def authenticate(self, token: str | None, address: str) -> Operator | Denied:
        """The operator a token belongs to, or why not (401 or 429)."""
        wait_s = self._failures.retry_after(address)
        if wait_s > 0:
            return _too_many(wait_s)
        operator = self._operators.authenticate(token) if token else None
        if operator is None:
            wait_s = self._failures.failed(address)
            log.warning("auth.failed", address=address, token_given=bool(token))
            if wait_s > 0:
                return _too_many(wait_s)
            return Denied(
                401, "a valid bearer operator token is required", {"WWW-Authenticate": "Bearer"}
            )
        return operator

    def authorize(self, request: Request, permission: Permission) -> Operator | Denied:
        """The calling operator if their role allows ``permission``; else why not."""
        found = self.authenticate(bearer_token(request), client_address(request))
        if isinstance(found, Denied):
            return found
        if not found.may(permission):
            log.warning("auth.forbidden", operator=found.name, permission=permission.value)
            return Denied(403, f"operator {found.name} ({found.role}) may not {permission.value}")
        return found


def _too_many(wait_s: float) -> Denied:
    return Denied(
        429,
        "too many failed bearer attempts from this address; try again later",
        {"Retry-After": str(max(1, math.ceil(wait_s)))},
    )
