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
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from messaging.blasts.approval import ApprovalGate, render_sample
from messaging.blasts.dry_run import DryRunConfig, estimate
from messaging.blasts.first_pages import HoldBudget
from messaging.blasts.lifecycle import ENDED_STATUSES, BlastLifecycle, BlastStatus, RowState
from messaging.compliance.frequency_caps import FrequencyCaps
from messaging.content.alert import Alert
from messaging.memory import InMemoryBlastControl, InMemoryProgressCounters
from messaging.ports import (
    BlastRecord,
    BlastStore,
    LedgerStore,
    ProgressCounters,
    SendQueue,
    TopicStore,
    enqueue_in_batches,
)

log = structlog.get_logger(__name__)

#: Supporters per expansion page: one INSERT … SELECT per channel each. Pages start at
#: FIRST_PAGE_SIZE, so the first batches are queued within a few milliseconds, and double up
#: to PAGE_SIZE, so a million-supporter blast pays the per-page cost (~15 ms: blast row,
#: cursor, commit) some 60 times instead of 200.
FIRST_PAGE_SIZE = 200
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
        ledger: LedgerStore,
        blasts: BlastStore,
        queue: SendQueue,
        *,
        page_size: int = PAGE_SIZE,
        heartbeat: Callable[[], None] | None = None,
        dry_run: DryRunConfig | None = None,
        progress: ProgressCounters | None = None,
        lifecycle: BlastLifecycle | None = None,
        approval: ApprovalGate | None = None,
        caps: FrequencyCaps | None = None,
        topics: TopicStore | None = None,
        first_page_done: Callable[[], None] | None = None,
        hold_later_page: Callable[[float], float] | None = None,
    ) -> None:
        self._ledger = ledger
        #: Called once the first page's send work is queued (``FirstPagesFirst``).
        self._first_page_done = first_page_done or (lambda: None)
        #: Before each later page: waits up to the given seconds for other alerts' first
        #: pages, returns the seconds waited; None: later pages never wait.
        self._hold_later_page = hold_later_page
        #: Cross-blast frequency caps; None: nobody is capped.
        self._caps = caps
        #: Where a topic's own quiet window is (the dry run's quiet-hours figures).
        self._topics = topics
        #: The two-person rule; None: no blast waits (tests, benchmarks).
        self._approval = approval
        self._progress = progress or InMemoryProgressCounters()
        #: Moves the blast on when expansion ends (a private one, mirroring nowhere, when
        #: a test expands without a fleet).
        self._lifecycle = lifecycle or BlastLifecycle(
            blasts, ledger, InMemoryBlastControl(self._progress), queue
        )
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
        cursor = blast.expansion_cursor
        # Base the live counters on the ledger. A page's rows commit with the cursor, so a
        # blast whose cursor has not moved has none: no count to ask for before its first
        # page (one round trip less before its first text).
        self._progress.replace(
            blast.blast_id,
            self._blasts.state_counts([blast.blast_id])[blast.blast_id] if cursor else {},
        )
        # One helper thread queues a page's send work while the next page is written; at
        # most one page is in its hands, and its errors surface in this thread.
        enqueuer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="expansion-enqueue")
        # The audience's figures, read once, by the helper thread while the first page is
        # written (they were a round trip before it): they decide the hold and are the
        # blast's stats when expansion ends (reading them again at the end scanned the
        # whole audience a second time).
        figures = _Figures(
            enqueuer.submit(self._ledger.audience_stats, blast.alert, blast.topic),
            self._approval,
            blast.alert,
        )
        queued: Future[int] | None = None
        try:
            queued = self._expand_pages(blast, cursor, result, enqueuer, figures)
        finally:
            enqueuer.shutdown(wait=True)
        if queued is not None:
            result.batches += queued.result()
        stats, hold = figures.stats, figures.hold
        if result.stopped is None:
            if hold:
                self._finish_held(blast, stats)
            else:
                self._lifecycle.finish_expansion(blast.blast_id, stats)
        log.info(
            "blast.expanded",
            blast_id=blast.blast_id,
            pages=result.pages,
            pending=result.pending,
            batches=result.batches,
            stopped=result.stopped,
        )
        return result

    def _finish_held(self, blast: BlastRecord, stats: dict[str, Any]) -> None:
        """A held blast: wait for approval when over the threshold, else send it now."""
        assert self._approval is not None
        by_channel = self._blasts.state_counts([blast.blast_id])[blast.blast_id]
        # Rows a pick_winner test holds for the winner (``deferred`` at expansion) will be
        # sent too: the two-person rule counts them.
        pending = {
            c: by_channel.get(c, {}).get(RowState.PENDING, 0)
            + by_channel.get(c, {}).get(RowState.DEFERRED, 0)
            for c in by_channel
        }
        wait = self._approval.holds(pending)
        if wait:
            approval = self._approval
            stats["approval"] = self._ledger.inspect_pending(
                blast.blast_id, lambda view: approval.preview(view, blast.alert)
            )
        moved = self._lifecycle.finish_expansion(blast.blast_id, stats, hold_for_approval=wait)
        if moved and not wait:
            self._lifecycle.redrive(blast)

    def _expand_pages(
        self,
        blast: BlastRecord,
        cursor: int,
        result: ExpansionResult,
        enqueuer: ThreadPoolExecutor,
        figures: _Figures,
    ) -> Future[int] | None:
        """Write pages until the audience ends; returns the last page's queueing, if any."""
        written = 0
        page_size = self._first_page_size
        queued: Future[int] | None = None
        hold_budget = HoldBudget()
        while True:
            if result.pages and self._hold_later_page is not None:
                hold_budget.spend(self._hold_later_page)
            # The status alone (not the row with its alert to parse): asked every page.
            current = self._blasts.status(blast.blast_id)
            if current is None or current[0] in ENDED_STATUSES:
                result.stopped = current[0] if current else "missing"
                break
            status = current[0]
            expanded = self._ledger.expand_page(
                blast.blast_id,
                blast.alert,
                blast.topic,
                cursor,
                page_size,
                # Counted before the commit, as senders count (see finish_batch).
                lambda channel, page: self._progress.add(blast.blast_id, channel, page.by_state),
                capped=self._caps.screen(blast.alert) if self._caps else None,
            )
            if expanded is None:
                break
            upto, pages, last = expanded
            cursor = upto
            result.pages += 1
            written += page_size * len(pages)
            page_size = min(2 * page_size, self._page_size)
            work: list[tuple[str, list[int]]] = []
            for channel, page in pages.items():
                ids = page.pending_ids
                result.pending[channel] = result.pending.get(channel, 0) + len(ids)
                # Re-driven on resume, approval or a final count under the threshold.
                if status != BlastStatus.PAUSED and not figures.hold:
                    work.append((channel, ids))
            if queued is not None:
                result.batches += queued.result()
            queued = enqueuer.submit(self._after_page, blast, work, written, figures)
            if result.pages == 1:
                # The first page's units on their lanes before other alerts' later pages
                # are written: the blast's first texts can go (issue #21, item 2).
                result.batches += queued.result()
                queued = None
                self._first_page_done()
                log.info("blast.first_page_queued", blast_id=blast.blast_id, batches=result.batches)
            self._heartbeat()
            if last:  # a short page: the audience ended in it
                break
        return queued

    def _after_page(
        self,
        blast: BlastRecord,
        work: list[tuple[str, list[int]]],
        rows_written: int,
        figures: _Figures,
    ) -> int:
        """In the helper thread, after a page's commit: queue its send work (returns the
        batch count), then refresh the planner's statistics where the ledger, or the
        supporters and subscriptions, outgrew them.

        The ledger's ANALYZE (one every doubling of the blast, ~0.2 s each) is for the
        senders' claims; expansion's own statement reads the ledger only through its unique
        index, so it need not wait for it. The audience's (after a fresh import) is for
        expansion's later pages: its first pages are small enough for any plan."""
        batches = sum(
            enqueue_in_batches(self._queue, blast.blast_id, channel, blast.priority, ids)
            for channel, ids in work
        )
        # Read in this thread before this page's turn came: no wait.
        self._ledger.refresh_audience_statistics(figures.stats.get("audience", 0))
        self._ledger.refresh_statistics(rows_written)
        return batches

    def _dry_run(self, blast: BlastRecord, result: ExpansionResult) -> ExpansionResult:
        """Expand inside one transaction, count, and roll back: the ledger stays empty."""
        config = self._dry_run_config
        own_window = self._topics.quiet_hours(blast.topic) if self._topics else None
        if own_window is not None:
            config = replace(config, quiet_hours=own_window)
        found = self._ledger.dry_run(
            blast.blast_id,
            blast.alert,
            blast.topic,
            self._page_size,
            # What the operator reads before sending: the figures and two rendered messages.
            lambda pending: {
                "estimate": estimate(pending, blast.alert, config),
                "sample": render_sample(pending, blast.alert),
            },
            self._heartbeat,
            capped=self._caps.screen(blast.alert) if self._caps else None,
        )
        result.pages += found.pages
        stats: dict[str, Any] = dict(found.stats)
        stats["estimate"] = found.estimate["estimate"]
        stats["sample"] = found.estimate["sample"]
        stats["would_send"] = found.would_send
        self._lifecycle.finish_expansion(blast.blast_id, stats)
        self._lifecycle.complete(blast.blast_id)  # nothing was written: nothing is owed
        return result


class _Figures:
    """An expansion's audience figures, read in the helper thread, and what they decide."""

    def __init__(
        self, reading: Future[dict[str, Any]], approval: ApprovalGate | None, alert: Alert
    ) -> None:
        self._reading = reading
        self._approval = approval
        self._alert = alert
        self._hold: bool | None = None

    @property
    def stats(self) -> dict[str, Any]:
        """The figures (waits for them; a failed read raises here)."""
        return self._reading.result()

    @property
    def hold(self) -> bool:
        """Whether the blast may exceed the approval threshold: then it queues no send work
        until its final count says it does not (and is re-driven at once)."""
        if self._hold is None:
            self._hold = self._approval is not None and self._approval.may_hold(
                self._alert, self.stats
            )
        return self._hold
