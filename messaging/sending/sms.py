"""Sending one batch of SMS: compliance text, sticky senders, fleet pacing, outcomes."""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog

from config.settings import QuietHours
from messaging.blasts.lifecycle import HOLDING_STATUSES, RowState
from messaging.blasts.winner import held_variants
from messaging.compliance.quiet_hours import next_allowed
from messaging.content.links import ShortLinks
from messaging.content.personalize import sms_body, sms_part
from messaging.content.sms_encoding import normalize_for_gsm, segment_info
from messaging.content.templates import RenderError
from messaging.errors import (
    InDoubtSendError,
)
from messaging.ports import (
    BlastRecord,
    Claimed,
    Outcome,
    Reservation,
    SendWork,
    TopicStore,
    enqueue_in_batches,
)
from messaging.providers.base import SmsMessage, SmsTransport
from messaging.sending.common import (
    BLAST_CACHE_TTL_S,
    PACING_HORIZON_S,
    BatchReport,
    LateSuppressions,
    SendContext,
    SendGate,
    Waiting,
    finish_batch,
    send_time_checks,
    start_batch,
)
from messaging.sending.pacing import schedule_intervals_us
from messaging.sending.room import Booking, Room
from messaging.sending.sms_outcome import sms_outcome
from messaging.supporters.normalize import derive_timezone

log = structlog.get_logger(__name__)

#: Twilio's ValidityPeriod bounds, in seconds.
VALIDITY_MIN_S, VALIDITY_MAX_S = 1, 36_000
#: A fleet rate above this is not one a late send can break (see SmsSender._reslot).
UNBINDING_RATE_PER_S = 2_000.0
#: Re-queue delay for recipients whose provider call kept failing transiently.
TRANSIENT_RETRY_DELAY_S = 15.0
#: Pieces are sized to the room (:mod:`messaging.sending.room`) only on horizons up to this:
#: normal and bulk (0.25 s), where eight threads churned claims at a binding rate. Urgent
#: books 10 s ahead: room there comes back a few slots at a time, so a thread would wait
#: seconds per piece holding its unit. With the room on urgent too, a paused and resumed
#: urgent blast stalled in two full-suite runs (2026-12-03; not reproduced since, cause not
#: found), so urgent claims as before: its blasts are rare and short, churn costs it little.
ROOM_HORIZON_MAX_S = 1.0
#: How long one unit of send work may keep its thread, booking the rate's schedule a
#: horizon at a time, before the rest goes back on the lane (so other blasts of the same
#: priority get a thread too).
BATCH_BUDGET_S = 5.0
#: Rows in the first piece of a blast's opening unit (:attr:`SendWork.opening`). A full piece
#: is ~190 rows at 500/s: fifty new blasts' first pieces were ~10 s of the rate, and the
#: fiftieth blast's first text waited for them. Five rows cost one claim, one reservation
#: and a few slots; the blast's next pieces are full ones.
OPENING_PIECE = 5
#: An opening piece may book this many horizons ahead: the schedule is booked up to one
#: horizon ahead by the blasts already sending, and an opening that found no room there lost
#: its turn (its rows went to the back of the lane: a first text seconds late).
OPENING_HORIZONS = 2


@dataclass(frozen=True, slots=True)
class SmsConfig:
    """What the SMS sender needs from the settings."""

    org_name: str
    from_numbers: tuple[str, ...] = ()
    messaging_service_sid: str | None = None
    status_callback_url: str | None = None
    rate_per_sender_per_s: float = 1.0
    rate_account_per_s: float = 100.0
    #: None only in tests that are about something else; production always has a window.
    quiet_hours: QuietHours | None = None

    def __post_init__(self) -> None:
        if not self.from_numbers and not self.messaging_service_sid:
            raise ValueError("SMS needs TWILIO_FROM_NUMBERS or TWILIO_MESSAGING_SERVICE_SID")

    @property
    def effective_rate_per_s(self) -> float:
        """The fastest the fleet may send: the account rate, or the pool's if that is lower."""
        if self.messaging_service_sid:
            return self.rate_account_per_s
        return min(self.rate_account_per_s, self.rate_per_sender_per_s * len(self.from_numbers))

    def sender_for(self, destination: str) -> str | None:
        """The sticky From number of a destination: the same person always hears from the
        same number (carriers and people both trust a consistent sender)."""
        if self.messaging_service_sid:
            return None
        index = zlib.crc32(destination.encode()) % len(self.from_numbers)
        return self.from_numbers[index]


def first_contact_text(org_name: str, body: str) -> str:
    """The first SMS the org sends anyone: identify ourselves and say how to stop (CTIA)."""
    return f"{org_name}: {body}\nReply STOP to opt out"


class SmsSender:
    """Sends SMS batches through an :class:`SmsTransport`."""

    def __init__(
        self,
        ctx: SendContext,
        transport: SmsTransport,
        config: SmsConfig,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        topics: TopicStore | None = None,
        links: ShortLinks | None = None,
    ) -> None:
        self._ctx = ctx
        self._transport = transport
        self._config = config
        #: The wall clock quiet hours are judged by (injected so tests can set the hour).
        self._clock = clock
        #: Where topics with a quiet window of their own say so; None: the fleet's for all.
        self._topics = topics
        self._windows: dict[str, tuple[float, QuietHours | None]] = {}
        #: Tracked short links (contract §7); None: bodies keep their URLs (no key).
        self._links = links
        #: The room the account's schedule has left, as this process sees it, per priority
        #: (each has its horizon): pieces are sized to it while the rate binds.
        self._rooms = {priority: Room() for priority in PACING_HORIZON_S}

    def process(self, work: SendWork) -> BatchReport:
        """Handle one unit of SMS send work.

        A piece at a time: claim what the rate can send within the priority's horizon,
        send it at its slots, record it, and go on with the rest, until the work is done or
        :data:`BATCH_BUDGET_S` is spent (the rest is re-queued). Rows are claimed just
        before their slots, so a pause or cancel finds the rest unclaimed, and the thread
        keeps the schedule booked instead of leaving holes while re-queued work travels
        through the lane (at 200 ms a call, re-queueing cost a fifth of the rate).
        """
        deadline = time.monotonic() + BATCH_BUDGET_S
        total = BatchReport()
        while True:
            report = BatchReport()
            booking = self._book(work)
            if isinstance(booking, _GaveUp):
                # A new blast's opening waited for a thread while this one waited for room:
                # it gets one now, not after this unit's next piece.
                self._requeue(work, work.supporter_ids, 0.0, total)
                return total
            try:
                piece, rest = self._within_reach(work, booking)
                waiting = self._process_piece(piece, report, booking)
            finally:
                if booking is not None:
                    booking.settle()
            total.claimed += report.claimed
            for state, n in report.by_state.items():
                total.add(state, n)
            for reason, n in report.waiting.items():
                total.wait(reason, n)
            if report.skipped is not None:
                total.skipped = report.skipped
                # Paused: rows stay pending until resume re-drives them. Ended or taken by
                # another worker: the rest goes back to the lane, where it is closed or
                # claimed by whoever may.
                if rest and report.skipped not in (*HOLDING_STATUSES, "unknown blast"):
                    self._requeue(work, rest, 0.0, total)
                return total
            if report.waiting.get(Waiting.TRANSIENT):
                self._requeue(work, waiting, TRANSIENT_RETRY_DELAY_S, total)
                waiting = []
            ids = (*waiting, *rest)
            if not ids:
                return total
            # Other blasts of this priority waiting for a thread: take turns, a piece each
            # (the rest queues behind them, issue #21); alone, keep the thread for the budget.
            if time.monotonic() > deadline or self._ctx.queue.others_waiting(work):
                self._requeue(work, ids, 0.0, total)
                return total
            if waiting and not report.by_state.get(RowState.SENT):
                # The schedule is booked a horizon ahead by other work: let it move on.
                time.sleep(PACING_HORIZON_S[work.priority])
            work = replace(work, supporter_ids=ids, delay_s=0.0, opening=False)

    def _requeue(
        self, work: SendWork, ids: Sequence[int], delay_s: float, report: BatchReport
    ) -> None:
        if ids:
            self._ctx.queue.enqueue(
                replace(work, supporter_ids=tuple(ids), delay_s=delay_s, opening=False)
            )
            report.requeued += len(ids)

    def _binding(self) -> bool:
        """Whether the fleet's rate is one this process's sends can fill (see
        :data:`UNBINDING_RATE_PER_S`)."""
        return self._config.effective_rate_per_s <= UNBINDING_RATE_PER_S

    def _book(self, work: SendWork) -> Booking | _GaveUp | None:
        """Room on the account's schedule for this thread's next piece, waiting for it (None:
        the rate does not bind here, claim at once), unless a new blast's opening waits for a
        thread meanwhile (an opening never gives up: it is the unit that waits). Only for
        an opening: giving turns up unsent cost 50 blasts their even shares (0.89 -> 0.35)."""
        config = self._config
        if not self._binding() or not _sized_to_room(work.priority):
            return None
        horizon_s = self._horizon_s(work)
        want = min(self._piece_max(work), len(work.supporter_ids))
        main_us, _ = schedule_intervals_us(config.rate_account_per_s, express_share=True)
        queue = self._ctx.queue
        booking = self._rooms[work.priority].take(
            max(1, want),
            main_us / 1e6,
            horizon_s,
            give_up=None if work.opening else lambda: queue.openings_waiting(work),
        )
        return _GAVE_UP if booking is None else booking

    def _process_piece(
        self, work: SendWork, report: BatchReport, booking: Booking | None
    ) -> list[int]:
        """Send one piece; returns the ids that must wait (back to pending, not re-queued)."""
        ctx = self._ctx
        started = start_batch(ctx, work, report)
        if started is None:
            return []
        blast, claimed = started
        try:
            return self._send_claimed(work, blast, claimed, report, booking)
        finally:
            # Rows without an outcome (in doubt, or a crash mid-piece) now have no live
            # owner: the sweep settles them by asking Twilio, within a minute.
            ctx.inflight.release(work.blast_id, work.channel, work.supporter_ids)

    def _send_claimed(
        self,
        work: SendWork,
        blast: BlastRecord,
        claimed: list[Claimed],
        report: BatchReport,
        booking: Booking | None,
    ) -> list[int]:
        ctx, config = self._ctx, self._config
        alert = blast.alert
        assert alert.sms is not None
        late = LateSuppressions(ctx, "sms")  # before the check: a STOP after it moves the version
        to_send, outcomes = send_time_checks(ctx, blast, "sms", claimed, report)
        to_send, deferred = self._quiet_hours(to_send, blast, report)
        outcomes += deferred

        firsts = ctx.ledger.claim_first_contact(
            [c.supporter_id for c in to_send if c.first_sms_at is None]
        )
        validity = _validity_s(alert.send_by)
        messages: list[tuple[int, SmsMessage, int]] = []
        # pick_winner: rows held for the winner carry its variant on the ledger.
        store = self._links.store if self._links is not None else None
        held = held_variants(store, alert, blast.blast_id, "sms", [c.supporter_id for c in to_send])
        for c in to_send:
            try:
                body = sms_body(
                    alert, c.supporter_id, c.fields, self._links, held.get(c.supporter_id)
                )
            except RenderError as exc:
                outcomes.append(
                    Outcome(c.supporter_id, RowState.FAILED, error_code="render", error=str(exc))
                )
                report.add(RowState.FAILED)
                continue
            if c.supporter_id in firsts:
                body = first_contact_text(config.org_name, body)
            body = normalize_for_gsm(body)
            message = SmsMessage(
                to=c.destination,
                body=body,
                from_number=config.sender_for(c.destination),
                messaging_service_sid=config.messaging_service_sid,
                status_callback=config.status_callback_url,
                validity_period_s=validity,
                media_url=sms_part(alert, c.supporter_id, held.get(c.supporter_id)).media_url,
            )
            messages.append((c.supporter_id, message, segment_info(body).segments))

        horizon_s = self._horizon_s(work)
        # A blast's opening sends its first text on the express schedule when that is the
        # earlier one: the main one is booked up to a horizon ahead by the blasts already
        # sending (alert to first send, issue #21).
        reservation = self._reserve([m for _, m, _ in messages], horizon_s, express=work.opening)
        if booking is not None:  # what it did not use is room for the next piece
            booking.settle(reservation.granted, reservation.booked_until_s)
        granted = messages[: reservation.granted]
        waiting = [sid for sid, _, _ in messages[reservation.granted :]]
        late.watch([m.to for _, m, _ in granted])
        gate = SendGate(ctx, blast, late)
        try:
            results = self._transport.send_many(
                [
                    replace(m, send_at_s=slot)
                    for (_, m, _), slot in zip(granted, reservation.slots_s, strict=True)
                ],
                gate=lambda m: gate(m.to),
                reslot=self._reslot(horizon_s),
            )
        except Exception as exc:
            # Which of them Twilio has is unknown: leave them to the sweep, settle the rest.
            log.error("sms.send_crashed", error=str(exc)[:300], error_type=type(exc).__name__)
            results = [InDoubtSendError(f"{type(exc).__name__}: {exc}"[:300])] * len(granted)
        status_now = ctx.live_status(blast)
        for (sid, message, segments), result in zip(granted, results, strict=True):
            try:
                outcome = sms_outcome(
                    ctx, sid, message, segments, result, report, status_now, late.found
                )
            except Exception as exc:  # one odd result never costs the batch its receipts
                log.error("sms.outcome_failed", error=str(exc)[:300], error_type=type(exc).__name__)
                report.wait(Waiting.IN_DOUBT)
                continue
            if isinstance(outcome, Outcome):
                outcomes.append(outcome)
            elif outcome is not Waiting.IN_DOUBT:  # in doubt stays `sending`, for the sweep
                waiting.append(sid)
        sent = {o.supporter_id for o in outcomes if o.state == RowState.SENT}
        ctx.ledger.release_first_contact(sorted(firsts - sent))
        finish_batch(ctx, work, outcomes, waiting, 0.0, report, requeue=False)
        log.info(
            "sms.batch",
            blast_id=work.blast_id,
            claimed=report.claimed,
            outcomes=report.by_state,
            waiting=len(waiting),
        )
        return waiting

    def _reach(self, horizon_s: float) -> int:
        """The most rows one piece claims: what the rate sends within the horizon, and half
        again (some rows fail the send-time checks)."""
        return max(1, math.ceil(self._config.effective_rate_per_s * horizon_s * 1.5))

    def _horizon_s(self, work: SendWork) -> float:
        """How far ahead ``work``'s next piece may book the schedule (see
        :data:`OPENING_HORIZONS`; urgent's 10 s needs no more)."""
        horizon_s = PACING_HORIZON_S[work.priority]
        if work.opening and _sized_to_room(work.priority):
            return horizon_s * OPENING_HORIZONS
        return horizon_s

    def _piece_max(self, work: SendWork) -> int:
        """The most rows the next piece of ``work`` claims: a few for a blast's opening
        (:data:`OPENING_PIECE`), else what the rate reaches within the horizon."""
        reach = self._reach(PACING_HORIZON_S[work.priority])
        return min(reach, OPENING_PIECE) if work.opening else reach

    def _within_reach(
        self, work: SendWork, booking: Booking | None
    ) -> tuple[SendWork, tuple[int, ...]]:
        """The piece the rate could send within the batch's horizon (the room booked for
        it), and the rest (claimed later, so rows are never claimed only to be put back)."""
        reach = self._piece_max(work)
        if booking is not None:
            reach = min(reach, booking.size)
        ids = tuple(work.supporter_ids)
        return replace(work, supporter_ids=ids[:reach]), ids[reach:]

    def _reslot(self, horizon_s: float) -> Callable[[SmsMessage], float | None] | None:
        """How a late send gets a new slot (None: it goes now).

        Lateness only matters while the rate binds: at a few hundred messages a second per
        key a bunch of late sends can break a one-second window. Far above what one process
        sends (a short code at thousands a second), a late send cannot, and asking Redis
        again for every one of them under load would only add work: it goes now, without
        leaving the provider's event loop.
        """
        if not self._binding():
            return None
        return lambda m: next(iter(self._reserve([m], horizon_s).slots_s), None)

    def _reserve(
        self, messages: list[SmsMessage], horizon_s: float, *, express: bool = False
    ) -> Reservation:
        """Send times for ``messages`` under the account rate and each sender number's rate."""
        ctx, config = self._ctx, self._config
        per_sender = (
            [ctx.names.redis_key("rate", "sms-sender", m.from_number or "") for m in messages]
            if not config.messaging_service_sid  # Twilio picks the number: limit by account
            else ()
        )
        return ctx.limiter.reserve(
            ctx.names.redis_key("rate", "sms-account"),
            config.rate_account_per_s,
            per_send_keys=per_sender,
            n=len(messages),
            per_send_rate_per_s=config.rate_per_sender_per_s,
            horizon_s=horizon_s,
            express_share=True,
            express=express,
        )

    def _window(self, topic: str) -> QuietHours | None:
        """The blast's quiet window: its topic's own (read every few seconds), else the
        fleet's."""
        if self._topics is None or self._config.quiet_hours is None:
            return self._config.quiet_hours
        now = time.monotonic()
        hit = self._windows.get(topic)
        if hit is None or now - hit[0] >= BLAST_CACHE_TTL_S:
            hit = (now, self._topics.quiet_hours(topic))
            self._windows[topic] = hit
        return hit[1] or self._config.quiet_hours

    def _quiet_hours(
        self, claimed: list[Claimed], blast: BlastRecord, report: BatchReport
    ) -> tuple[list[Claimed], list[Outcome]]:
        """Hold recipients for whom it is quiet hours now: their SMS waits for the window's
        end (``deferred``), or ends ``expired`` when that is past ``send_by``; with
        ``quiet_hours_fallback`` those the blast's email reaches end ``fallback`` instead."""
        window = self._window(blast.topic)
        if window is None:
            return claimed, []
        send_by = blast.alert.send_by
        now = self._clock()
        go: list[Claimed] = []
        quiet: dict[int, datetime] = {}
        # One answer per time zone per batch: a batch's recipients share a handful of zones.
        by_zone: dict[str | None, datetime | None] = {}
        for c in claimed:
            tz = c.fields.get("timezone") or derive_timezone(
                c.destination, c.fields.get("postal_code")
            )
            zone = tz or None
            if zone not in by_zone:
                by_zone[zone] = next_allowed(now, zone, window)
            until = by_zone[zone]
            if until is None:
                go.append(c)
            else:
                quiet[c.supporter_id] = until
        emailed = self._fall_back(blast, list(quiet)) if quiet else set()
        held: list[Outcome] = []
        for sid, until in quiet.items():
            if sid in emailed:
                held.append(Outcome(sid, RowState.FALLBACK, error="quiet hours: sent by email"))
                report.add(RowState.FALLBACK)
            elif send_by is not None and until >= send_by:
                held.append(Outcome(sid, RowState.EXPIRED, error="quiet hours last past send_by"))
                report.add(RowState.EXPIRED)
            else:
                held.append(Outcome(sid, RowState.DEFERRED, deferred_until=until))
                report.add(RowState.DEFERRED)
        return go, held

    def _fall_back(self, blast: BlastRecord, supporter_ids: list[int]) -> set[int]:
        """``quiet_hours_fallback: "email"``: which of these the blast's email reaches now
        (new email rows are written and queued here); none without the fallback."""
        if not blast.alert.falls_back_to_email:
            return set()
        ctx = self._ctx
        reached, added = ctx.ledger.email_fallback(blast.blast_id, supporter_ids)
        if added:
            # Counted after the commit (rows a reconcile already read are counted twice
            # until the next one): the batch cannot know the new rows before writing them.
            ctx.control.progress.add(blast.blast_id, "email", {RowState.PENDING: len(added)})
            enqueue_in_batches(ctx.queue, blast.blast_id, "email", blast.priority, added)
        return reached


class _GaveUp:
    """The thread gave its unit up while waiting for room (see :meth:`SmsSender._book`)."""


_GAVE_UP = _GaveUp()


def _sized_to_room(priority: str) -> bool:
    """Whether pieces of ``priority`` are sized to the room (see :data:`ROOM_HORIZON_MAX_S`)."""
    return PACING_HORIZON_S[priority] <= ROOM_HORIZON_MAX_S


def _validity_s(send_by: datetime | None) -> int | None:
    """Twilio ValidityPeriod so that nothing is delivered after ``send_by``."""
    if send_by is None:
        return None
    left = int((send_by - datetime.now(UTC)).total_seconds())
    return max(VALIDITY_MIN_S, min(VALIDITY_MAX_S, left))
