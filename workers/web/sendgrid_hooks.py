"""SendGrid's signed event webhook: delivery refinements and addresses never to mail again."""

from __future__ import annotations

import json
from dataclasses import asdict

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from messaging.delivery_events import DeliveryEvents
from workers.web.security import (
    SENDGRID_MAX_BODY,
    SENDGRID_SIGNATURE_HEADER,
    SENDGRID_TIMESTAMP_HEADER,
    SendGridSignature,
    read_body,
)

log = structlog.get_logger(__name__)


class SendGridHooks:
    """``POST /webhooks/sendgrid/events``."""

    def __init__(self, events: DeliveryEvents, signature: SendGridSignature) -> None:
        self._events = events
        self._signature = signature

    def routes(self) -> list[Route]:
        """The event webhook route."""
        return [Route("/webhooks/sendgrid/events", self.events, methods=["POST"])]

    async def events(self, request: Request) -> Response:
        """One batch of events (a JSON array), verified on the raw body before parsing.

        No freshness window on the timestamp: SendGrid retries a failed batch for up to three
        days, and a replayed batch is harmless anyway (each event is applied once, by id).
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
        try:
            events = json.loads(body)
        except ValueError:
            return Response("body is not JSON", status_code=400)
        if not isinstance(events, list):
            return Response("body must be a JSON array of events", status_code=400)
        report = await run_in_threadpool(self._events.email_events, events)
        return JSONResponse(asdict(report))
