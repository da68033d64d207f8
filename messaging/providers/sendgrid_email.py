"""Email through the official ``sendgrid`` client: one v3 mail/send call per ≤1000 recipients.

Each recipient is a personalization with its own subject, headers (``List-Unsubscribe``) and
``custom_args`` (blast and supporter ids, which come back in event webhooks). The
personalised bodies travel as substitutions into one shared content: a batch of 1000 is
one HTTP request, not 1000. SendGrid caps substitutions at 10,000 bytes per
personalization, so a recipient whose rendered body is larger goes in a call of its own.
When the sender could keep the template's shape (plain ``{{ field }}`` templates), the
bodies travel as they are, once, and each personalization carries only its fields.

The request is the official client's (its URL, headers and error types), but the body is
encoded here, once, with orjson: the client's own path encodes it with ``json`` and then
formats the whole payload for a debug log line even when nothing logs it, which together
cost more than building the request (~650 bytes a recipient).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from python_http_client.client import Response
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from messaging.errors import PermanentSendError, ProviderAuthError, SendError, TransientSendError
from messaging.providers.base import EmailBatch, EmailCall, EmailRecipient
from messaging.providers.retry import call_with_retries

SENDGRID_DEFAULT_BASE_URL = "https://api.sendgrid.com"
#: SendGrid's limit on personalizations in one request.
MAX_RECIPIENTS_PER_CALL = 1000
#: SendGrid's limit on the substitutions of one personalization, in bytes; we keep a margin.
SUBSTITUTIONS_MAX_BYTES = 9_500
#: A mail/send with 1000 personalizations can take a while to be accepted.
REQUEST_TIMEOUT_S = 30
_TEXT_TAG, _HTML_TAG = "-rr_text-", "-rr_html-"
#: The official HTTP client's logger: we log the request where it would have.
client_logger = logging.getLogger("python_http_client.client")


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        value = dict(headers).get(name)
    return str(value) if value is not None else None


def _first_error(body: str) -> str:
    """SendGrid's first error message from an error body, else the body's start."""
    try:
        return str(json.loads(body)["errors"][0]["message"])[:200]
    except (ValueError, KeyError, IndexError, TypeError):
        return body[:200]


def map_sendgrid_error(exc: HTTPError) -> SendError:
    """A SendGrid HTTP error as our error tree."""
    status = int(exc.status_code)
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
    message = f"sendgrid HTTP {status}: {body[:300]}"
    if status in (401, 403):
        # A wrong, revoked or under-scoped key: the fleet's problem, never the recipient's.
        return ProviderAuthError(
            f"sendgrid refused the API key (HTTP {status}): {_first_error(body)}", code=str(status)
        )
    if status == 429 or status >= 500:
        retry_after = _header(exc.headers, "Retry-After")
        reset = _header(exc.headers, "X-RateLimit-Reset")
        wait_s = float(retry_after) if retry_after else None
        if wait_s is None and reset:
            wait_s = max(0.0, float(reset) - time.time())
        return TransientSendError(message, code=str(status), retry_after_s=wait_s)
    return PermanentSendError(message, code=str(status))


class SendGridEmail:
    """An :class:`~messaging.providers.base.EmailTransport` on the official client."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = SENDGRID_DEFAULT_BASE_URL,
        on_throttle: Callable[[float], object] | None = None,
    ) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError(f"sendgrid base URL must be http(s): {base_url!r}")
        self._client = SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/"))
        self._client.client.timeout = REQUEST_TIMEOUT_S
        #: The official client's v3 mail/send endpoint: its URL, its headers (the key), and
        #: its ``_make_request`` (the seam it keeps for tests), which maps HTTP errors.
        self._mail_send = self._client.client.mail.send
        self._mail_send_url: str = self._mail_send._build_url(None)
        #: Told how long SendGrid asked us to back off after a 429 (slows the fleet's limiter).
        self._on_throttle = on_throttle or (lambda _s: None)
        #: One opener for every call, as ``urlopen`` keeps one for the process: building it
        #: per call (ten handler objects) was ~2 % of an email sender's CPU. Its handlers
        #: keep no per-request state.
        self._opener = urllib.request.build_opener()

    def send_batch(self, batch: EmailBatch) -> list[EmailCall]:
        """Send ``batch`` in as few calls as SendGrid allows; one outcome per call.

        Each call stands alone: when a later call fails, the recipients of an earlier one
        were still delivered, and say so. After SendGrid refuses the key, the calls left are
        not made (they would be refused too) and carry the same error.
        """
        if len(batch.recipients) > MAX_RECIPIENTS_PER_CALL:
            raise ValueError(f"at most {MAX_RECIPIENTS_PER_CALL} recipients per batch")
        delay = batch.send_at_s - time.time()
        if delay > 0:
            time.sleep(delay)
        # Together in one call: recipients of the shared bodies, or (without them) those
        # whose bodies fit SendGrid's substitution limit. The rest go one call each.
        together: Callable[[EmailRecipient], bool] = (
            batch.uses_shared
            if batch.shared is not None
            else lambda r: _substitution_bytes(r) <= SUBSTITUTIONS_MAX_BYTES
        )
        shared: list[int] = []
        alone: list[int] = []
        for i, r in enumerate(batch.recipients):
            (shared if together(r) else alone).append(i)
        plan = [(tuple(shared), False)] if shared else []
        plan += [((i,), True) for i in alone]
        calls: list[EmailCall] = []
        refused: ProviderAuthError | None = None
        for indices, inline in plan:
            if refused is not None:
                calls.append(EmailCall(indices, error=refused))
                continue
            recipients = (
                batch.recipients
                if len(indices) == len(batch.recipients)
                else [batch.recipients[i] for i in indices]
            )
            try:
                message_id = self._post(
                    encode_request(build_request(batch, recipients, inline=inline))
                )
            except SendError as exc:
                if isinstance(exc, ProviderAuthError):
                    refused = exc
                calls.append(EmailCall(indices, error=exc))
                continue
            calls.append(EmailCall(indices, message_id=message_id or None))
        return calls

    def check_credentials(self) -> list[str]:
        """A cheap authenticated read (the key's scopes); returns them.

        Raises :class:`ProviderAuthError` when SendGrid refuses the key, and
        :class:`PermanentSendError` when the key may not send mail.
        """
        try:
            response = self._client.client.scopes.get()
        except HTTPError as exc:
            raise map_sendgrid_error(exc) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise TransientSendError(f"sendgrid unreachable: {exc}") from None
        scopes = [str(s) for s in json.loads(response.body or b"{}").get("scopes", [])]
        if "mail.send" not in scopes:
            raise PermanentSendError("sendgrid: the API key lacks the mail.send scope", code="403")
        return scopes

    def _post(self, body: bytes) -> str:
        """POST an encoded mail/send body as the official client would; the message id."""
        endpoint = self._mail_send

        def call() -> str:
            headers = {**endpoint.request_headers, "Content-Type": "application/json"}
            request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
                self._mail_send_url, data=body, headers=headers, method="POST"
            )
            if client_logger.isEnabledFor(logging.DEBUG):
                client_logger.debug("POST Request: %s (%d bytes)", self._mail_send_url, len(body))
            try:
                response = Response(
                    endpoint._make_request(self._opener, request, REQUEST_TIMEOUT_S)
                )
            except HTTPError as exc:
                error = map_sendgrid_error(exc)
                if isinstance(error, TransientSendError) and error.code == "429":
                    self._on_throttle(error.retry_after_s or 1.0)
                raise error from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                raise TransientSendError(f"sendgrid unreachable: {exc}") from None
            return _header(response.headers, "X-Message-Id") or ""

        return call_with_retries(call)


def _substitution_bytes(r: EmailRecipient) -> int:
    return len((r.text or "").encode()) + len((r.html or "").encode()) + 32


def encode_request(body: dict[str, Any]) -> bytes:
    """The request body as JSON bytes (UTF-8)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # A lone surrogate from an alert's JSON escapes (orjson refuses them): encoded as
        # ``json`` always did.
        return json.dumps(body).encode()


def build_request(
    batch: EmailBatch, recipients: Sequence[EmailRecipient], *, inline: bool
) -> dict[str, Any]:
    """The v3 mail/send JSON for ``recipients`` (one recipient when ``inline``).

    It shares the recipients' ``headers``, ``custom_args`` and ``substitutions`` dicts
    rather than copying them (a thousand of each per call): encode it before they change.
    """
    shared = batch.shared if not inline else None
    if shared is not None:
        has_text, has_html = shared.text is not None, shared.html is not None
    else:
        has_text = any(r.text for r in recipients)
        has_html = any(r.html for r in recipients)
    personalizations = []
    for r in recipients:
        p: dict[str, Any] = {"to": [{"email": r.to}], "subject": r.subject}
        if r.headers:
            p["headers"] = r.headers
        if r.custom_args:
            p["custom_args"] = r.custom_args
        if shared is not None:
            p["substitutions"] = r.substitutions
        elif not inline:
            subs = {}
            if has_text:
                subs[_TEXT_TAG] = r.text or ""
            if has_html:
                subs[_HTML_TAG] = r.html or ""
            p["substitutions"] = subs
        personalizations.append(p)
    content = []
    # SendGrid requires text/plain before text/html.
    if shared is not None:
        text_value, html_value = shared.text, shared.html
    elif inline:
        text_value, html_value = recipients[0].text, recipients[0].html
    else:
        text_value, html_value = _TEXT_TAG, _HTML_TAG
    if has_text:
        content.append({"type": "text/plain", "value": text_value})
    if has_html:
        content.append({"type": "text/html", "value": html_value})
    sender: dict[str, str] = {"email": batch.from_email}
    if batch.from_name:
        sender["name"] = batch.from_name
    body: dict[str, Any] = {
        "personalizations": personalizations,
        "from": sender,
        "content": content,
        # We put our own one-click unsubscribe in every message; SendGrid's would be a second.
        "tracking_settings": {"subscription_tracking": {"enable": False}},
    }
    if batch.categories:
        body["categories"] = list(batch.categories)
    return body
