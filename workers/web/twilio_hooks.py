"""Twilio webhooks: SMS status callbacks and inbound SMS (replies, opt-outs: contract §12).

Both are signed by Twilio with the account auth token over the public URL it called; an
unsigned or mis-signed request is refused (403) before anything is read into the system of
record.
"""

from __future__ import annotations

from typing import Final

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.twiml.messaging_response import MessagingResponse

from messaging.compliance.replies import InboundReply, ReplyHandler
from messaging.sending.delivery_events import DeliveryEvents, SmsStatus
from workers.web.security import (
    TWILIO_MAX_BODY,
    TWILIO_SIGNATURE_HEADER,
    TwilioSignature,
    form_params,
    public_url,
    read_body,
)

log = structlog.get_logger(__name__)

#: Twilio reads a TwiML reply as XML.
TWIML_MEDIA_TYPE: Final = "application/xml"


#: Longest value Twilio sends in any field but ``Body`` (SIDs are 34 characters, numbers 16);
#: the columns hold 32 (numbers) and 64 (SIDs).
_FIELD_MAX_CHARS = 32


def _plausible(name: str, value: str) -> str:
    """``value`` as the handlers may use it: without NUL (PostgreSQL text refuses it) and, but
    for the body, empty when longer than Twilio ever sends (it overflowed a column: a 500)."""
    value = value.replace("\x00", "")
    if name != "Body" and len(value) > _FIELD_MAX_CHARS + (32 if name.endswith("Sid") else 0):
        return ""
    return value


def _twiml(response: MessagingResponse) -> Response:
    return Response(str(response), media_type=TWIML_MEDIA_TYPE)


class TwilioHooks:
    """The two Twilio endpoints, wired to the delivery events and reply services."""

    def __init__(
        self,
        events: DeliveryEvents,
        replies: ReplyHandler,
        signature: TwilioSignature,
        public_base_url: str,
    ) -> None:
        self._events = events
        self._replies = replies
        self._signature = signature
        self._public_base_url = public_base_url

    def routes(self) -> list[Route]:
        """``POST /webhooks/twilio/status`` and ``POST /webhooks/twilio/inbound``."""
        return [
            Route("/webhooks/twilio/status", self.status, methods=["POST"]),
            Route("/webhooks/twilio/inbound", self.inbound, methods=["POST"]),
        ]

    async def _signed_params(self, request: Request, route: str) -> dict[str, str] | None:
        body = await read_body(request, TWILIO_MAX_BODY)
        params = form_params(body)
        url = public_url(request, self._public_base_url)
        if not self._signature.valid(url, params, request.headers.get(TWILIO_SIGNATURE_HEADER)):
            log.warning("webhook.signature_rejected", provider="twilio", route=route)
            return None
        # Twilio sends each field once; the last value wins if a proxy ever repeats one.
        return {k: _plausible(k, v) for k, v in params.items()}

    async def status(self, request: Request) -> Response:
        """A message status callback: refines ``sent`` to ``delivered`` or ``failed``."""
        params = await self._signed_params(request, "status")
        if params is None:
            return Response(status_code=403)
        sid = params.get("MessageSid") or params.get("SmsSid")
        status = params.get("MessageStatus") or params.get("SmsStatus")
        if not sid or not status:
            return Response("MessageSid and MessageStatus are required", status_code=400)
        event = SmsStatus(
            message_sid=sid,
            status=status,
            error_code=params.get("ErrorCode") or None,
            to=params.get("To") or None,
        )
        outcome = await run_in_threadpool(self._events.sms_status, event)
        log.info("twilio.status", message_sid=sid, status=status, outcome=outcome)
        return Response(status_code=204)

    async def inbound(self, request: Request) -> Response:
        """An inbound SMS: stored, and acted on when it asks to stop, restart or for help.

        The answer (the one opt-out confirmation, the HELP text) is the TwiML reply: Twilio
        sends it as a response to this message, no API call needed. Nothing is answered
        when Twilio's (Advanced) Opt-Out Management already did (``OptOutType`` is set) or
        for a replayed MessageSid.
        """
        params = await self._signed_params(request, "inbound")
        if params is None:
            return Response(status_code=403)
        sender = params.get("From", "").strip()
        if not sender:
            return Response("From is required", status_code=400)
        message = InboundReply(
            from_number=sender,
            body=params.get("Body", ""),
            to_number=params.get("To") or None,
            message_sid=params.get("MessageSid") or params.get("SmsSid") or None,
            opt_out_type=params.get("OptOutType") or None,
        )
        outcome = await run_in_threadpool(self._replies.receive, message)
        reply = MessagingResponse()
        if outcome.answer is not None:
            reply.message(outcome.answer)
        return _twiml(reply)
