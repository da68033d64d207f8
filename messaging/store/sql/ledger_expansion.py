"""Expanding a blast's audience into the ledger: pages, the dry run, planner statistics.

Expansion is one ``INSERT … SELECT`` per page and channel (household duplicates and
suppressions decided in SQL, see :mod:`messaging.store.sql.audience`); the dry run writes
the same pages inside one transaction and rolls it back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from messaging.blasts.lifecycle import RowState
from messaging.content.alert import Alert
from messaging.ports import (
    TEMPLATE_FIELDS,
    CapScreen,
    DryRun,
    ExpandedPage,
    PageWritten,
    PendingView,
)
from messaging.store.schema import blasts, deliveries, supporters
from messaging.store.sql.audience import Audience, insert_page
from messaging.store.sql.dialect import SqlDialect
from messaging.store.sql.fallback import fallback_by_timezone
from messaging.store.sql.ledger_claims import template_fields

#: Ledgers up to twice this many rows are never analyzed by expansion (see refresh_statistics).
LEDGER_ESTIMATE_FLOOR = 1000.0
#: The tables an audience is read from (see refresh_audience_statistics).
AUDIENCE_TABLES = ("supporters", "subscriptions")
#: Audiences up to twice this many rows never ask: a page of them costs little whatever the
#: plan (the first page is 200).
AUDIENCE_ESTIMATE_FLOOR = 250.0


class SqlLedgerExpansion:
    """:class:`~messaging.ports.LedgerExpansion` on the ``deliveries`` table (a part of
    :class:`~messaging.store.sql.ledger.SqlLedger`, which sets the engine and dialect)."""

    engine: Engine
    _dialect: SqlDialect
    #: The planner's row estimate of the ledger, as last read (see refresh_statistics).
    _estimate_rows: float
    #: The smaller of its estimates of supporters and subscriptions, as last read, and held
    #: while one thread analyzes them (see refresh_audience_statistics).
    _audience_estimate_rows: float
    _audience_analyzing: threading.Lock

    def expand_page(
        self,
        blast_id: str,
        alert: Alert,
        topic: str,
        after: int,
        page_size: int,
        before_commit: Callable[[str, ExpandedPage], None],
        *,
        capped: CapScreen | None = None,
    ) -> PageWritten | None:
        """Write the next page's rows for every channel and move the blast's cursor, in one
        transaction; the page written, or None when the audience is done."""
        audience = Audience(alert, topic, self._dialect)
        pages: dict[str, ExpandedPage] = {}
        with self.engine.begin() as conn:
            bound = audience.page_upper_bound(conn, after, page_size)
            if bound is None:
                return None
            upto, last = bound
            for channel in alert.channels:
                ids = insert_page(
                    conn, self._dialect, blast_id, channel, audience, after, upto, capped
                )
                pages[channel] = ExpandedPage(
                    sorted(ids.get(RowState.PENDING, [])),
                    {state: len(i) for state, i in ids.items()},
                )
                before_commit(channel, pages[channel])
            conn.execute(
                blasts.update()
                .where(blasts.c.blast_id == blast_id)
                .values(expansion_cursor=upto, updated_at=datetime.now(UTC))
            )
        return PageWritten(upto, pages, last)

    def audience_stats(self, alert: Alert, topic: str) -> dict[str, Any]:
        """How the audience divides per channel: eligible, without consent, without address."""
        with self.engine.connect() as conn:
            return Audience(alert, topic, self._dialect).stats(conn)

    def dry_run(
        self,
        blast_id: str,
        alert: Alert,
        topic: str,
        page_size: int,
        estimate: Callable[[PendingView], dict[str, Any]],
        heartbeat: Callable[[], None],
        *,
        capped: CapScreen | None = None,
    ) -> DryRun:
        """Expand inside one transaction, let ``estimate`` look, and roll back."""
        audience = Audience(alert, topic, self._dialect)
        counts: dict[str, dict[str, int]] = {c: {} for c in alert.channels}
        cursor, pages = 0, 0
        with self.engine.connect() as conn, conn.begin() as tx:
            while (bound := audience.page_upper_bound(conn, cursor, page_size)) is not None:
                upto, last = bound
                for channel in alert.channels:
                    written = insert_page(
                        conn, self._dialect, blast_id, channel, audience, cursor, upto, capped
                    )
                    for state, ids in written.items():
                        counts[channel][state] = counts[channel].get(state, 0) + len(ids)
                cursor = upto
                pages += 1
                heartbeat()
                if last:  # a short page: the audience ended in it
                    break
            stats = audience.stats(conn)
            report = estimate(_SqlPendingView(conn, blast_id))
            tx.rollback()
        return DryRun(pages=pages, would_send=counts, stats=stats, estimate=report)

    def inspect_pending(
        self, blast_id: str, report: Callable[[PendingView], dict[str, Any]]
    ) -> dict[str, Any]:
        """``report`` over a blast's committed pending rows."""
        with self.engine.connect() as conn:
            return report(_SqlPendingView(conn, blast_id))

    def refresh_statistics(self, rows_written: int) -> bool:
        """ANALYZE the ledger when this expansion has outgrown the planner's picture of it.

        On a young database the planner's estimate of the ledger is near zero rows, and with
        that estimate it probes a blast's destinations, and claims its rows, through the
        (blast, channel, state) index, filtering thousands of rows per probe: pages went
        from 0.2 s to 27 s. Once per doubling of the table is enough; on a large
        production ledger this never fires. Only where the dialect keeps statistics.
        """
        if not self._dialect.keeps_statistics:
            return False
        # The estimate only grows (ANALYZE, autovacuum): below twice the last one read there
        # is nothing to ask the database.
        if not _outgrown(rows_written, self._estimate_rows, LEDGER_ESTIMATE_FLOOR):
            return False
        with self.engine.connect() as conn:
            self._estimate_rows = self._dialect.estimated_rows(conn, "deliveries")
            if not _outgrown(rows_written, self._estimate_rows, LEDGER_ESTIMATE_FLOOR):
                return False
            self._dialect.analyze(conn, "deliveries")
            conn.commit()
        return True

    def refresh_audience_statistics(self, audience_rows: int) -> bool:
        """ANALYZE supporters and subscriptions when an audience is over twice what the
        planner believes either table holds.

        Right after an import (COPY, and no ANALYZE until autovacuum comes by, a minute or
        more later) the planner takes a topic's page for one row and joins it to the
        supporters' id range in a nested loop, that range scanned again for every
        subscription: quadratic in the page. A 1,600-row page took 202 ms (1,279,200 rows
        filtered), against 30 ms analyzed; fifty 2,000-recipient blasts published together
        paid it on every later page. As with the ledger, once per doubling of the tables at
        most; a database whose statistics are current never gets here.
        """
        if not self._dialect.keeps_statistics:
            return False
        if not _outgrown(audience_rows, self._audience_estimate_rows, AUDIENCE_ESTIMATE_FLOOR):
            return False
        # Fifty alerts to a fresh import arrive together: one of this process's expansions
        # analyzes, the others go on (their next pages find the new picture).
        if not self._audience_analyzing.acquire(blocking=False):
            return False
        try:
            with self.engine.connect() as conn:
                self._audience_estimate_rows = self._audience_estimate(conn)
                if not _outgrown(
                    audience_rows, self._audience_estimate_rows, AUDIENCE_ESTIMATE_FLOOR
                ):
                    return False
                for table in AUDIENCE_TABLES:
                    self._dialect.analyze(conn, table)
                conn.commit()
                self._audience_estimate_rows = self._audience_estimate(conn)
            return True
        finally:
            self._audience_analyzing.release()

    def _audience_estimate(self, conn: Connection) -> float:
        return min(self._dialect.estimated_rows(conn, table) for table in AUDIENCE_TABLES)


def _outgrown(rows: int, estimate_rows: float, floor_rows: float) -> bool:
    """Whether ``rows`` is over twice the planner's estimate (at least ``floor_rows``): the
    point at which expansion analyzes, so at most once per doubling of a table."""
    return rows > 2 * max(estimate_rows, floor_rows)


class _SqlPendingView:
    """:class:`~messaging.ports.PendingView` over the dry run's uncommitted rows."""

    def __init__(self, conn: Connection, blast_id: str) -> None:
        self._conn = conn
        self._blast_id = blast_id

    def _pending(self, channel: str) -> Any:
        return (
            deliveries.c.blast_id == self._blast_id,
            deliveries.c.channel == channel,
            deliveries.c.state == RowState.PENDING,
        )

    def pending_count(self, channel: str) -> int:
        query = select(func.count()).select_from(deliveries).where(*self._pending(channel))
        return int(self._conn.scalar(query) or 0)

    def sms_sample(self, limit: int) -> list[tuple[dict[str, Any], datetime | None]]:
        query = (
            select(supporters.c.first_sms_at, *(supporters.c[f] for f in TEMPLATE_FIELDS))
            .select_from(deliveries.join(supporters, supporters.c.id == deliveries.c.supporter_id))
            .where(*self._pending("sms"))
            .limit(limit)
        )
        return [(template_fields(values), first) for first, *values in self._conn.execute(query)]

    def sample(self, channel: str, limit: int) -> list[dict[str, Any]]:
        query = (
            select(*(supporters.c[f] for f in TEMPLATE_FIELDS))
            .select_from(deliveries.join(supporters, supporters.c.id == deliveries.c.supporter_id))
            .where(*self._pending(channel))
            .order_by(deliveries.c.supporter_id)
            .limit(limit)
        )
        return [template_fields(values) for values in self._conn.execute(query)]

    def sms_by_timezone(self) -> dict[str | None, int]:
        query = (
            select(supporters.c.timezone, func.count())
            .select_from(deliveries.join(supporters, supporters.c.id == deliveries.c.supporter_id))
            .where(*self._pending("sms"))
            .group_by(supporters.c.timezone)
        )
        return {tz: int(n) for tz, n in self._conn.execute(query)}

    def sms_with_email_by_timezone(self) -> dict[str | None, int]:
        return fallback_by_timezone(self._conn, self._blast_id)
