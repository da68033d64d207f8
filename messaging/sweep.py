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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from messaging import states
from messaging.blast_control import BlastActions
from messaging.store.schema import deliveries
from queues.sendqueue import enqueue_in_batches

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


class Sweeper:
    """One pass over the blasts that are still sending."""

    def __init__(
        self,
        actions: BlastActions,
        *,
        stall_s: float = STALL_S,
        stuck_s: float = STUCK_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._a = actions
        self._stall_s = stall_s
        self._stuck_s = stuck_s
        #: The wall clock deferrals are released by (injected so tests can move it).
        self._clock = clock

    def run_once(self) -> SweepReport:
        """Sweep every sending blast once."""
        report = SweepReport()
        report.released = self.release_deferred()
        report.reconciled = self.reconcile_live()
        for blast_id in self._a.blasts.ids_with_status(states.SENDING_BLAST, expanded=True):
            blast = self._a.blasts.get(blast_id)
            if blast is None:
                continue
            report.lost_in_flight += self._fail_stuck(blast_id)
            if blast.alert.expired():
                self._a.ledger.close_open(
                    blast_id, states.EXPIRED, [states.PENDING, states.DEFERRED]
                )
                if not self._a.ledger.has_open(blast_id):
                    self._a.blasts.set_status(
                        blast_id, states.EXPIRED_BLAST, only_from=[states.SENDING_BLAST]
                    )
                    self._a.control.set(blast_id, states.EXPIRED_BLAST)
                    report.expired.append(blast_id)
                continue
            if not self._a.ledger.has_open(blast_id):
                if self._a.blasts.set_status(
                    blast_id, states.COMPLETED, only_from=[states.SENDING_BLAST]
                ):
                    self._a.control.set(blast_id, states.COMPLETED)
                    report.completed.append(blast_id)
                continue
            last = self._a.control.progress.last_progress(blast_id)
            stalled_since = (
                last if last is not None else (blast.expanded_at or blast.created_at).timestamp()
            )
            if time.time() - stalled_since >= self._stall_s:
                queued = self._a.redrive(blast)
                if queued:
                    report.redriven[blast_id] = queued
                    self._a.control.progress.touch(
                        blast_id
                    )  # give the re-driven work its own window
                    log.warning("sweep.redrive", blast_id=blast_id, rows=queued)
        return report

    def reconcile_live(self) -> int:
        """Replace the live counters of every running blast with the ledger's counts.

        Counters drift only by writes they do not see (webhook statuses, sweeps, a batch
        straddling the last reconcile); one grouped index scan per live blast per pass puts
        them right. Ended blasts are read from the ledger, so they need none.
        """
        live = [
            blast_id
            for status in (states.EXPANDING, states.SENDING_BLAST, states.PAUSED)
            for blast_id in self._a.blasts.ids_with_status(status)
        ]
        for blast_id, by_channel in self._a.blasts.state_counts(live).items():
            self._a.control.progress.replace(blast_id, by_channel)
        return len(live)

    def release_deferred(self) -> int:
        """Release deferred rows whose quiet window is over; returns how many."""
        released = self._a.ledger.release_due(self._clock(), RELEASE_LIMIT)
        groups: dict[tuple[str, str], list[int]] = {}
        for blast_id, channel, sid in released:
            groups.setdefault((blast_id, channel), []).append(sid)
        for (blast_id, channel), ids in groups.items():
            self._a.control.progress.add(
                blast_id, channel, {states.DEFERRED: -len(ids), states.PENDING: len(ids)}
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
        with self._a.ledger.engine.begin() as conn:
            rows = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel.in_(["sms", "email"]),
                    deliveries.c.state == states.SENDING,
                    deliveries.c.updated_at < cutoff,
                )
                .values(
                    state=states.FAILED,
                    error_code="lost_in_flight",
                    error="worker lost between claim and outcome; not re-sent to avoid a duplicate",
                    updated_at=datetime.now(UTC),
                )
                .returning(deliveries.c.supporter_id)
            ).all()
        if rows:
            log.warning("sweep.lost_in_flight", blast_id=blast_id, rows=len(rows))
            # The rows are reconciled into the counters by the same pass (reconcile_live).
        return len(rows)
