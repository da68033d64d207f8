"""A local Twilio Programmable Messaging API (2010-04-01) that speaks the real wire format.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` takes the same form-encoded body and
HTTP Basic credentials as Twilio, validates it the way Twilio does and answers with Twilio's
Message resource or Twilio's error JSON, so the official ``twilio`` client works against it
unchanged. With ``status_callbacks`` on, each accepted message is followed by signed ``sent``
and ``delivered`` (or ``undelivered``) callbacks to its ``StatusCallback``.
``GET …/Messages.json`` lists the account's messages, newest first, filtered by ``To``,
``From`` and ``DateSent`` (``DateSent<``/``DateSent>``) and paged as the API description says;
``GET /2010-04-01/Accounts/{AccountSid}.json`` fetches the account (a cheap authenticated read).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import math
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from emulators.control import Reply, arrived_at, control_routes, json_reply, provider_call
from emulators.faults import Fault, FaultConfig, Faults
from emulators.recorder import Recorder

API_VERSION = "2010-04-01"

#: Twilio's messages for the error codes the emulator can return. Codes not listed here (set
#: through ``number_errors``) get a generic message.
ERROR_MESSAGES: dict[int, str] = {
    20001: "Invalid parameter",
    20003: "Authenticate",
    20004: "Method not allowed",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "Invalid 'To' Phone Number: {to}",
    21212: "Invalid From Number (caller ID): {from_}",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
    "'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable Twilio phone "
    "number for this destination.",
    21609: "Invalid StatusCallback url",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number: {to}, is not currently reachable using the 'From' phone "
    "number: {from_} via SMS.",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21620: "Invalid media URL(s)",
    21623: "Number of media files exceeds allowed limit",
    21624: "Invalid validity period value",
    21705: "The Messaging Service is invalid",
}

#: Longest body Twilio accepts, in characters.
MAX_BODY_CHARS = 1600
#: Most ``MediaUrl`` parameters one message may carry (the API description: "up to ten").
MAX_MEDIA = 10
#: ``ValidityPeriod`` bounds, in seconds.
VALIDITY_PERIOD_RANGE = (1, 36_000)
#: Twilio gives a webhook 15 s to answer before it gives up on it.
CALLBACK_TIMEOUT_S = 15.0
#: Message resources kept for ``GET .../Messages/{Sid}.json``; oldest dropped first.
MAX_RESOURCES = 100_000
#: Sender Twilio picks from a Messaging Service's pool in the emulator's callbacks.
SERVICE_POOL_NUMBER = "+15005550006"

_E164 = re.compile(r"^(?:[a-z]+:)?\+[1-9]\d{1,14}$")
_SHORT_CODE = re.compile(r"^\d{3,8}$")
_ALPHANUMERIC_ID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")

# GSM 03.38: a body using only these characters goes as 7-bit text (160 per segment); the
# extension characters take two septets each. Anything else forces UCS-2 (70 per segment).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")
_GSM_CHARS = _GSM_BASIC | _GSM_EXTENSION

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def count_segments(body: str) -> int:
    """How many SMS segments Twilio bills for ``body`` (GSM-7 or UCS-2, concatenated)."""
    if not body:
        return 1
    chars = set(body)  # a set test per distinct character, not a lookup per character
    if chars <= _GSM_CHARS:
        septets = len(body) + sum(body.count(ch) for ch in chars & _GSM_EXTENSION)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2  # an emoji is two UTF-16 code units
    return 1 if units <= 70 else math.ceil(units / 67)


def _valid_media_url(url: str) -> bool:
    """A ``MediaUrl`` Twilio can fetch: an absolute http(s) URL with a host (the API
    description types it ``format: uri``; Twilio fetches it from the public internet)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url


def rfc2822(ts: float) -> str:
    """Twilio's date format, ``Thu, 24 Aug 2023 05:01:45 +0000`` (locale-independent)."""
    return _rfc2822_second(int(ts))


@functools.lru_cache(maxsize=4)
def _rfc2822_second(second: int) -> str:
    # Thousands of messages a second share their second: format it once.
    t = time.gmtime(second)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


class _Fields(dict[str, str]):
    """Message placeholders; one a caller did not supply renders empty instead of failing."""

    def __missing__(self, key: str) -> str:
        return ""


def error_payload(code: int, status: int, **fields: str) -> dict[str, Any]:
    """Twilio's error JSON for ``code``."""
    template = ERROR_MESSAGES.get(code, "Error {code}")
    return {
        "code": code,
        "message": template.format_map(_Fields(fields, code=str(code))).strip(),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def error_reply(
    code: int, status: int = 400, headers: dict[str, str] | None = None, **fields: str
) -> Reply:
    """Twilio's error JSON as a reply."""
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Basic realm="Twilio API"'}
    return json_reply(status, error_payload(code, status, **fields), headers)


def fault_reply(fault: Fault, config: FaultConfig) -> Reply:
    """Twilio's answer to an injected fault."""
    if fault == "429":
        return error_reply(20429, 429, {"Retry-After": str(config.retry_after_s)})
    if fault == "500":
        return error_reply(20500, 500)
    return error_reply(20503, 503)  # sent after the hold, to a client that has left by then


#: The list's date filters: query name and comparison (Twilio matches on the GMT date).
_DATE_FILTERS = (("DateSent", "="), ("DateSent<", "<="), ("DateSent>", ">="))


def _date_filter(op: str, raw: str) -> tuple[str, str]:
    """``(op, YYYY-MM-DD)`` from a DateSent value: a date, a date-time, or either prefixed
    with ``<=``/``>=`` (the forms the API description lists)."""
    for prefix in ("<=", ">="):
        if raw.startswith(prefix):
            op, raw = prefix, raw[2:]
    day = raw[:10]
    time.strptime(day, "%Y-%m-%d")  # ValueError when it is not a date
    return op, day


def _sent_matches(date_sent: str | None, date_filter: tuple[str, str]) -> bool:
    if date_sent is None:  # not sent yet: no sent date to match
        return False
    op, day = date_filter
    sent = time.strftime("%Y-%m-%d", time.strptime(date_sent[5:25], "%d %b %Y %H:%M:%S"))
    return sent == day if op == "=" else sent <= day if op == "<=" else sent >= day


def _valid_sender(value: str) -> bool:
    return bool(_E164.match(value) or _SHORT_CODE.match(value) or _ALPHANUMERIC_ID.match(value))


def _valid_callback_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _default_callback_client() -> httpx.AsyncClient:
    # trust_env=False: callbacks to a local web app must not wander through a proxy set in
    # the environment for the outside world.
    return httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S, trust_env=False)


class TwilioEmulator:
    """State and handlers of one emulated Twilio account (see :func:`create_twilio_app`)."""

    def __init__(
        self,
        recorder: Recorder,
        faults: Faults,
        *,
        auth_token: str | None = None,
        account_sid: str | None = None,
        callback_client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.recorder = recorder
        self.faults = faults
        self.auth_token = auth_token
        self.account_sid = account_sid
        self._client_factory = callback_client_factory or _default_callback_client
        self._client: httpx.AsyncClient | None = None
        self._resources: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._validators: dict[str, RequestValidator] = {}
        self._started = time.time()

    # -- HTTP endpoints ----------------------------------------------------------------
    async def create_endpoint(self, request: Request) -> Response:
        """``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``."""
        return await self._call(request, self.create)

    async def fetch_endpoint(self, request: Request) -> Response:
        """``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``."""
        return await self._call(request, self.fetch)

    async def list_endpoint(self, request: Request) -> Response:
        """``GET /2010-04-01/Accounts/{AccountSid}/Messages.json``."""
        return await self._call(request, self.list_messages)

    async def account_endpoint(self, request: Request) -> Response:
        """``GET /2010-04-01/Accounts/{AccountSid}.json``."""
        return await self._call(request, self.fetch_account)

    async def _call(self, request: Request, handle: Callable[[Request, bytes], Reply]) -> Response:
        return await provider_call(
            request,
            provider="twilio",
            recorder=self.recorder,
            faults=self.faults,
            authenticate=self.authenticate,
            fault_reply=fault_reply,
            handle=handle,
        )

    # -- handlers: synchronous, given the request and its raw body ----------------------
    def authenticate(self, request: Request) -> Reply | None:
        """HTTP Basic with the account SID (matching the path) and the auth token."""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, has_colon, password = decoded.partition(":")
        path_sid = request.path_params.get("AccountSid", "")
        good = (
            scheme.lower() == "basic"
            and has_colon
            and username == path_sid
            and self.account_sid in (None, username)
            and (
                self.auth_token is None
                or hmac.compare_digest(password.encode(), self.auth_token.encode())
            )
        )
        if not good:
            return error_reply(20003, 401)
        config = self.faults.config
        if config.reject_credentials:  # the fault: a rotated token, a suspended account
            return error_reply(20003, config.reject_status)
        # Twilio signs callbacks with the account's auth token: the one used here.
        request.state.auth_token = password
        return None

    def create(self, request: Request, body: bytes) -> Reply:
        """Validate a send like Twilio, record it, answer with the Message resource."""
        params: dict[str, list[str]] = {}
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            params.setdefault(key, []).append(value)

        def first(name: str) -> str:
            return params.get(name, [""])[0]

        to, sender = first("To").strip(), first("From").strip()
        service, text = first("MessagingServiceSid"), first("Body")
        media = [url for url in params.get("MediaUrl", []) if url]
        callback, validity = first("StatusCallback"), first("ValidityPeriod")

        # Twilio reports one problem per request: the first one found here.
        if not to:
            return error_reply(21604)
        if not sender and not service:
            return error_reply(21603)
        if not text and not media and not first("ContentSid"):
            return error_reply(21602)
        if not _E164.match(to):
            return error_reply(21211, to=to)
        if sender and not _valid_sender(sender):
            return error_reply(21212, from_=sender)
        if service and not _MESSAGING_SERVICE_SID.match(service):
            return error_reply(21705)
        if len(text) > MAX_BODY_CHARS:
            return error_reply(21617)
        if len(media) > MAX_MEDIA:
            return error_reply(21623)
        if not all(_valid_media_url(url) for url in media):
            return error_reply(21620)
        low, high = VALIDITY_PERIOD_RANGE
        if validity and not (validity.isdigit() and low <= int(validity) <= high):
            return error_reply(21624)
        if callback and not _valid_callback_url(callback):
            return error_reply(21609)
        code = self.faults.config.number_errors.get(to)
        if code is not None:
            return error_reply(code, to=to, from_=sender or SERVICE_POOL_NUMBER)

        account_sid = request.path_params["AccountSid"]
        sid = "SM" + secrets.token_hex(16)  # uuid4().hex, minus building a UUID
        now = arrived_at(request)
        date, segments = rfc2822(now), count_segments(text)
        uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"
        # With a Messaging Service and no From, Twilio answers "accepted" before it has picked
        # a sender, hence no from and no segment count yet.
        via_service = not sender
        resource: dict[str, Any] = {
            "account_sid": account_sid,
            "api_version": API_VERSION,
            "body": text,
            "date_created": date,
            "date_sent": None,
            "date_updated": date,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "num_media": str(len(media)),
            "num_segments": "0" if via_service else str(segments),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if via_service else "queued",
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": to,
            "uri": uri,
        }
        self._remember(resource)
        callback_error = self.faults.config.delivery_errors.get(to) or self.faults.callback_error()
        self.recorder.add_messages(
            [
                {
                    "provider": "twilio",
                    **resource,
                    "segments": segments,
                    "media_url": media,
                    "status_callback": callback or None,
                    "validity_period": int(validity) if validity else None,
                    "params": {k: v[0] if len(v) == 1 else v for k, v in params.items()},
                    "received_at": now,
                }
            ]
        )
        if callback and self.faults.config.status_callbacks:
            self._spawn(
                self._send_callbacks(
                    dict(resource), callback, request.state.auth_token, callback_error
                )
            )
        overrides = self.faults.config.resource_overrides
        return json_reply(201, {**resource, **overrides} if overrides else resource)

    def fetch(self, request: Request, body: bytes) -> Reply:
        """The Message resource as it is now (its status moves on with the callbacks)."""
        sid = request.path_params["Sid"]
        resource = self._resources.get(sid)
        if resource is None or resource["account_sid"] != request.path_params["AccountSid"]:
            return error_reply(20404, 404, path=request.url.path)
        return json_reply(200, resource)

    def list_messages(self, request: Request, body: bytes) -> Reply:
        """The account's messages, newest first, filtered and paged like Twilio's list."""
        account_sid = request.path_params["AccountSid"]
        q = request.query_params
        try:
            page_size = int(q.get("PageSize", "50"))
            page = int(q.get("Page", "0"))
            offset = int(q.get("PageToken", "PA0").removeprefix("PA"))
            dates = [_date_filter(op, q[name]) for name, op in _DATE_FILTERS if name in q]
        except ValueError:
            return error_reply(20001, 400)
        if not 1 <= page_size <= 1000 or page < 0 or offset < 0:
            return error_reply(20001, 400)
        to, sender = q.get("To"), q.get("From")
        matches = [
            r
            for r in reversed(self._resources.values())
            if r["account_sid"] == account_sid
            and (to is None or r["to"] == to)
            and (sender is None or (r["from"] or SERVICE_POOL_NUMBER) == sender)
            and all(_sent_matches(r["date_sent"], f) for f in dates)
        ]
        if "PageToken" not in q:
            offset = page * page_size
        chunk = matches[offset : offset + page_size]
        base = f"/{API_VERSION}/Accounts/{account_sid}/Messages.json"
        keep = [(k, v) for k, v in q.multi_items() if k not in ("Page", "PageSize", "PageToken")]

        def uri(page_index: int, start: int) -> str:
            query = [*keep, ("PageSize", str(page_size)), ("Page", str(page_index))]
            if start:
                query.append(("PageToken", f"PA{start}"))
            return f"{base}?{urlencode(query)}"

        page_index = offset // page_size
        more = offset + page_size < len(matches)
        return json_reply(
            200,
            {
                "messages": chunk,
                "end": offset + max(len(chunk), 1) - 1,
                "first_page_uri": uri(0, 0),
                "next_page_uri": uri(page_index + 1, offset + page_size) if more else None,
                "page": page_index,
                "page_size": page_size,
                "previous_page_uri": (
                    uri(page_index - 1, max(offset - page_size, 0)) if offset else None
                ),
                "start": offset,
                "uri": uri(page_index, offset),
            },
        )

    def fetch_account(self, request: Request, body: bytes) -> Reply:
        """The Account resource (active, full): what a credentials check reads."""
        sid = request.path_params["AccountSid"]
        date = rfc2822(self._started)
        return json_reply(
            200,
            {
                "auth_token": None,
                "date_created": date,
                "date_updated": date,
                "friendly_name": "Rapid Response emulator",
                "owner_account_sid": sid,
                "sid": sid,
                "status": "active",
                "subresource_uris": {
                    "messages": f"/{API_VERSION}/Accounts/{sid}/Messages.json",
                },
                "type": "Full",
                "uri": f"/{API_VERSION}/Accounts/{sid}.json",
            },
        )

    # -- status callbacks --------------------------------------------------------------
    def clear(self) -> None:
        """Forget every message resource (the message log starts empty again)."""
        self._resources.clear()

    def _remember(self, resource: dict[str, Any]) -> None:
        self._resources[resource["sid"]] = resource
        if len(self._resources) > MAX_RESOURCES:
            self._resources.popitem(last=False)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        # Keep a strong reference: the event loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_callbacks(
        self, message: dict[str, Any], url: str, auth_token: str, error_code: int | None
    ) -> None:
        config = self.faults.config
        final = "undelivered" if error_code is not None else "delivered"
        for status in ("sent", final):
            if config.callback_delay_ms:
                await asyncio.sleep(config.callback_delay_ms / 1000.0)
            code = error_code if status == "undelivered" else None
            self._set_status(message["sid"], status, code)
            params = {
                "AccountSid": message["account_sid"],
                "ApiVersion": API_VERSION,
                "From": message["from"] or SERVICE_POOL_NUMBER,
                "MessageSid": message["sid"],
                "MessageStatus": status,
                "SmsSid": message["sid"],
                "SmsStatus": status,
                "To": message["to"],
            }
            if message["messaging_service_sid"]:
                params["MessagingServiceSid"] = message["messaging_service_sid"]
            if code is not None:
                params["ErrorCode"] = str(code)
            await self._post_callback(url, params, auth_token)

    def _set_status(self, sid: str, status: str, error_code: int | None) -> None:
        resource = self._resources.get(sid)
        if resource is None:
            return
        now = rfc2822(time.time())
        resource["status"] = status
        resource["date_updated"] = now
        if status == "sent":
            resource["date_sent"] = now
        if error_code is not None:
            resource["error_code"] = error_code
            resource["error_message"] = ERROR_MESSAGES.get(error_code)

    async def _post_callback(self, url: str, params: dict[str, str], auth_token: str) -> None:
        validator = self._validators.get(auth_token)
        if validator is None:
            validator = self._validators[auth_token] = RequestValidator(auth_token)
        headers = {
            "X-Twilio-Signature": validator.compute_signature(url, params),
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "User-Agent": "TwilioProxy/1.1",
        }
        if self._client is None:
            self._client = self._client_factory()
        try:
            response = await self._client.post(url, data=params, headers=headers)
        except httpx.HTTPError:
            self.recorder.count("callback_failed")
            return
        self.recorder.count("callback_ok" if response.is_success else "callback_failed")

    async def aclose(self) -> None:
        """Cancel callbacks still pending and close their HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def create_twilio_app(
    recorder: Recorder,
    faults: Faults,
    *,
    auth_token: str | None = None,
    account_sid: str | None = None,
    callback_client_factory: Callable[[], httpx.AsyncClient] | None = None,
) -> Starlette:
    """Build the Twilio emulator's ASGI app.

    ``auth_token``: the token clients must present (``None``: any, like a sandbox). ``account_sid``:
    the only account accepted (``None``: any ``AC…`` whose SID matches the Basic username).
    ``app.state.emulator`` is the :class:`TwilioEmulator`; ``app.state.on_stop`` lists the
    coroutines :mod:`emulators.server` awaits after the server stops.
    """
    emulator = TwilioEmulator(
        recorder,
        faults,
        auth_token=auth_token,
        account_sid=account_sid,
        callback_client_factory=callback_client_factory,
    )
    base = f"/{API_VERSION}/Accounts/{{AccountSid}}"
    routes = [
        Route(f"{base}/Messages.json", emulator.create_endpoint, methods=["POST"]),
        Route(f"{base}/Messages.json", emulator.list_endpoint, methods=["GET"]),
        Route(f"/{API_VERSION}/Accounts/{{AccountSid}}.json", emulator.account_endpoint),
        Route(f"{base}/Messages/{{Sid}}.json", emulator.fetch_endpoint, methods=["GET"]),
        *control_routes(recorder, faults),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_reply(20404, 404, path=request.url.path).to_response()

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_reply(20004, 405).to_response()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    app.state.emulator = emulator
    # Set by the server when it stops, so requests held by the timeout fault let go.
    app.state.stopping = asyncio.Event()
    app.state.on_stop = [emulator.aclose]
    return app
