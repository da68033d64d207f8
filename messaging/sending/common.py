"""What the SMS and email senders share: the context they run in and the batch skeleton.

A batch goes: check the blast is live → claim its rows (the durable at-most-once guard) →
expire/suppress at send time → render → pace → send → record every outcome → re-queue what
must wait → complete the blast when nothing is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from messaging import states
from messaging.store.blasts import BlastRecord, BlastStore
from messaging.store.ledger import Claimed, Ledger, Outcome
from messaging.suppression import Channel
from queues.flow.control import BlastControl
from queues.flow.ratelimit import RateLimiter
from queues.names import Names
from queues.sendqueue import SendQueue, SendWork

log = structlog.get_logger(__name__)

#: How long a process trusts its copy of a blast row (the alert does not change; the
#: status is read through BlastControl, which is fresher).
BLAST_CACHE_TTL_S = 5.0
#: How far ahead a batch may reserve send slots, by priority. What cannot go within it is
#: re-queued, so a cancel always finds most of a blast still in our hands, and - because
#: the account's rate is one schedule - lower priorities only ever hold a short stretch of
#: it: an urgent alert's first slot is at most the normal/bulk horizon away (contract §4:
#: urgent overtakes work already queued).
PACING_HORIZON_S = {"urgent": 10.0, "normal": 0.25, "bulk": 0.25}


class SuppressionCheck(Protocol):
    """The send-time suppression check."""

    def suppressed_among(self, channel: Channel, values: list[str]) -> set[str]:
        """Which of ``values`` are suppressed now."""
        ...

    def add(self, channel: Channel, value: str, *, reason: str, source: str) -> bool:
        """Suppress a value (provider said the recipient opted out)."""
        ...


@dataclass
class SendContext:
    """Everything a sender needs, injected."""

    ledger: Ledger
    blasts: BlastStore
    suppressions: SuppressionCheck
    limiter: RateLimiter
    queue: SendQueue
    control: BlastControl
    names: Names
    #: Told each batch's outcomes per state (the fleet's Prometheus counters); best effort.
    on_outcomes: Callable[[str, dict[str, int]], None] = lambda _channel, _counts: None
    _cache: dict[str, tuple[float, BlastRecord]] = field(default_factory=dict)

    def blast(self, blast_id: str) -> BlastRecord | None:
        """The blast row, cached briefly."""
        hit = self._cache.get(blast_id)
        now = time.monotonic()
        if hit and now - hit[0] < BLAST_CACHE_TTL_S:
            return hit[1]
        record = self.blasts.get(blast_id)
        if record is not None:
            self._cache[blast_id] = (now, record)
        return record

    def live_status(self, blast: BlastRecord) -> str:
        """The freshest status we can see: the fleet-wide control copy, else the row's."""
        return self.control.get(blast.blast_id) or blast.status

    def gate(self, blast_id: str, fallback: str) -> bool:
        """True while a blast may still send (checked right before each provider call)."""
        status = self.control.get(blast_id) or fallback
        return status in (states.SENDING_BLAST, states.EXPANDING)


class LateSuppressions:
    """Suppressions that landed after a batch was checked, found without a query per send.

    The batch remembers the fleet's suppression version when it checked; before each
    provider call it compares (a cached Redis read), and only when the version moved does it
    query the list again, once, for the batch's destinations.
    """

    def __init__(self, ctx: SendContext, channel: Channel) -> None:
        self._ctx = ctx
        self._channel: Channel = channel
        self._version = ctx.control.suppressions_version()
        self._destinations: list[str] = []
        self.found: set[str] = set()

    def watch(self, destinations: list[str]) -> None:
        """The destinations still to be sent."""
        self._destinations = destinations

    def refresh(self) -> set[str]:
        """The watched destinations suppressed since the batch's send-time check."""
        version = self._ctx.control.suppressions_version()
        if version != self._version:
            self._version = version
            self.found |= self._ctx.suppressions.suppressed_among(self._channel, self._destinations)
        return self.found

    def stopped(self, destination: str) -> bool:
        """True if ``destination`` was suppressed since the batch's send-time check."""
        return destination in self.refresh()


@dataclass
class BatchReport:
    """What one batch did, for logs and tests."""

    claimed: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    requeued: int = 0
    skipped: str | None = None

    def add(self, state: str, n: int = 1) -> None:
        """Count ``n`` recipients that ended the batch in ``state``."""
        self.by_state[state] = self.by_state.get(state, 0) + n


def start_batch(
    ctx: SendContext, work: SendWork, report: BatchReport
) -> tuple[BlastRecord, list[Claimed]] | None:
    """Check the blast and claim the batch's rows; None when there is nothing to do."""
    blast = ctx.blast(work.blast_id)
    if blast is None:
        report.skipped = "unknown blast"
        log.warning("send.unknown_blast", blast_id=work.blast_id)
        return None
    status = ctx.live_status(blast)
    if status == states.PAUSED:
        report.skipped = "paused"  # rows stay pending; resume re-drives them
        return None
    if status in states.ENDED_STATUSES:
        # Cancel/expire close the blast's open rows; rows a racing batch put back to pending
        # after that are closed here, so nothing stays pending under an ended blast.
        report.skipped = status
        final = states.EXPIRED if status == states.EXPIRED_BLAST else states.CANCELED
        ctx.ledger.close_ids(work.blast_id, work.channel, work.supporter_ids, final)
        return None
    claimed = ctx.ledger.claim(work.blast_id, work.channel, work.supporter_ids)
    report.claimed = len(claimed)
    if not claimed:
        report.skipped = "already claimed"
        return None
    return blast, claimed


def send_time_checks(
    ctx: SendContext,
    blast: BlastRecord,
    channel: Channel,
    claimed: list[Claimed],
    report: BatchReport,
) -> tuple[list[Claimed], list[Outcome]]:
    """Expire past ``send_by`` and suppress what was suppressed since expansion."""
    if blast.alert.expired():
        report.add(states.EXPIRED, len(claimed))
        return [], [
            Outcome(c.supporter_id, states.EXPIRED, error="send_by passed") for c in claimed
        ]
    stopped = ctx.suppressions.suppressed_among(channel, [c.destination for c in claimed])
    outcomes = [
        Outcome(c.supporter_id, states.SUPPRESSED, error="suppressed at send time")
        for c in claimed
        if c.destination in stopped
    ]
    report.add(states.SUPPRESSED, len(outcomes))
    return [c for c in claimed if c.destination not in stopped], outcomes


def finish_batch(
    ctx: SendContext,
    work: SendWork,
    outcomes: list[Outcome],
    retry_ids: Sequence[int],
    retry_delay_s: float,
    report: BatchReport,
    *,
    requeue: bool = True,
) -> None:
    """Record outcomes, put rows that must wait back to pending and re-queue them (unless
    the caller keeps them: ``requeue=False``)."""
    waiting = [Outcome(sid, states.PENDING) for sid in retry_ids]
    # Live counters: claimed rows count as pending until their outcome (see progress.py).
    # Counted before the ledger commits: a reconcile between the two then loses the deltas
    # until the next one, where counting after could make it count them twice.
    deltas: dict[str, int] = {states.PENDING: -len(outcomes)}
    for outcome in outcomes:
        deltas[outcome.state] = deltas.get(outcome.state, 0) + 1
    ctx.control.progress.add(work.blast_id, work.channel, deltas)
    ctx.ledger.record(work.blast_id, work.channel, [*outcomes, *waiting])
    ctx.on_outcomes(work.channel, report.by_state)
    blast = ctx.blast(work.blast_id)
    paused = blast is not None and ctx.live_status(blast) == states.PAUSED
    if retry_ids and requeue and not paused:  # a paused blast's rows are re-driven on resume
        ctx.queue.enqueue(
            SendWork(work.blast_id, work.channel, work.priority, tuple(retry_ids), retry_delay_s)
        )
        report.requeued = len(retry_ids)
    maybe_complete(ctx, work.blast_id)


def maybe_complete(ctx: SendContext, blast_id: str) -> bool:
    """Mark the blast completed once it is expanded and no row owes work."""
    if ctx.blasts.status(blast_id) != (states.SENDING_BLAST, True):
        return False
    if ctx.ledger.has_open(blast_id):
        return False
    done = ctx.blasts.set_status(blast_id, states.COMPLETED, only_from=[states.SENDING_BLAST])
    if done:
        ctx.control.set(blast_id, states.COMPLETED)
        log.info("blast.completed", blast_id=blast_id)
    return done
