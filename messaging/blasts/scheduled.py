"""Scheduled sends (contract §4 ``send_at``): a blast waits ``scheduled`` until it is due.

Intake records a blast whose ``send_at`` is ahead as ``scheduled`` and expands nothing.
``rapid scheduler`` (the one holding the lease) asks :meth:`ScheduledReleases.release_due`
on every wake-up, and wakes up for the next ``send_at`` rather than at its sweep interval,
so a blast is released within a second of its time: ``scheduled → expanding`` through
:class:`~messaging.blasts.lifecycle.BlastLifecycle` (a conditional update, so a blast canceled
meanwhile stays canceled), then expanded by the same code intake uses. Until the release a
cancel ends it with nothing written; ``send_by`` passing first expires it (the sweep).

A scheduler that dies mid-expansion leaves the blast ``expanding``; the next leader finds it
(released by schedule, not expanded, untouched for :data:`ORPHAN_S`) and resumes it from
its cursor: expansion writes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import structlog

from messaging.blasts.lifecycle import BlastLifecycle, BlastStatus
from messaging.ports import BlastRecord, BlastStore

log = structlog.get_logger(__name__)

#: A released blast whose expansion has not moved for this long lost its scheduler (an
#: expansion page commits, and touches the blast, every fraction of a second).
ORPHAN_S: Final = 30.0
#: Longest the scheduler sleeps between looks for new scheduled blasts, in seconds: one
#: published for "in two seconds" is seen within this, and released on time after that.
POLL_S: Final = 0.5


class ScheduledReleases:
    """Releases scheduled blasts when due and hands them to ``expand``.

    ``expand`` may run the expansion elsewhere (the scheduler uses a worker thread, so a
    million-recipient expansion does not hold up its sweeps); :meth:`running` tells this
    object which blasts are still being expanded, so it never starts one twice.
    """

    def __init__(
        self,
        blasts: BlastStore,
        lifecycle: BlastLifecycle,
        expand: Callable[[BlastRecord], object],
        *,
        running: Callable[[], set[str]] = set,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._blasts = blasts
        self._lifecycle = lifecycle
        self._expand = expand
        self._running = running
        self._clock = clock

    def _scheduled(self) -> list[BlastRecord]:
        found = (self._blasts.get(i) for i in self._blasts.ids_with_status(BlastStatus.SCHEDULED))
        return [b for b in found if b is not None]

    def release_due(self) -> list[str]:
        """Release every scheduled blast whose ``send_at`` has come (and resume orphaned
        releases); returns the ids handed to ``expand``."""
        now = self._clock()
        started: list[str] = []
        for blast in self._scheduled():
            if blast.send_at is None or blast.send_at > now:
                continue
            if blast.alert.expired(now):
                continue  # past send_by as well: the sweep expires it
            if self._lifecycle.release(blast.blast_id):
                late_s = (now - blast.send_at).total_seconds()
                log.info("blast.schedule_released", blast_id=blast.blast_id, late_s=late_s)
                self._expand(blast)
                started.append(blast.blast_id)
        started += self._resume_orphans(now)
        return started

    def _resume_orphans(self, now: datetime) -> list[str]:
        running = self._running()
        resumed = []
        for blast_id in self._blasts.ids_with_status(BlastStatus.EXPANDING):
            if blast_id in running:
                continue
            blast = self._blasts.get(blast_id)
            if (
                blast is None
                or blast.send_at is None  # intake's own: its queue message comes back
                or blast.expanded_at is not None
                or now - blast.updated_at < timedelta(seconds=ORPHAN_S)
            ):
                continue
            log.warning("blast.schedule_resumed", blast_id=blast_id, cursor=blast.expansion_cursor)
            self._expand(blast)
            resumed.append(blast_id)
        return resumed

    def seconds_until_due(self, at_most: float) -> float:
        """How long the scheduler may sleep: until the next ``send_at``, but no longer than
        ``at_most`` nor :data:`POLL_S` (a blast scheduled meanwhile must be seen)."""
        now = self._clock()
        wait = min(at_most, POLL_S)
        for blast in self._scheduled():
            if blast.send_at is not None:
                wait = min(wait, max(0.0, (blast.send_at - now).total_seconds()))
        return wait
