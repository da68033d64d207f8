"""Expansion: turn a blast into ledger rows and send work, page by page (the outbox).

Each page's ledger rows and the blast's cursor commit in one transaction, and only then is
the page's send work queued, by a helper thread while the next page is written (the queue's
round trips, one per batch, then overlap the database's work instead of adding to it). A
crash between the two leaves ``pending`` rows with no queue work, which the re-drive sweep
finds; a crash mid-page leaves nothing half-written, and the next attempt resumes after the
cursor. Nothing holds more than two pages of ids in memory: the one being queued and the
one being written.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog

from messaging import states
from messaging.dry_run import DryRunConfig, estimate
from messaging.store.audience import Audience
from messaging.store.blasts import BlastRecord, BlastStore
from messaging.store.ledger import ExpandedPage, Ledger
from queues.flow.progress import InMemoryProgressCounters, ProgressCounters
from queues.sendqueue import SendQueue, enqueue_in_batches

log = structlog.get_logger(__name__)

#: Supporters per expansion page: one INSERT … SELECT per channel each. Pages start at
#: FIRST_PAGE_SIZE, so the first batches are queued within a few milliseconds, and double up
#: to PAGE_SIZE, so a million-supporter blast pays the per-page cost (~15 ms: blast row,
#: cursor, commit) some 60 times instead of 200.
FIRST_PAGE_SIZE = 1_000
PAGE_SIZE = 20_000


@dataclass
class ExpansionResult:
    """What one expansion run did."""

    pages: int = 0
    pending: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    stopped: str | None = None  # the blast status that stopped expansion early, if any


class Expander:
    """Expands blasts into the ledger and queues their send work."""

    def __init__(
        self,
        ledger: Ledger,
        blasts: BlastStore,
        queue: SendQueue,
        *,
        page_size: int = PAGE_SIZE,
        heartbeat: Callable[[], None] | None = None,
        dry_run: DryRunConfig | None = None,
        progress: ProgressCounters | None = None,
    ) -> None:
        self._ledger = ledger
        self._progress = progress or InMemoryProgressCounters()
        self._blasts = blasts
        self._queue = queue
        self._page_size = page_size
        self._first_page_size = min(FIRST_PAGE_SIZE, page_size)
        self._heartbeat = heartbeat or (lambda: None)
        self._dry_run_config = dry_run or DryRunConfig()

    def expand(self, blast: BlastRecord) -> ExpansionResult:
        """Expand ``blast`` from its cursor to the end of its audience."""
        result = ExpansionResult()
        if blast.alert.dry_run:
            return self._dry_run(blast, result)
        audience = Audience(blast.alert, blast.topic)
        cursor = blast.expansion_cursor
        engine = self._ledger.engine
        # Base the live counters on the ledger (empty unless this resumes an expansion).
        self._progress.replace(
            blast.blast_id, self._blasts.state_counts([blast.blast_id])[blast.blast_id]
        )
        # One helper thread queues a page's send work while the next page is written; at
        # most one page is in its hands, and its errors surface in this thread.
        enqueuer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="expansion-enqueue")
        queued: Future[int] | None = None
        try:
            queued = self._expand_pages(blast, audience, cursor, result, enqueuer)
        finally:
            enqueuer.shutdown(wait=True)
        if queued is not None:
            result.batches += queued.result()
        if result.stopped is None:
            with engine.connect() as conn:
                stats = audience.stats(conn)
            self._blasts.finish_expansion(blast.blast_id, stats)
        log.info(
            "blast.expanded",
            blast_id=blast.blast_id,
            pages=result.pages,
            pending=result.pending,
            batches=result.batches,
            stopped=result.stopped,
        )
        return result

    def _expand_pages(
        self,
        blast: BlastRecord,
        audience: Audience,
        cursor: int,
        result: ExpansionResult,
        enqueuer: ThreadPoolExecutor,
    ) -> Future[int] | None:
        """Write pages until the audience ends; returns the last page's queueing, if any."""
        engine = self._ledger.engine
        written = 0
        page_size = self._first_page_size
        queued: Future[int] | None = None
        while True:
            current = self._blasts.get(blast.blast_id)
            if current is None or current.status in states.ENDED_STATUSES:
                result.stopped = current.status if current else "missing"
                break
            pages: dict[str, ExpandedPage] = {}
            with engine.begin() as conn:
                upto = audience.page_upper_bound(conn, cursor, page_size)
                if upto is None:
                    break
                for channel in blast.alert.channels:
                    pages[channel] = self._ledger.expand_page(
                        conn, blast.blast_id, channel, audience, cursor, upto
                    )
                    # Counted before the commit, as senders count (see finish_batch).
                    self._progress.add(blast.blast_id, channel, pages[channel].by_state)
                self._blasts.advance_cursor(conn, blast.blast_id, upto)
            cursor = upto
            result.pages += 1
            written += page_size * len(pages)
            page_size = min(2 * page_size, self._page_size)
            self._ledger.refresh_statistics(written)
            work: list[tuple[str, list[int]]] = []
            for channel, page in pages.items():
                ids = page.pending_ids
                result.pending[channel] = result.pending.get(channel, 0) + len(ids)
                if current.status != states.PAUSED:  # a paused blast is re-driven on resume
                    work.append((channel, ids))
            if queued is not None:
                result.batches += queued.result()
            queued = enqueuer.submit(self._enqueue, blast, work)
            self._heartbeat()
        return queued

    def _enqueue(self, blast: BlastRecord, work: list[tuple[str, list[int]]]) -> int:
        """Queue one page's send work (in the helper thread); returns the batch count."""
        return sum(
            enqueue_in_batches(self._queue, blast.blast_id, channel, blast.priority, ids)
            for channel, ids in work
        )

    def _dry_run(self, blast: BlastRecord, result: ExpansionResult) -> ExpansionResult:
        """Expand inside one transaction, count, and roll back: the ledger stays empty."""
        audience = Audience(blast.alert, blast.topic)
        counts: dict[str, dict[str, int]] = {c: {} for c in blast.alert.channels}
        cursor = 0
        with self._ledger.engine.connect() as conn, conn.begin() as tx:
            while (upto := audience.page_upper_bound(conn, cursor, self._page_size)) is not None:
                for channel in blast.alert.channels:
                    for state in self._ledger.expand_page_states(
                        conn, blast.blast_id, channel, audience, cursor, upto
                    ):
                        counts[channel][state] = counts[channel].get(state, 0) + 1
                cursor = upto
                result.pages += 1
                self._heartbeat()
            stats: dict[str, Any] = audience.stats(conn)
            stats["estimate"] = estimate(conn, blast.blast_id, blast.alert, self._dry_run_config)
            tx.rollback()
        stats["would_send"] = counts
        self._blasts.finish_expansion(blast.blast_id, stats)
        self._blasts.set_status(blast.blast_id, states.COMPLETED)
        return result
