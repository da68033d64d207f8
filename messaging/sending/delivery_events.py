"""What providers tell us after a send, applied to the system of record.

Three kinds of events, all usable without HTTP (the web handlers only check signatures and
decode the wire format):

- Twilio status callbacks refine a ``sent`` SMS to ``delivered`` or ``failed``;
- inbound SMS carry the opt-out keywords (STOP …, START …, HELP);
- SendGrid event batches refine a ``sent`` email and report addresses never to mail again.

Providers deliver at least once and in any order, so every update here is safe to repeat and
to reorder: the ledger only ever moves out of ``sent`` (a conditional ``UPDATE … WHERE
state = 'sent'``, so a late ``sent`` never undoes ``delivered`` and a repeated ``delivered``
changes nothing), suppressions are idempotent, and inbound messages and SendGrid events are
remembered by their provider id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from messaging.blasts.lifecycle import RowState
from messaging.compliance.suppression import SuppressionList
from messaging.ports import DeliveryEventStore
from messaging.ports.stores import EMAIL_LEN

log = structlog.get_logger(__name__)

# --- SMS keywords ----------------------------------------------------------------------------

#: Whole-message keywords that opt a number out (Twilio's and the CTIA's list).
STOP_WORDS: Final = frozenset(
    {"stop", "stopall", "unsubscribe", "end", "quit", "cancel", "revoke", "optout"}
)
#: Whole-message keywords that opt a number back in.
START_WORDS: Final = frozenset({"start", "yes", "unstop"})
#: Whole-message keywords that ask who is texting (INFO is Twilio's second help keyword).
HELP_WORDS: Final = frozenset({"help", "info"})

STOP: Final = "stop"
START: Final = "start"
HELP: Final = "help"

#: Twilio's "the recipient replied STOP to this sender": never text the number again.
TWILIO_OPTED_OUT: Final = "21610"

#: Twilio message statuses that settle a sent SMS.
TWILIO_DELIVERED: Final = frozenset({"delivered", "read"})
TWILIO_FAILED: Final = frozenset({"undelivered", "failed"})

# --- SendGrid ----------------------------------------------------------------------------------

#: Events whose address must never be mailed again (``dropped`` only for the reasons below).
SENDGRID_SUPPRESSING: Final = frozenset(
    {"bounce", "dropped", "spamreport", "unsubscribe", "group_unsubscribe"}
)
#: ``dropped`` reasons that are about the address. The others ("Invalid SMTPAPI header",
#: "Spam Content", "Recipient List over Package Quota") are about our message or account:
#: the message failed, but the address is fine.
SENDGRID_ADDRESS_DROP_REASONS: Final = frozenset(
    {"invalid", "bounced address", "unsubscribed address", "spam reporting address"}
)
#: Provider name of SendGrid events in ``webhook_events``.
SENDGRID: Final = "sendgrid"


@dataclass(frozen=True, slots=True)
class SmsStatus:
    """One Twilio status callback."""

    message_sid: str
    status: str
    error_code: str | None = None
    #: The recipient, as Twilio reports it (used when the ledger row is not found).
    to: str | None = None


@dataclass(frozen=True, slots=True)
class InboundSms:
    """One inbound SMS."""

    from_number: str
    body: str
    to_number: str | None = None
    message_sid: str | None = None


@dataclass(frozen=True, slots=True)
class Keyword:
    """An opt-out keyword found in an inbound SMS."""

    action: str  # STOP | START | HELP
    word: str  # the keyword as matched, lower-cased


@dataclass(frozen=True, slots=True)
class InboundResult:
    """What an inbound SMS did."""

    keyword: Keyword | None
    #: True when this MessageSid was handled before: nothing was recorded or changed again.
    duplicate: bool


@dataclass(slots=True)
class EmailEventsReport:
    """What one SendGrid batch did (counts of events, not of rows moved)."""

    received: int = 0
    duplicates: int = 0
    suppressed: int = 0
    delivered: int = 0
    failed: int = 0
    ignored: int = 0


def keyword_of(body: str) -> Keyword | None:
    """The keyword an inbound body is, if it is one: whole body, trimmed, any case."""
    word = body.strip().casefold()
    if word in STOP_WORDS:
        return Keyword(STOP, word)
    if word in START_WORDS:
        return Keyword(START, word)
    if word in HELP_WORDS:
        return Keyword(HELP, word)
    return None


def sendgrid_event_id(event: Mapping[str, Any]) -> str:
    """SendGrid's ``sg_event_id``; for the rare event without one, a hash of its content."""
    given = event.get("sg_event_id")
    if isinstance(given, str) and given:
        return given[:128]
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def suppresses_address(event: Mapping[str, Any]) -> bool:
    """True when a SendGrid event means the address must never be mailed again."""
    kind = event.get("event")
    if kind not in SENDGRID_SUPPRESSING:
        return False
    if kind == "bounce":
        # A "blocked" bounce is the receiving server refusing our IP or content, not the
        # mailbox; SendGrid itself does not suppress blocks, and neither do we.
        return str(event.get("type") or "bounce").casefold() != "blocked"
    if kind == "dropped":
        return str(event.get("reason") or "").strip().casefold() in SENDGRID_ADDRESS_DROP_REASONS
    return True


def _email_of(event: Mapping[str, Any]) -> str | None:
    value = event.get("email")
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if "@" in value and len(value) <= EMAIL_LEN else None


def _ledger_key(event: Mapping[str, Any]) -> tuple[str, int] | None:
    """(blast id, supporter id) from the custom args the email sender attaches."""
    blast_id, supporter_id = event.get("blast_id"), event.get("supporter_id")
    if not isinstance(blast_id, str) or not blast_id:
        return None
    try:
        return blast_id, int(str(supporter_id))
    except ValueError:
        return None


def _event_time(event: Mapping[str, Any], default: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(event["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return default


class DeliveryEvents:
    """Applies provider events to the ledger, the suppression list and the inbound log."""

    def __init__(self, store: DeliveryEventStore, suppressions: SuppressionList) -> None:
        self._store = store
        self._suppressions = suppressions

    # --- Twilio: status callbacks ------------------------------------------------------------

    def sms_status(self, event: SmsStatus) -> str:
        """Apply one status callback; returns ``delivered``, ``failed``, ``unchanged`` or
        ``ignored`` (a status that settles nothing, such as ``sent`` or ``queued``)."""
        status = event.status.strip().lower()
        if status in TWILIO_DELIVERED:
            target = RowState.DELIVERED
        elif status in TWILIO_FAILED:
            target = RowState.FAILED
        else:
            return "ignored"
        code = (event.error_code or "").strip() or None
        destination = self._store.sms_destination(event.message_sid)
        if code == TWILIO_OPTED_OUT:
            # Before the ledger update: if we crash in between, the provider's retry (or the
            # next send's own 21610) still suppresses.
            number = destination if destination is not None else (event.to or "").strip()
            if number and self._suppressions.lookup("sms", number) is None:
                self._suppressions.add(
                    "sms", number, reason=f"twilio-{TWILIO_OPTED_OUT}", source="twilio-callback"
                )
        now = datetime.now(UTC)
        values: dict[str, Any] = {"state": target, "updated_at": now}
        if target == RowState.DELIVERED:
            values["delivered_at"] = now
        else:
            values["error_code"] = code or status
            values["error"] = f"twilio: {status}" + (f" (error {code})" if code else "")
        if destination is None:
            # The sender has not recorded the SID yet (the callback overtook its batch), or
            # the message is not ours: park the status; the sender applies it on record.
            self._store.park_sms_status(event.message_sid, values)
            log.info("twilio.status_parked", message_sid=event.message_sid, status=status)
            return "parked"
        return target if self._store.settle_sms(event.message_sid, values) else "unchanged"

    # --- Twilio: inbound SMS ---------------------------------------------------------------

    def inbound_sms(self, message: InboundSms) -> InboundResult:
        """Act on an opt-out keyword and record the message (once per MessageSid).

        A STOP is written to the suppression list that senders check before every call, so
        it takes effect for everything not yet handed to Twilio.
        """
        keyword = keyword_of(message.body)
        if message.message_sid and self._store.inbound_seen(message.message_sid):
            # Acting again could undo a later keyword (STOP, START, then STOP replayed).
            return InboundResult(keyword, duplicate=True)
        number = message.from_number.strip()
        if keyword is not None and keyword.action == STOP:
            self._suppressions.add("sms", number, reason=keyword.word, source="inbound-sms")
        elif keyword is not None and keyword.action == START:
            self._suppressions.remove("sms", number, source="inbound-sms")
        # Recorded after acting: a crash in between makes the retry act again (idempotent),
        # never skip the opt-out.
        inserted = self._store.record_inbound(
            {
                "from_number": number[:32],
                "to_number": (message.to_number or "")[:32] or None,
                "body": message.body,
                "message_sid": message.message_sid or None,
                "action": keyword.action if keyword else None,
                "received_at": datetime.now(UTC),
            }
        )
        log.info(
            "sms.inbound",
            message_sid=message.message_sid,
            action=keyword.action if keyword else None,
        )
        return InboundResult(keyword, duplicate=not inserted)

    # --- SendGrid: event batches -----------------------------------------------------------

    def email_events(self, events: Sequence[Any]) -> EmailEventsReport:
        """Apply one event-webhook batch; events already applied are skipped by their id."""
        report = EmailEventsReport(received=len(events))
        batch = [e for e in events if isinstance(e, Mapping)]
        report.ignored += len(events) - len(batch)
        ids = [sendgrid_event_id(e) for e in batch]
        seen = self._store.seen_events(SENDGRID, ids) if ids else set()
        now = datetime.now(UTC)

        fresh: list[str] = []
        to_suppress: dict[str, str] = {}
        delivered: list[tuple[str, int, datetime]] = []
        failed: list[tuple[str, int, str, str]] = []
        for event_id, event in zip(ids, batch, strict=True):
            if event_id in seen:
                report.duplicates += 1
                continue
            seen.add(event_id)
            fresh.append(event_id)
            kind = event.get("event")
            email = _email_of(event)
            acted = False
            if email and suppresses_address(event):
                to_suppress.setdefault(email, str(kind))
                acted = True
            key = _ledger_key(event)
            if key is not None and kind == "delivered":
                delivered.append((key[0], key[1], _event_time(event, now)))
                report.delivered += 1
                acted = True
            elif key is not None and kind in ("bounce", "dropped"):
                reason = str(event.get("reason") or kind)
                status = event.get("status")
                code = str(status)[:32] if kind == "bounce" and status else str(kind)
                failed.append((key[0], key[1], code, f"sendgrid {kind}: {reason}"[:1000]))
                report.failed += 1
                acted = True
            if not acted:
                report.ignored += 1

        report.suppressed = self._suppress_emails(to_suppress)
        # Ledger refinements and the applied-event marks, in one transaction.
        self._store.apply_email_outcomes(delivered, failed, SENDGRID, fresh, now)
        log.info(
            "sendgrid.events",
            received=report.received,
            duplicates=report.duplicates,
            suppressed=report.suppressed,
            delivered=report.delivered,
            failed=report.failed,
            ignored=report.ignored,
        )
        return report

    def _suppress_emails(self, to_suppress: dict[str, str]) -> int:
        """Suppress the addresses not suppressed yet (one lookup for the batch)."""
        if not to_suppress:
            return 0
        already = self._suppressions.suppressed_among("email", list(to_suppress))
        added = 0
        for email, reason in to_suppress.items():
            if email not in already:
                added += self._suppressions.add("email", email, reason=reason, source=SENDGRID)
        return added
