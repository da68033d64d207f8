"""The sweep: finds work the queues lost and rows left behind, so every blast ends.

Run periodically by ``rapid scheduler`` (several may run: every action is idempotent).
- A sending blast with pending rows but no finished batch for ``stall_s``: its queue work
  was lost (a crash between ledger commit and enqueue, a dead-lettered batch): re-drive.
  Re-driven work can never send twice: the ledger claim takes each row once.
- Rows stuck in ``sending`` for ``stuck_s``: their worker died between claim and outcome.
  Whether the provider got the request is unknown; re-sending could text someone twice, so
  they end ``failed`` with ``lost_in_flight`` (at most once, see docs/architecture.md).
- A blast past its ``send_by``: open rows end ``expired``, and so does the blast.
- A blast with nothing left owing: ``completed``.
- Deferred SMS whose quiet window has ended: back to pending and onto their lane, in the
  order they were deferred (the senders' rate limits pace them).
- Scheduled blasts whose ``send_at`` has come: released and expanded
  (:mod:`messaging.blasts.scheduled`; the scheduler also asks between sweeps, to be on time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from messaging.blasts.blast_control import BlastActions
from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.blasts.scheduled import ScheduledReleases
from messaging.blasts.winner import WinnerPicker
from messaging.errors import ServiceUnavailableError
from messaging.ports import InFlightView, enqueue_in_batches
from messaging.safety.breakers import Breakers
from messaging.safety.in_doubt import InDoubtReport, InDoubtSettler

log = structlog.get_logger(__name__)

#: No batch of a blast finished for this long while rows are pending: re-drive them.
STALL_S = 120.0
#: A row in ``sending`` this long has lost its worker (a batch never holds a row > ~1 min).
STUCK_S = 600.0
#: Deferred rows released per pass; the next pass (seconds later) takes the next slice.
RELEASE_LIMIT = 20_000


@dataclass
class SweepReport:
    """What one sweep did."""

    redriven: dict[str, int] = field(default_factory=dict)
    lost_in_flight: int = 0
    expired: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    released: int = 0
    reconciled: int = 0
    #: Rows of dead senders settled (SMS found at Twilio or sent again, email lost).
    in_doubt: InDoubtReport = field(default_factory=InDoubtReport)
    #: Blasts a circuit breaker paused.
    paused: list[str] = field(default_factory=list)
    #: Scheduled blasts released (their ``send_at`` came) and handed to expansion.
    scheduled: list[str] = field(default_factory=list)
    #: A/B tests whose winner went to the rest: ``{blast_id: variant}``.
    winners: dict[str, int] = field(default_factory=dict)


class Sweeper:
    """One pass over the blasts that are still sending."""

    def __init__(
        self,
        actions: BlastActions,
        *,
        stall_s: float = STALL_S,
        stuck_s: float = STUCK_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        in_doubt: InDoubtSettler | None = None,
        inflight: InFlightView | None = None,
        breakers: Breakers | None = None,
        scheduled: ScheduledReleases | None = None,
        winners: WinnerPicker | None = None,
    ) -> None:
        self._a = actions
        #: Sends an A/B test's winner to the rest once its test share had its time
        #: (``pick_winner``; None: held rows wait).
        self.winners = winners
        #: Releases scheduled blasts when due (None: they wait; tests of other parts).
        self.scheduled = scheduled
        self._stall_s = stall_s
        self._stuck_s = stuck_s
        #: Settles rows no live sender holds within a minute (both or neither are given;
        #: without them such rows fail after ``stuck_s``).
        self._in_doubt = in_doubt
        self._inflight = inflight
        #: Pauses a sending blast whose recent sends go wrong (contract §13).
        self._breakers = breakers
        #: The wall clock deferrals are released by (injected so tests can move it).
        self._clock = clock

    def run_once(self) -> SweepReport:
        """Sweep every blast that still owes work once."""
        report = SweepReport()
        if self.scheduled is not None:
            report.scheduled = self.scheduled.release_due()
        if self.winners is not None:  # before the release: it queues the rows just picked
            report.winners = self.winners.run_once()
        report.released = self.release_deferred()
        report.reconciled = self.reconcile_live()
        self.settle_in_doubt(report.in_doubt)
        lifecycle = self._a.lifecycle
        for blast_id in self._a.blasts.ids_with_status(BlastStatus.SENDING, expanded=True):
            blast = self._a.blasts.get(blast_id)
            if blast is None:
                continue
            report.lost_in_flight += self._fail_stuck(blast_id)
            if blast.alert.expired():
                if lifecycle.expire(blast_id):
                    report.expired.append(blast_id)
                continue
            if lifecycle.complete(blast_id):
                report.completed.append(blast_id)
                continue
            if self._breakers is not None and self._breakers.check(blast) is not None:
                report.paused.append(blast_id)
                continue
            last = self._a.control.progress.last_progress(blast_id)
            stalled_since = (
                last if last is not None else (blast.expanded_at or blast.created_at).timestamp()
            )
            if time.time() - stalled_since >= self._stall_s:
                queued = self._a.redrive(blast)
                if queued:
                    report.redriven[blast_id] = queued
                    # Give the re-driven work its own window.
                    self._a.control.progress.touch(blast_id)
                    log.warning("sweep.redrive", blast_id=blast_id, rows=queued)
        # Blasts that send nothing while they wait still end at their deadline.
        for status in (BlastStatus.PAUSED, BlastStatus.AWAITING_APPROVAL, BlastStatus.SCHEDULED):
            for blast_id in self._a.blasts.ids_with_status(status):
                blast = self._a.blasts.get(blast_id)
                if blast is not None and blast.alert.expired() and lifecycle.expire(blast_id):
                    report.expired.append(blast_id)
        return report

    def settle_in_doubt(self, report: InDoubtReport) -> int:
        """Settle the rows of senders that died (or gave rows up) mid-batch; see
        :mod:`messaging.safety.in_doubt`. Runs before completion checks, so a blast whose last
        rows were in doubt completes in the same pass."""
        if self._in_doubt is None or self._inflight is None:
            return 0
        try:
            owned = self._inflight.owned()
        except ServiceUnavailableError as exc:  # who holds what is not known yet: next pass
            log.info("sweep.in_doubt_deferred", reason=str(exc))
            return 0
        settled = 0
        for status in (BlastStatus.SENDING, BlastStatus.PAUSED, BlastStatus.EXPANDING):
            for blast_id in self._a.blasts.ids_with_status(status):
                blast = self._a.blasts.get(blast_id)
                if blast is not None:
                    settled += self._in_doubt.settle(blast, owned, report)
        return settled

    def reconcile_live(self) -> int:
        """Replace the live counters of every running blast with the ledger's counts.

        Counters drift only by writes they do not see (webhook statuses, sweeps, a batch
        straddling the last reconcile); one grouped index scan per live blast per pass puts
        them right. Ended blasts are read from the ledger, so they need none.

        Only blasts whose expansion has finished are replaced: a page adds its rows to the
        counters just before its commit, so a snapshot taken between the two would lose
        them (``targeted`` 220 of 660 rows, ``pending`` 0, until the next pass). While a
        blast expands, its counters are based on the ledger when expansion starts and every
        page adds to them; a sender's delta lost to a racing reconcile only overstates
        ``pending``, never hides a row.
        """
        statuses = (
            BlastStatus.EXPANDING,
            BlastStatus.SENDING,
            BlastStatus.PAUSED,
            BlastStatus.AWAITING_APPROVAL,
        )
        live = [b for status in statuses for b in self._a.blasts.ids_with_status(status)]
        expanded = {
            b for status in statuses for b in self._a.blasts.ids_with_status(status, expanded=True)
        }
        for blast_id, by_channel in self._a.blasts.state_counts(sorted(expanded)).items():
            self._a.control.progress.replace(blast_id, by_channel)
        for blast_id in live:
            # The status copy too: a transition whose Redis write failed after its database
            # write leaves the fleet behind until this pass.
            self._a.lifecycle.mirror(blast_id)
        return len(live)

    def release_deferred(self) -> int:
        """Release deferred rows whose quiet window is over; returns how many."""
        released = self._a.ledger.release_due(self._clock(), RELEASE_LIMIT)
        groups: dict[tuple[str, str], list[int]] = {}
        for blast_id, channel, sid in released:
            groups.setdefault((blast_id, channel), []).append(sid)
        for (blast_id, channel), ids in groups.items():
            self._a.control.progress.add(
                blast_id, channel, {RowState.DEFERRED: -len(ids), RowState.PENDING: len(ids)}
            )
            blast = self._a.blasts.get(blast_id)
            priority = blast.priority if blast else "normal"
            enqueue_in_batches(self._a.queue, blast_id, channel, priority, ids)
        if released:
            log.info(
                "sweep.released_deferred", rows=len(released), blasts=len({b for b, _ in groups})
            )
        return len(released)

    def _fail_stuck(self, blast_id: str) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=self._stuck_s)
        failed = self._a.ledger.fail_stuck(blast_id, cutoff)
        if failed:
            log.warning("sweep.lost_in_flight", blast_id=blast_id, rows=failed)
            # The rows are reconciled into the counters by the same pass (reconcile_live).
        return failed
