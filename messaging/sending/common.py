"""What the SMS and email senders share: the context they run in and the batch skeleton.

A batch goes: check the blast is live → claim its rows (the durable at-most-once guard) →
expire/suppress at send time → render → pace → send → record every outcome → re-queue what
must wait → complete the blast when nothing is left.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import structlog

from config.names import Names
from messaging.blasts.lifecycle import (
    ENDED_STATUSES,
    HOLDING_STATUSES,
    SENDABLE_STATUSES,
    BlastLifecycle,
    BlastStatus,
    RowState,
)
from messaging.compliance.suppression import Channel
from messaging.memory import InMemoryInFlight
from messaging.ports import (
    TEMPLATE_FIELDS,
    BlastControl,
    BlastRecord,
    BlastStore,
    Claimed,
    InFlight,
    LedgerStore,
    Outcome,
    RateLimiter,
    SendQueue,
    SendWork,
)

log = structlog.get_logger(__name__)

#: How long a process trusts its copy of a blast row (the alert does not change; the
#: status is read through BlastControl, which is fresher).
BLAST_CACHE_TTL_S = 5.0
#: How far ahead a batch may reserve send slots, by priority. What cannot go within it is
#: re-queued, so a cancel always finds most of a blast still in our hands, and - because
#: the account's rate is one schedule - lower priorities only ever hold a short stretch of
#: it: an urgent alert's first slot is at most the normal/bulk horizon away (contract §4:
#: urgent overtakes work already queued), and a new blast's first text goes ahead of that
#: stretch on the express schedule (``messaging.sending.pacing.EXPRESS_PER_RATE``).
PACING_HORIZON_S = {"urgent": 10.0, "normal": 0.25, "bulk": 0.25}
#: A process reports a provider's refusal of our credentials at most this often per channel.
AUTH_REPORT_EVERY_S = 2.0


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

    ledger: LedgerStore
    blasts: BlastStore
    suppressions: SuppressionCheck
    limiter: RateLimiter
    queue: SendQueue
    control: BlastControl
    names: Names
    #: Told each batch's outcomes per state (the fleet's Prometheus counters); best effort.
    on_outcomes: Callable[[str, dict[str, int]], None] = lambda _channel, _counts: None
    #: Where this process announces the rows it holds between claim and outcome, so the
    #: sweep can settle a dead worker's rows within a minute (queues/flow/inflight.py).
    inflight: InFlight = field(default_factory=InMemoryInFlight)
    #: Told ``(channel, one-line detail)`` when a provider refuses our credentials: pauses
    #: that channel's running blasts fleet-wide (``pause_reason: provider_auth``).
    on_provider_auth: Callable[[str, str], object] = lambda _channel, _detail: None
    _cache: dict[str, tuple[float, BlastRecord]] = field(default_factory=dict)
    _auth_reported: dict[str, float] = field(default_factory=dict)

    def blast(self, blast_id: str, *, fresh: bool = False) -> BlastRecord | None:
        """The blast row, cached briefly (``fresh``: read now, and cache that)."""
        hit = None if fresh else self._cache.get(blast_id)
        now = time.monotonic()
        if hit and now - hit[0] < BLAST_CACHE_TTL_S:
            return hit[1]
        record = self.blasts.get(blast_id)
        if record is not None:
            self._cache[blast_id] = (now, record)
        return record

    def live_status(self, blast: BlastRecord) -> str:
        """The freshest status we can see: the fleet-wide control copy, else the row's.

        A row that has ended wins over the copy: the database is written first, and an
        ended blast never starts again, so a copy a failed mirror left behind cannot
        reopen it."""
        if blast.ended:
            return blast.status
        status = self.control.get(blast.blast_id) or blast.status
        if status in HOLDING_STATUSES:
            # A hold leaves work waiting for the transition that ends it (resume, approve,
            # release), and that transition publishes its status before it re-drives the
            # held rows. This process's copies lag (the fleet's status a quarter second,
            # the row longer): work re-driven by a resume a moment after the pause met
            # "paused" here and waited, pending, for the sweep. So a hold is confirmed at
            # the source; blasts on hold are few, the extra read is theirs alone.
            fresh = self.control.get(blast.blast_id, fresh=True)
            if fresh is None:
                record = self.blast(blast.blast_id, fresh=True)
                fresh = record.status if record is not None else status
            status = fresh
        return status

    @property
    def lifecycle(self) -> BlastLifecycle:
        """The blast transitions senders make (completion), on this context's parts."""
        return BlastLifecycle(self.blasts, self.ledger, self.control, self.queue)

    def provider_refused(self, channel: str, error: Exception) -> None:
        """A provider refused our credentials: report it fleet-wide, at most once per
        :data:`AUTH_REPORT_EVERY_S` per channel from this process (every batch in flight
        sees the same 401)."""
        now = time.monotonic()
        if now - self._auth_reported.get(channel, -AUTH_REPORT_EVERY_S) < AUTH_REPORT_EVERY_S:
            return
        self._auth_reported[channel] = now
        detail = " ".join(str(error).split())[:200]
        log.error("provider.auth_refused", channel=channel, detail=detail)
        try:
            self.on_provider_auth(channel, detail)
        except Exception as exc:  # the next refused batch tries again
            self._auth_reported.pop(channel, None)
            log.error("provider.auth_pause_failed", channel=channel, error=str(exc)[:200])

    def gate(self, blast_id: str, fallback: str) -> bool:
        """True while a blast may still send (checked right before each provider call)."""
        status = self.control.get(blast_id) or fallback
        return status in SENDABLE_STATUSES


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


class SendGate:
    """Whether each send of a batch may still go (the blast live, its destination not
    STOPped since the batch's check), asked right before each provider call.

    Asked on a provider's event loop, it never waits for Redis or the database there: one
    blocking read holds up every send of the process, which then leave late and take fresh
    slots (holes in the rate's schedule). It answers from its last look and has a worker
    thread look again once that look is :data:`GATE_REFRESH_S` old, so an answer is at most
    that much staler than the kill switch's own cache. Asked anywhere else (the in-memory
    transport, tests), it looks at once.
    """

    def __init__(self, ctx: SendContext, blast: BlastRecord, late: LateSuppressions) -> None:
        self._ctx, self._blast, self._late = ctx, blast, late
        self._lock = threading.Lock()
        self._refreshing = False
        self._live, self._at = True, 0.0
        self._stopped: frozenset[str] = frozenset()
        self._refresh()  # a first look that fails leaves the gate closed, as later ones do

    def _look(self) -> None:
        live = self._ctx.gate(self._blast.blast_id, self._blast.status)
        stopped = frozenset(self._late.refresh())
        self._live, self._stopped, self._at = live, stopped, time.monotonic()

    def _refresh(self) -> None:
        try:
            self._look()
        except Exception as exc:
            # Closed until a look succeeds: a kill switch we cannot read may have been
            # pulled (the held sends go back to pending, as when the read failed on the loop).
            if self._live:
                # error_type makes a Redis or database outage one `outage` line for the
                # process (config/outages.py), not one line per sender thread's gate.
                log.warning(
                    "send.gate_refresh_failed",
                    error=str(exc)[:200],
                    error_type=type(exc).__name__,
                )
            self._live = False
        finally:
            with self._lock:
                self._refreshing = False

    def __call__(self, destination: str) -> bool:
        """True while a send to ``destination`` may go."""
        if asyncio_running():
            if time.monotonic() - self._at >= GATE_REFRESH_S:
                with self._lock:
                    start, self._refreshing = not self._refreshing, True
                if start:
                    _gate_pool().submit(self._refresh)
        else:
            self._look()
        return self._live and destination not in self._stopped


def asyncio_running() -> bool:
    """True on a thread that runs an event loop (a provider's I/O thread)."""
    return asyncio._get_running_loop() is not None


#: How old a :class:`SendGate`'s look at the kill switch and STOPs may get before a send on
#: an event loop has it looked at again (the switch's own cache is 250 ms).
GATE_REFRESH_S = 0.05
_GATE_POOL: list[ThreadPoolExecutor] = []


def _gate_pool() -> ThreadPoolExecutor:
    """The process's gate lookers (made on first use: nothing starts at import)."""
    if not _GATE_POOL:
        _GATE_POOL.append(ThreadPoolExecutor(2, thread_name_prefix="send-gate"))
    return _GATE_POOL[0]


class Waiting(StrEnum):
    """Why a claimed recipient left a batch without an outcome in the ledger."""

    #: The gate closed before its provider call (the blast was paused): back to pending,
    #: re-driven on resume.
    HELD = "held"
    #: The provider said try later (HTTP 429, 5xx, a timeout): back to pending, re-queued.
    TRANSIENT = "transient"
    #: The provider refused our credentials: back to pending; the channel's blasts pause.
    AUTH = "auth"
    #: The provider may have it: left ``sending`` for the sweep, which asks the provider.
    IN_DOUBT = "in_doubt"


@dataclass
class BatchReport:
    """What one batch did, for logs and tests: ledger outcomes, and rows left waiting."""

    claimed: int = 0
    #: Recipients per ledger state they ended the batch in.
    by_state: dict[RowState, int] = field(default_factory=dict)
    #: Recipients per reason they were left without an outcome.
    waiting: dict[Waiting, int] = field(default_factory=dict)
    requeued: int = 0
    skipped: str | None = None

    def add(self, state: RowState, n: int = 1) -> None:
        """Count ``n`` recipients that ended the batch in ``state``."""
        if n:
            self.by_state[state] = self.by_state.get(state, 0) + n

    def wait(self, reason: Waiting, n: int = 1) -> None:
        """Count ``n`` recipients left without an outcome, for ``reason``."""
        if n:
            self.waiting[reason] = self.waiting.get(reason, 0) + n


def start_batch(
    ctx: SendContext,
    work: SendWork,
    report: BatchReport,
    fields: Sequence[str] = TEMPLATE_FIELDS,
) -> tuple[BlastRecord, list[Claimed]] | None:
    """Check the blast and claim the batch's rows, each with the supporter's ``fields``
    (those its templates read); None when there is nothing to do."""
    blast = ctx.blast(work.blast_id)
    if blast is None:
        report.skipped = "unknown blast"
        log.warning("send.unknown_blast", blast_id=work.blast_id)
        return None
    status = ctx.live_status(blast)
    if status in HOLDING_STATUSES:
        # Rows stay pending; the transition that lets the blast send (resume, approve,
        # release) re-drives them.
        report.skipped = status
        return None
    if status in ENDED_STATUSES:
        # Cancel/expire close the blast's open rows; rows a racing batch put back to pending
        # after that are closed here, so nothing stays pending under an ended blast.
        report.skipped = status
        final = RowState.EXPIRED if status == BlastStatus.EXPIRED else RowState.CANCELED
        ctx.ledger.close_ids(work.blast_id, work.channel, work.supporter_ids, final)
        return None
    # Announced before the claim, given up by the sender when the batch ends: a live
    # sender's claimed rows always have an owner the sweep can see.
    ctx.inflight.hold(work.blast_id, work.channel, work.supporter_ids)
    try:
        claimed = ctx.ledger.claim(work.blast_id, work.channel, work.supporter_ids, fields)
    except BaseException:
        ctx.inflight.release(work.blast_id, work.channel, work.supporter_ids)
        raise
    report.claimed = len(claimed)
    if not claimed:
        ctx.inflight.release(work.blast_id, work.channel, work.supporter_ids)
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
        report.add(RowState.EXPIRED, len(claimed))
        return [], [
            Outcome(c.supporter_id, RowState.EXPIRED, error="send_by passed") for c in claimed
        ]
    stopped = ctx.suppressions.suppressed_among(channel, [c.destination for c in claimed])
    outcomes = [
        Outcome(c.supporter_id, RowState.SUPPRESSED, error="suppressed at send time")
        for c in claimed
        if c.destination in stopped
    ]
    report.add(RowState.SUPPRESSED, len(outcomes))
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
    waiting = [Outcome(sid, RowState.PENDING) for sid in retry_ids]
    # Live counters: claimed rows count as pending until their outcome (see progress.py).
    # Counted before the ledger commits: a reconcile between the two then loses the deltas
    # until the next one, where counting after could make it count them twice.
    deltas: dict[str, int] = {RowState.PENDING: -len(outcomes)}
    for outcome in outcomes:
        deltas[outcome.state] = deltas.get(outcome.state, 0) + 1
    ctx.control.progress.add(work.blast_id, work.channel, deltas)
    ctx.ledger.record(work.blast_id, work.channel, [*outcomes, *waiting])
    ctx.on_outcomes(work.channel, {str(s): n for s, n in report.by_state.items()})
    blast = ctx.blast(work.blast_id)
    held = blast is not None and ctx.live_status(blast) in HOLDING_STATUSES
    if retry_ids and requeue and not held:  # re-driven by resume / approve instead
        ctx.queue.enqueue(
            SendWork(work.blast_id, work.channel, work.priority, tuple(retry_ids), retry_delay_s)
        )
        report.requeued = len(retry_ids)
    maybe_complete(ctx, work.blast_id)


def maybe_complete(ctx: SendContext, blast_id: str) -> bool:
    """Mark the blast completed once it is expanded and no row owes work."""
    # After every batch: the cached row (expanded is for good) and the fleet's status copy
    # spare a database read per batch; when either is not sure, the store decides.
    blast = ctx.blast(blast_id)
    seen = (
        blast is not None
        and blast.expanded_at is not None
        and ctx.live_status(blast) == BlastStatus.SENDING
    )
    return ctx.lifecycle.complete(blast_id, seen_sending=seen)
