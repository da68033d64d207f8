"""What an inbound SMS does (contract §12): suppress, lift, answer, and be kept for a person.

:class:`ReplyHandler` is the one place that acts on a reply. The web handler only checks the
signature and decodes Twilio's form; the answer it returns is sent as the webhook's TwiML
reply, which is how Twilio expects a conversational response and costs no API call.

Scope of START: it lifts only a suppression the phone made itself by replying (source
``inbound-sms``), never one an operator (``cli``), the carrier or Twilio (``provider``,
``twilio-callback``), a complaint or an email link made: those were not the supporter's
keyword to take back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from messaging.compliance.optout_language import (
    HELP,
    NEEDS_REVIEW,
    OPT_IN,
    OPT_OUT,
    ReplyClass,
    classify_reply,
)
from messaging.compliance.suppression import Suppression, SuppressionList
from messaging.errors import InputError
from messaging.ports import NewReply, Reply, ReplyStore

log = structlog.get_logger(__name__)

#: Source of suppressions a phone made by replying; the only ones its START lifts.
SOURCE: Final = "inbound-sms"
#: Reason prefix of a suppression that waits for a person's review.
REVIEW_PREFIX: Final = "review: "
#: A reviewer's verdicts.
VERDICT_OPT_OUT: Final = "opt_out"
VERDICT_NOT_OPT_OUT: Final = "not_opt_out"
VERDICTS: Final = (VERDICT_OPT_OUT, VERDICT_NOT_OPT_OUT)


@dataclass(frozen=True, slots=True)
class InboundReply:
    """One inbound SMS, as Twilio posts it."""

    from_number: str
    body: str
    to_number: str | None = None
    message_sid: str | None = None
    #: Twilio's ``OptOutType`` (STOP, START, HELP): set when Twilio's Opt-Out Management
    #: recognised a keyword, in which case Twilio has already answered it.
    opt_out_type: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyTexts:
    """The fixed texts of contract §12."""

    org_name: str | None
    help_contact: str | None

    @property
    def _org(self) -> str:
        return self.org_name or "Alerts"

    def confirmation(self) -> str:
        """The one confirmation after an opt-out."""
        text = (
            f"{self._org}: You're unsubscribed and will get no more messages. "
            "Reply START to resubscribe."
        )
        return f"{text} Help: {self.help_contact}" if self.help_contact else text

    def help(self) -> str:
        """The HELP answer: who is texting, how to reach them, how to stop (CTIA)."""
        contact = f" Help: {self.help_contact}." if self.help_contact else ""
        return (
            f"{self._org}: text alerts from {self._org}.{contact} "
            "Msg & data rates may apply. Reply STOP to opt out."
        )


@dataclass(frozen=True, slots=True)
class Reviewed:
    """A reviewed reply, and whether the review lifted its suppression."""

    reply: Reply
    lifted: bool


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """What one inbound SMS did."""

    classification: ReplyClass
    #: True when this MessageSid was handled before: nothing was recorded or changed again.
    duplicate: bool
    #: The text to answer with (TwiML), or None for no answer.
    answer: str | None = None
    reply: Reply | None = None
    #: A suppression was added (or already held) because of this reply.
    suppressed: bool = False
    #: A suppression the phone had made itself was lifted.
    lifted: bool = False


def _is_review(found: Suppression | None) -> bool:
    return found is not None and found.source == SOURCE and found.reason.startswith(REVIEW_PREFIX)


def _is_clear_opt_out(found: Suppression | None) -> bool:
    return found is not None and found.source == SOURCE and not _is_review(found)


class ReplyHandler:
    """Acts on inbound SMS and on a person's review of the unclear ones."""

    def __init__(
        self,
        store: ReplyStore,
        suppressions: SuppressionList,
        texts: ReplyTexts,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._suppressions = suppressions
        self._texts = texts
        self._clock = clock

    def receive(self, message: InboundReply) -> ReplyOutcome:
        """Classify, act, record (once per MessageSid) and say what to answer."""
        found = classify_reply(message.body, message.opt_out_type)
        if message.message_sid and self._store.seen(message.message_sid):
            # Acting again could undo a later request (STOP, START, then STOP replayed).
            return ReplyOutcome(found, duplicate=True)
        number = message.from_number.strip()
        # With Twilio's (Advanced) Opt-Out Management on, Twilio already answered.
        twilio_answered = bool((message.opt_out_type or "").strip())
        answer: str | None = None
        suppressed = lifted = False
        if found.kind in (OPT_OUT, NEEDS_REVIEW):
            answer, suppressed = self._suppress(number, found, twilio_answered), True
        elif found.kind == OPT_IN:
            lifted = self._lift(number)
        elif found.kind == HELP and not twilio_answered:
            answer = self._texts.help()
        # Recorded after acting: a crash in between makes the retry act again (idempotent),
        # never skip the opt-out.
        supporter_id, blast_id = self._store.last_sms_to(number)
        stored = self._store.add(
            NewReply(
                message_sid=message.message_sid or None,
                from_number=number,
                to_number=message.to_number,
                body=message.body,
                kind=found.kind,
                reason=found.reason,
                supporter_id=supporter_id,
                blast_id=blast_id,
                received_at=self._clock(),
            )
        )
        log.info(
            "sms.reply",
            message_sid=message.message_sid,
            kind=found.kind,
            reason=found.reason,
            blast_id=blast_id,
            answered=answer is not None and stored is not None,
        )
        if stored is None:  # a concurrent delivery of the same message won the insert
            return ReplyOutcome(found, duplicate=True)
        return ReplyOutcome(found, False, answer, stored, suppressed, lifted)

    def _suppress(self, number: str, found: ReplyClass, twilio_answered: bool) -> str | None:
        """Suppress at once; the confirmation to send, if one is due."""
        before = self._suppressions.lookup("sms", number)
        if found.kind == OPT_OUT:
            reason = found.reason
        else:
            reason = REVIEW_PREFIX + found.reason.removeprefix("mentions: ")
        added = self._suppressions.add("sms", number, reason=reason[:64], source=SOURCE)
        if found.kind != OPT_OUT or twilio_answered:
            return None
        # One confirmation per opt-out: not again for a second STOP, but yes when a clear
        # request follows an unclear one, or the number was stopped by someone else.
        if added or (before is not None and not _is_clear_opt_out(before)):
            return self._texts.confirmation()
        return None

    def _lift(self, number: str) -> bool:
        found = self._suppressions.lookup("sms", number)
        if found is None:
            return False
        if found.source != SOURCE:
            log.info("sms.start_refused", source=found.source)
            return False
        return self._suppressions.remove("sms", number, source=SOURCE)

    def review(self, reply_id: int, verdict: str, by: str) -> Reviewed:
        """A person's verdict on a reply; ``not_opt_out`` lifts the suppression it caused,
        unless the phone has opted out clearly since (or someone else suppressed it)."""
        if verdict not in VERDICTS:
            raise InputError(f"verdict: one of {', '.join(VERDICTS)}")
        reviewed = self._store.review(reply_id, verdict, by, self._clock())
        if reviewed is None:
            raise InputError(f"no reply {reply_id}")
        lifted = False
        if verdict == VERDICT_NOT_OPT_OUT and reviewed.kind == NEEDS_REVIEW:
            number = reviewed.from_number
            later_opt_out = any(
                r.kind == OPT_OUT and r.id > reviewed.id
                for r in self._store.replies(from_number=number, limit=1000)
            )
            if not later_opt_out and _is_review(self._suppressions.lookup("sms", number)):
                lifted = self._suppressions.remove("sms", number, source=f"review:{by}"[:64])
        log.info("sms.reply_reviewed", reply_id=reply_id, verdict=verdict, lifted=lifted)
        return Reviewed(reviewed, lifted)

    def replies(self, *, needs_review: bool = False, limit: int = 100) -> list[Reply]:
        """Stored replies, newest first; only those awaiting review with ``needs_review``."""
        return self._store.replies(needs_review=needs_review, limit=limit)

    def counts(self, blast_id: str) -> dict[str, int]:
        """Replies answering ``blast_id`` per kind."""
        return self._store.counts(blast_id)


def reply_document(reply: Reply) -> dict[str, Any]:
    """A reply as ``rapid replies list --json`` and ``GET /api/replies`` show it."""
    return {
        "id": reply.id,
        "received_at": reply.received_at.isoformat(),
        "from": reply.from_number,
        "to": reply.to_number,
        "body": reply.body,
        "kind": reply.kind,
        "reason": reply.reason,
        "needs_review": reply.needs_review,
        "supporter_id": reply.supporter_id,
        "blast_id": reply.blast_id,
        "review": None
        if reply.reviewed_at is None
        else {
            "verdict": reply.review_verdict,
            "by": reply.reviewed_by,
            "at": reply.reviewed_at.isoformat(),
        },
    }
