"""SMS through the official ``twilio`` client, asynchronously, many requests in flight.

The HTTP boundary is ours: a subclass of Twilio's own async HTTP client sends to
``TWILIO_API_BASE_URL`` (emulators, proxies) and turns 429/5xx/timeouts into
:class:`TransientSendError` carrying ``Retry-After`` (Twilio's exception drops the headers).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp.abc import AbstractResolver
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from yarl import URL

from messaging.errors import (
    InDoubtSendError,
    PermanentSendError,
    ProviderAuthError,
    SendError,
    TransientSendError,
)
from messaging.providers.aioloop import LoopThread
from messaging.providers.base import LoggedSms, SmsMessage, SmsReceipt, SmsResult
from messaging.providers.retry import acall_with_retries

TWILIO_DEFAULT_BASE_URL = "https://api.twilio.com"
#: Every host the client may build (api.twilio.com, or api.{edge}.{region}.twilio.com when
#: TWILIO_EDGE/TWILIO_REGION are in the environment, which the client reads by itself).
_TWILIO_HOST_RE = re.compile(r"^https://[A-Za-z0-9.-]*twilio\.com")
#: Twilio error codes that mean "this recipient has opted out": also suppress the number.
OPTED_OUT_CODES = frozenset({21610})
#: Per-request timeout; a hung connection must not hold a slot of the in-flight pool.
REQUEST_TIMEOUT_S = 10.0
#: Requests one process keeps in flight (bounded by the rate limiter anyway). A piece of
#: work books consecutive slots of the fleet's schedule, so while it runs its process sends
#: at the fleet's whole rate, whatever its average share: it needs rate x latency places
#: (2,000/s x 200 ms = 400), not its share of them. At 256, two processes at 2,000/s sent
#: 0.85 of the rate: a third of one process's sends waited for a place and took fresh
#: slots (per-process counts, 2026-12-05). At 384: 0.94-0.96 in 42 runs, our departures'
#: busiest second 1,959 at most, the emulator's (on the same two cores) above 2,000 in one
#: run (2,038). 512 and 1,024 (2026-12-04) had it count 2,012-2,075 in most runs.
MAX_IN_FLIGHT = 384
#: A send may leave this late after its slot; later, it takes a new slot. With the early
#: tolerance below, the spread of our own departures; the limiter's lateness budget
#: (``messaging.sending.pacing.LATENESS_BUDGET_S``, 40 ms) leaves the rest (19 ms) to what
#: comes after the check: the client's own work, a descheduled process, the network.
LATE_TOLERANCE_S = 0.02
#: A send may leave this early (no timer is set for less).
EARLY_TOLERANCE_S = 0.001


#: Messages of the log read per number when settling an in-doubt row (newest first): a
#: number gets a handful of texts a day from us.
LOG_LOOKUP_LIMIT = 200
#: HTTP statuses that mean "these credentials are refused" (a wrong or rotated auth token,
#: a suspended account): the fleet's problem, never the recipient's.
AUTH_STATUSES = (401, 403)


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class RebasedAsyncHttpClient(AsyncTwilioHttpClient):
    """Twilio's async HTTP client, pointed at another base URL, with transient errors typed.

    ``request`` is the official one's, minus per-request work that buys nothing here (it
    is the hot path: one call per recipient): the form body is encoded once as bytes
    rather than through aiohttp's ``FormData`` (which also builds a multipart writer and a
    random boundary per request), the Basic credentials are built once, and the request
    and response are logged only when the ``twilio`` logger would print them. It also
    applies the client's timeout, which the official one stores but does not pass on, and
    pools as many connections as requests may be in flight.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_IN_FLIGHT,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(pool_connections=False, timeout=timeout_s)
        # The official client's pooled session keeps aiohttp's default of 100 connections:
        # at Twilio's ~200 ms a call that caps a process at ~500 messages/s, whatever our
        # own in-flight limit. Must be built inside the event loop that will use it.
        self._connector = aiohttp.TCPConnector(limit=max_connections, resolver=resolver)
        self.session = aiohttp.ClientSession(connector=self._connector)
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._basic: dict[tuple[str, str], str] = {}
        #: A request to the API host, never sent: :meth:`open_ahead` opens connections with
        #: it and finds the host's idle ones by its key.
        self._probe = aiohttp.ClientRequest(
            "POST", URL(self._base_url), loop=asyncio.get_running_loop()
        )
        self._probe_key = self._probe.connection_key

    async def open_ahead(self) -> None:
        """Open a connection to the API host now if its pool has none idle.

        The request that follows then finds one, instead of opening it after its send was
        judged on time: a blast's first few hundred sends each opened a connection (the pool
        grows from nothing to rate × latency in a fraction of a second), reached the
        emulator up to 105 ms after they left, on top of the sends that were on time, and the
        busiest second held 2,012–2,075 at 2,000/s with 512 in flight (benchmarks/NOTES.md;
        with this, six runs held ≤ 1,988). Opened here, a
        slow connection makes its send late where lateness is still judged (a fresh slot).
        The idle count is aiohttp's own pool (``_conns``): it has no public one.
        """
        if getattr(self._connector, "_conns", {}).get(self._probe_key):
            return
        try:
            connection = await self._connector.connect(self._probe, [], self._timeout)
        except (TimeoutError, aiohttp.ClientError):
            return  # the request itself meets the failure and reports it
        connection.release()  # idle in the pool, for the request about to be made

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send to our base URL; raise TransientSendError for 429, 5xx and network errors."""
        url = _TWILIO_HOST_RE.sub(self._base_url, url, count=1)
        verbose = self.logger.isEnabledFor(logging.INFO)
        if verbose:
            self.log_request({"method": method, "url": url, "params": params, "headers": headers})
        try:
            async with self.session.request(
                method.upper(),
                url,
                params=params,
                # The same bytes aiohttp's FormData would produce; the client sets the
                # Content-Type header (application/x-www-form-urlencoded) itself.
                data=urlencode(data, doseq=True).encode() if isinstance(data, dict) else data,
                headers=self._with_auth(headers, auth),
                timeout=aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout,
                allow_redirects=allow_redirects,
            ) as raw:
                response = Response(raw.status, await raw.text(), raw.headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TransientSendError(f"twilio unreachable: {type(exc).__name__}") from None
        if verbose:
            self.log_response(response.status_code, response)
        status = response.status_code
        if status in AUTH_STATUSES:
            # An operator problem (rotated token), not the recipient's: the fleet pauses the
            # channel and the messages wait for the fix instead of failing a whole blast.
            raise ProviderAuthError(
                f"twilio refused the credentials (HTTP {status}): {_error_text(response.text)}",
                code=str(status),
            )
        if status == 429 or status >= 500:
            raise TransientSendError(
                f"twilio HTTP {status}",
                code=str(status),
                retry_after_s=_retry_after(response.headers),
            )
        return response

    def _with_auth(
        self, headers: dict[str, str] | None, auth: tuple[str, str] | None
    ) -> dict[str, str] | None:
        """The headers plus HTTP Basic credentials, encoded once per credential pair
        (aiohttp's ``BasicAuth`` helper is deprecated since aiohttp 3.14)."""
        if auth is None:
            return headers
        basic = self._basic.get(auth)
        if basic is None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            basic = self._basic[auth] = f"Basic {token}"
        return {**(headers or {}), "Authorization": basic}


def _error_text(body: str) -> str:
    """Twilio's one-line error message from an error body, else the body's start."""
    try:
        payload = json.loads(body)
        return str(payload.get("message") or payload.get("code") or "")[:200]
    except (ValueError, AttributeError):
        return body.strip().splitlines()[0][:200] if body.strip() else ""


def _int_or_none(value: Any) -> int | None:
    """A count Twilio may send as a string, a number or something else entirely (its API
    description types ``num_segments`` as a string): never let it cost us the receipt."""
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _epoch_s(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return parsedate_to_datetime(str(value)).timestamp() if value else None
    except (TypeError, ValueError):
        return None


def map_twilio_error(exc: TwilioRestException) -> SendError:
    """A Twilio API error as our error tree: permanent unless it is a server-side hiccup."""
    code = str(exc.code) if exc.code is not None else str(exc.status)
    message = f"twilio {code}: {exc.msg}"
    if exc.status in AUTH_STATUSES:
        return ProviderAuthError(message, code=str(exc.status))
    if exc.status == 429 or exc.status >= 500:
        return TransientSendError(message, code=code)
    return PermanentSendError(message, code=code, suppress=exc.code in OPTED_OUT_CODES)


class TwilioSms:
    """An :class:`~messaging.providers.base.SmsTransport` on the official client."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = TWILIO_DEFAULT_BASE_URL,
        loop: LoopThread | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
        on_throttle: Callable[[float], object] | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._loop = loop or LoopThread("twilio-io")
        self._owns_loop = loop is None
        self._account_sid, self._auth_token, self._base_url = account_sid, auth_token, base_url
        # aiohttp sessions must be born inside the loop that uses them.
        self._client: Client = self._loop.run(self._make_client(resolver))
        # The client imports its API modules on first use; pay that now, not on the first
        # message of a blast (which would then leave late, and its neighbours bunched).
        self._messages = self._client.api.v2010.account.messages
        self._limit = asyncio.Semaphore(max_in_flight)
        #: Told how long Twilio asked us to back off after a 429 (slows the fleet's limiter).
        self._on_throttle = on_throttle or (lambda _s: None)

    async def _make_client(self, resolver: AbstractResolver | None) -> Client:
        """The official client on our HTTP layer (``resolver`` None: aiohttp's own)."""
        http = self._http = RebasedAsyncHttpClient(self._base_url, resolver=resolver)
        return Client(self._account_sid, self._auth_token, http_client=http)

    def send_many(
        self,
        messages: Sequence[SmsMessage],
        gate: Callable[[SmsMessage], bool] | None = None,
        reslot: Callable[[SmsMessage], float | None] | None = None,
    ) -> list[SmsResult]:
        """Send every message at its slot, concurrently; one result per message, in order.

        A message that would leave more than :data:`LATE_TOLERANCE_S` after its slot (a busy
        event loop, a retry after backoff) asks ``reslot`` for a fresh one instead of going
        out in a bunch with its neighbours: bunched sends are how a paced fleet still breaks
        a per-second limit at the provider. ``reslot`` returning None holds the message; no
        ``reslot``: a late message goes now.
        """
        if not messages:
            return []
        return self._loop.run(self._send_all(messages, gate or (lambda _m: True), reslot))

    async def _send_all(
        self,
        messages: Sequence[SmsMessage],
        gate: Callable[[SmsMessage], bool],
        reslot: Callable[[SmsMessage], float | None] | None,
    ) -> list[SmsResult]:
        return list(await asyncio.gather(*(self._send_one(m, gate, reslot) for m in messages)))

    async def _wait_for_turn(
        self,
        message: SmsMessage,
        slot: float,
        gate: Callable[[SmsMessage], bool],
        reslot: Callable[[SmsMessage], float | None] | None,
    ) -> float | None:
        """Sleep until the message may go and take a place among the requests in flight (the
        caller releases it); None, holding no place, if it must be held (stopped, no slot).

        A wait for a place (a binding rate times the provider's latency can need more than
        ``MAX_IN_FLIGHT``) makes a send late like a busy loop does, so lateness is judged
        once the place is taken: sends that queued for one would otherwise leave in a bunch
        (2,206 in one second at 2,000/s)."""
        while True:
            delay = slot - time.time()
            if delay > EARLY_TOLERANCE_S:  # a timer per message costs more than this is worth
                await asyncio.sleep(delay)
            if not gate(message):  # paused, canceled or STOPped while it waited for its slot
                return None
            await self._limit.acquire()
            await self._http.open_ahead()  # a connection's opening is part of being late
            if time.time() - slot <= LATE_TOLERANCE_S:
                return slot
            if reslot is None:
                return time.time()
            self._limit.release()
            # A Redis round trip: on this loop it would hold up every other send, making
            # them late in turn (a cascade of fresh slots under load); off it, they go on.
            fresh = await asyncio.get_running_loop().run_in_executor(None, reslot, message)
            if fresh is None:
                return None
            slot = fresh

    async def _send_one(
        self,
        message: SmsMessage,
        gate: Callable[[SmsMessage], bool],
        reslot: Callable[[SmsMessage], float | None] | None,
    ) -> SmsResult:
        kwargs: dict[str, Any] = {"to": message.to, "body": message.body}
        if message.messaging_service_sid:
            kwargs["messaging_service_sid"] = message.messaging_service_sid
        else:
            kwargs["from_"] = message.from_number
        if message.status_callback:
            kwargs["status_callback"] = message.status_callback
        if message.validity_period_s:
            kwargs["validity_period"] = message.validity_period_s
        if message.media_url:
            kwargs["media_url"] = [message.media_url]  # Twilio takes up to ten
        first_slot = message.send_at_s
        attempts = 0
        called = False

        async def call() -> SmsReceipt | None:
            nonlocal attempts, called
            attempts += 1
            # Every attempt goes out on a slot of its own: a retry after backoff is late by
            # definition (slot 0), so it takes a fresh one.
            slot = await self._wait_for_turn(
                message, first_slot if attempts == 1 else 0.0, gate, reslot
            )
            if slot is None:
                return None
            try:
                called = True
                try:
                    sent = await self._messages.create_async(**kwargs)
                except TwilioRestException as exc:
                    raise map_twilio_error(exc) from None
                except TransientSendError as exc:
                    if exc.code == "429":
                        self._on_throttle(exc.retry_after_s or 1.0)
                    raise
            finally:
                self._limit.release()
            # The SID first: once Twilio answered with one, the message is sent whatever else
            # its answer holds (a mock of the API description once sent
            # "num_segments": "laboris enim magna", and int() of it lost 21 receipts).
            return SmsReceipt(str(sent.sid), _int_or_none(getattr(sent, "num_segments", None)))

        try:
            # Most sends succeed at once: the retry machinery (a few dozen microseconds a
            # message, on the one thread all sends share) is set up only after a transient
            # failure, which then counts as its first attempt (Retry-After honoured).
            try:
                return await call()
            except TransientSendError as exc:
                failed: list[TransientSendError] = [exc]

            async def again() -> SmsReceipt | None:
                if failed:
                    raise failed.pop()
                return await call()

            return await acall_with_retries(again)
        except SendError as exc:
            return exc
        except Exception as exc:  # a bug or a surprise: settle this one, keep the batch
            detail = f"{type(exc).__name__}: {exc}"[:300]
            if called:  # Twilio may have it: the sweep asks its message log
                return InDoubtSendError(f"unexpected error around the call: {detail}")
            return TransientSendError(f"unexpected error before the call: {detail}")

    def recent_to(self, to: str, from_number: str | None, since_s: float) -> list[LoggedSms]:
        """See :class:`~messaging.providers.base.SmsLog`: Twilio's message log, newest first,
        read until a message older than ``since_s``."""
        return self._loop.run(self._recent_to(to, from_number, since_s))

    async def _recent_to(self, to: str, from_number: str | None, since_s: float) -> list[LoggedSms]:
        kwargs: dict[str, Any] = {"to": to, "limit": LOG_LOOKUP_LIMIT, "page_size": 50}
        if from_number:
            kwargs["from_"] = from_number
        found = []
        for m in await self._messages.list_async(**kwargs):
            created = _epoch_s(getattr(m, "date_created", None))
            if created is not None and created < since_s:
                break  # newest first: the rest is older still
            found.append(
                LoggedSms(
                    sid=str(m.sid),
                    to=str(m.to),
                    from_number=str(m.from_) if m.from_ else None,
                    body=str(m.body or ""),
                    created_at_s=created,
                )
            )
        return found

    def check_credentials(self) -> str:
        """A cheap authenticated read (the account resource); returns its status.

        Raises :class:`ProviderAuthError` when Twilio refuses the credentials.
        """

        async def fetch() -> str:
            try:
                account = await self._client.api.v2010.accounts(self._account_sid).fetch_async()
            except TwilioRestException as exc:
                raise map_twilio_error(exc) from None
            return str(account.status or "unknown")

        return self._loop.run(fetch())

    def close(self) -> None:
        """Close the HTTP session (and the loop, if we made it)."""
        http = self._client.http_client
        if isinstance(http, AsyncTwilioHttpClient):
            self._loop.run(http.close())
        if self._owns_loop:
            self._loop.stop()
