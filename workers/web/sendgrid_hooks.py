"""SendGrid's signed event webhook: delivery refinements and addresses never to mail again."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Final

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from messaging.content.alert import ALERT_ID_PATTERN
from messaging.sending.delivery_events import DeliveryEvents
from workers.web.security import (
    SENDGRID_MAX_BODY,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    SendGridSignature,
    read_body,
)

log = structlog.get_logger(__name__)

#: Event fields that are strings whenever SendGrid sends them.
_TEXT_FIELDS: Final = ("event", "email", "sg_event_id", "sg_message_id", "type", "reason")
#: Largest supporter id a custom arg may name (a BIGINT).
_MAX_ID: Final = 2**63 - 1
_ALERT_ID_RE: Final = re.compile(ALERT_ID_PATTERN)

#: Largest gap between a batch's signed timestamp and our clock, in seconds. A captured
#: batch replayed later is refused; SendGrid signs each delivery attempt anew, so its own
#: retries (for up to three days) carry fresh timestamps.
MAX_CLOCK_SKEW_S: Final = 600


class SendGridHooks:
    """``POST /webhooks/sendgrid/events``."""

    def __init__(
        self,
        events: DeliveryEvents,
        signature: SendGridSignature,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._events = events
        self._signature = signature
        self._clock = clock

    def routes(self) -> list[Route]:
        """The event webhook route."""
        return [Route("/webhooks/sendgrid/events", self.events, methods=["POST"])]

    async def events(self, request: Request) -> Response:
        """One batch of events (a JSON array), verified on the raw body before parsing.

        The signed timestamp must be within :data:`MAX_CLOCK_SKEW_S` of our clock: a batch
        captured on the way (or leaked from a log) cannot be replayed later.
        """
        if not self._signature.configured:
            # Contract §2: without SENDGRID_WEBHOOK_PUBLIC_KEY, events are refused.
            log.warning("webhook.refused", provider="sendgrid", reason="no public key")
            return Response(status_code=403)
        body = await read_body(request, SENDGRID_MAX_BODY)
        signature = request.headers.get(SENDGRID_SIGNATURE_HEADER)
        timestamp = request.headers.get(SENDGRID_TIMESTAMP_HEADER)
        if not self._signature.valid(body, signature, timestamp):
            log.warning("webhook.signature_rejected", provider="sendgrid", route="events")
            return Response(status_code=403)
        assert timestamp is not None  # a valid signature has one
        if not self._fresh(timestamp):
            log.warning("webhook.stale_timestamp", provider="sendgrid", timestamp=timestamp[:20])
            return Response("timestamp outside ±10 minutes of our clock", status_code=403)
        try:
            # A signed body is UTF-8 (the check decodes it). NUL is no part of any event, and
            # PostgreSQL text refuses it: drop the escape before parsing (a 500 before).
            events = json.loads(body.decode("utf-8").replace("\\u0000", ""))
        except ValueError:
            return Response("body is not JSON", status_code=400)
        except RecursionError:
            return Response("body is nested too deeply", status_code=400)
        if not isinstance(events, list):
            return Response("body must be a JSON array of events", status_code=400)
        report = await run_in_threadpool(self._events.email_events, [_checked(e) for e in events])
        return JSONResponse(asdict(report))

    def _fresh(self, timestamp: str) -> bool:
        try:
            signed_at = float(timestamp)
        except ValueError:
            return False
        return abs(self._clock() - signed_at) <= MAX_CLOCK_SKEW_S


def _checked(event: Any) -> Any:
    """``event`` if its fields have SendGrid's types; None (ignored, counted) if not.

    A signed batch is still input: an ``event`` that is a list, or a supporter id past a
    BIGINT, crashed the handler (a 500 that SendGrid retries for three days). Custom args
    that cannot name a ledger row are dropped, the rest of the event still counts.
    """
    if not isinstance(event, dict):
        return event
    if any(not isinstance(event.get(k, ""), str) for k in _TEXT_FIELDS):
        return None
    blast_id, supporter_id = event.get("blast_id"), event.get("supporter_id")
    if blast_id is None and supporter_id is None:
        return event
    digits = str(supporter_id)
    names_a_row = (
        isinstance(blast_id, str)
        and _ALERT_ID_RE.match(blast_id) is not None
        and isinstance(supporter_id, int | str)
        and not isinstance(supporter_id, bool)
        and digits.isascii()
        and digits.isdigit()
        and int(digits) <= _MAX_ID
    )
    if names_a_row:
        return event
    return {k: v for k, v in event.items() if k not in ("blast_id", "supporter_id")}
