"""Who may call ``rapid web``: provider signatures, the API bearer token, body size limits.

Every check fails closed: a secret that is not configured refuses the request (403) rather
than accepting it unsigned.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Final

import structlog
from starlette.datastructures import ImmutableMultiDict
from starlette.exceptions import HTTPException
from starlette.requests import Request

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


class BearerToken:
    """The HTTP API's ``Authorization: Bearer $RAPID_API_TOKEN`` check."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token else None

    def status(self, request: Request) -> int | None:
        """None when authorised; else 403 (API refused: no token configured) or 401."""
        if self._token is None:
            return 403
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return 401
        # Constant time: the comparison must not tell an attacker how much of a guess was right.
        return None if hmac.compare_digest(given.strip().encode(), self._token) else 401
