"""The delivery ledger (outbox): set-based expansion, claims, outcomes, re-drive.

Every statement here works on a batch in one round trip: expansion is one
``INSERT … SELECT`` per page and channel (household duplicates and suppressions decided in
SQL), a claim is one conditional ``UPDATE … RETURNING``, outcomes are one statement (over
arrays on PostgreSQL, an executemany on SQLite: the dialect's :meth:`record_outcomes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from messaging.alert import Alert
from messaging.lifecycle import OPEN, BlastStatus, RowState
from messaging.ports import (
    TEMPLATE_FIELDS,
    CapScreen,
    Claimed,
    DryRun,
    ExpandedPage,
    Outcome,
    PendingView,
    SendingRow,
)
from messaging.store.schema import blasts, deliveries, early_statuses, supporters
from messaging.store.sql.audience import Audience, insert_page
from messaging.store.sql.dialect import SqlDialect, dialect_for
from messaging.store.sql.fallback import email_fallback, fallback_by_timezone

#: Why a row claimed long ago and never settled is failed rather than sent again.
LOST_IN_FLIGHT = "lost_in_flight"


class SqlLedger:
    """:class:`~messaging.ports.LedgerStore` on the ``deliveries`` table."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self.engine = engine
        self._dialect = dialect or dialect_for(engine)
        #: The planner's row estimate of the ledger, as last read (see refresh_statistics).
        self._estimate_rows = 0.0

    # --- expansion ---------------------------------------------------------------------

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
    ) -> tuple[int, dict[str, ExpandedPage]] | None:
        """Write the next page's rows for every channel and move the blast's cursor, in one
        transaction; ``(new cursor, pages)``, or None when the audience is done."""
        audience = Audience(alert, topic, self._dialect)
        pages: dict[str, ExpandedPage] = {}
        with self.engine.begin() as conn:
            upto = audience.page_upper_bound(conn, after, page_size)
            if upto is None:
                return None
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
        return upto, pages

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
            while (upto := audience.page_upper_bound(conn, cursor, page_size)) is not None:
                for channel in alert.channels:
                    written = insert_page(
                        conn, self._dialect, blast_id, channel, audience, cursor, upto, capped
                    )
                    for state, ids in written.items():
                        counts[channel][state] = counts[channel].get(state, 0) + len(ids)
                cursor = upto
                pages += 1
                heartbeat()
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
        if rows_written <= 2 * max(self._estimate_rows, 1000.0):
            return False
        with self.engine.connect() as conn:
            self._estimate_rows = self._dialect.estimated_rows(conn, "deliveries")
            if rows_written <= 2 * max(self._estimate_rows, 1000.0):
                return False
            self._dialect.analyze(conn, "deliveries")
            conn.commit()
        return True

    # --- claims and outcomes -----------------------------------------------------------

    def claim(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> list[Claimed]:
        """Atomically take ``pending`` rows for sending; rows someone else took are skipped.

        This conditional update is the durable at-most-once guard: two workers handed the
        same batch (SQS or dramatiq redelivery, a sweep re-drive) cannot both claim a row.
        """
        if not supporter_ids:
            return []
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            rows = self._dialect.claim(conn, blast_id, channel, supporter_ids, TEMPLATE_FIELDS, now)
        return [
            Claimed(
                int(sid),
                destination,
                int(attempts),
                {f: v or "" for f, v in zip(TEMPLATE_FIELDS, values, strict=True)},
                first,
            )
            for sid, destination, attempts, first, *values in rows
        ]

    def record(self, blast_id: str, channel: str, outcomes: Sequence[Outcome]) -> None:
        """Write the outcome of claimed rows (one statement, only rows still ``sending``)."""
        if not outcomes:
            return
        now = datetime.now(UTC)
        sids = [
            o.provider_message_id
            for o in outcomes
            if o.state == RowState.SENT and o.provider_message_id
        ]
        with self.engine.begin() as conn:
            self._dialect.record_outcomes(conn, blast_id, channel, outcomes, now)
            if sids and channel == "sms":
                self._apply_early_statuses(conn, blast_id, sids)

    @staticmethod
    def _apply_early_statuses(conn: Connection, blast_id: str, sids: Sequence[str]) -> None:
        """Apply status callbacks that arrived before these SIDs were recorded."""
        parked = conn.execute(
            select(early_statuses).where(early_statuses.c.provider_message_id.in_(list(sids)))
        ).all()
        for p in parked:
            values: dict[str, Any] = {"state": p.state, "updated_at": p.received_at}
            if p.state == RowState.DELIVERED:
                values["delivered_at"] = p.received_at
            else:
                values.update(error_code=p.error_code, error=p.error)
            conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.provider_message_id == p.provider_message_id,
                    deliveries.c.state == RowState.SENT,
                )
                .values(**values)
            )
        if parked:
            conn.execute(
                early_statuses.delete().where(
                    early_statuses.c.provider_message_id.in_(
                        [p.provider_message_id for p in parked]
                    )
                )
            )

    def open_ids(
        self, blast_id: str, channel: str, state: str, after: int, limit: int
    ) -> list[int]:
        """Supporter ids of one blast/channel in ``state``, in key order (for re-drive)."""
        with self.engine.connect() as conn:
            return [
                int(x)
                for x in conn.scalars(
                    select(deliveries.c.supporter_id)
                    .where(
                        deliveries.c.blast_id == blast_id,
                        deliveries.c.channel == channel,
                        deliveries.c.state == state,
                        deliveries.c.supporter_id > after,
                    )
                    .order_by(deliveries.c.supporter_id)
                    .limit(limit)
                )
            ]

    def close_open(self, blast_id: str, to_state: str, from_states: Sequence[str]) -> int:
        """Move every row of a blast in ``from_states`` to ``to_state`` (cancel, expire)."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(deliveries.c.blast_id == blast_id, deliveries.c.state.in_(list(from_states)))
                .values(state=to_state, updated_at=datetime.now(UTC))
                .returning(deliveries.c.supporter_id)
            ).all()
        return len(moved)

    def has_open(self, blast_id: str) -> bool:
        """True while any row of the blast still owes work (an index seek, not a count)."""
        query = (
            select(deliveries.c.supporter_id)
            .where(
                deliveries.c.blast_id == blast_id,
                # Naming every channel lets the (blast, channel, state) index be probed
                # directly instead of scanning a finished blast's million rows.
                deliveries.c.channel.in_(["sms", "email"]),
                deliveries.c.state.in_(sorted(OPEN)),
            )
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def close_ids(
        self, blast_id: str, channel: str, supporter_ids: Sequence[int], to_state: str
    ) -> int:
        """Close the given rows that are still ``pending`` (a batch of an ended blast)."""
        if not supporter_ids:
            return 0
        with self.engine.begin() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel == channel,
                    deliveries.c.supporter_id.in_(list(supporter_ids)),
                    deliveries.c.state == RowState.PENDING,
                )
                .values(state=to_state, updated_at=datetime.now(UTC))
                .returning(deliveries.c.supporter_id)
            ).all()
        return len(moved)

    def release_due(self, now: datetime, limit: int) -> list[tuple[str, str, int]]:
        """Move deferred rows whose window has ended back to ``pending``, oldest first.

        A conditional update: with several schedulers running, each row is released by
        exactly one of them. Returns ``(blast_id, channel, supporter_id)`` of what it took.
        """
        due = (
            select(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.supporter_id)
            .join(blasts, blasts.c.blast_id == deliveries.c.blast_id)
            .where(
                deliveries.c.state == RowState.DEFERRED,
                deliveries.c.deferred_until <= now,
                blasts.c.status == BlastStatus.SENDING,
            )
            .order_by(deliveries.c.deferred_until, deliveries.c.supporter_id)
            .limit(limit)
        )
        released: list[tuple[str, str, int]] = []
        with self.engine.begin() as conn:
            rows = conn.execute(due).all()
            by_key: dict[tuple[str, str], list[int]] = {}
            for blast_id, channel, sid in rows:
                by_key.setdefault((blast_id, channel), []).append(int(sid))
            for (blast_id, channel), ids in by_key.items():
                taken = conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.blast_id == blast_id,
                        deliveries.c.channel == channel,
                        deliveries.c.supporter_id.in_(ids),
                        deliveries.c.state == RowState.DEFERRED,
                    )
                    .values(state=RowState.PENDING, updated_at=now)
                    .returning(deliveries.c.supporter_id)
                ).all()
                taken_ids = {int(t[0]) for t in taken}
                # Keep the deferral order the SELECT established.
                released += [(blast_id, channel, sid) for sid in ids if sid in taken_ids]
        return released

    def has_state(self, blast_id: str, state: str) -> bool:
        """True while any row of the blast is in ``state``."""
        query = (
            select(deliveries.c.supporter_id)
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel.in_(["sms", "email"]),
                deliveries.c.state == state,
            )
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def claim_first_contact(self, supporter_ids: Sequence[int]) -> set[int]:
        """Atomically take the "first SMS" of these supporters; returns those taken here.

        A conditional update, so two blasts racing to text a new supporter cannot both
        treat their message as the first (and neither skips the opt-out text).
        """
        if not supporter_ids:
            return set()
        with self.engine.begin() as conn:
            taken = conn.execute(
                supporters.update()
                .where(
                    self._dialect.among(supporters.c.id, supporter_ids),
                    supporters.c.first_sms_at.is_(None),
                )
                .values(first_sms_at=datetime.now(UTC))
                .returning(supporters.c.id)
            ).all()
        return {int(row[0]) for row in taken}

    def release_first_contact(self, supporter_ids: Sequence[int]) -> None:
        """Give back first-contact claims whose message did not go out."""
        if not supporter_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                supporters.update()
                .where(self._dialect.among(supporters.c.id, supporter_ids))
                .values(first_sms_at=None)
            )

    def email_fallback(
        self, blast_id: str, supporter_ids: Sequence[int]
    ) -> tuple[set[int], list[int]]:
        """See :meth:`~messaging.ports.LedgerClaims.email_fallback`."""
        if not supporter_ids:
            return set(), []
        with self.engine.begin() as conn:
            return email_fallback(conn, self._dialect, blast_id, supporter_ids)

    def fail_stuck(self, blast_id: str, claimed_before: datetime) -> int:
        """Rows ``sending`` since before ``claimed_before`` end ``failed`` (lost_in_flight).

        We cannot know whether the provider got the request, and lost beats duplicate for
        this product (docs/architecture.md), so they are not sent again.
        """
        with self.engine.begin() as conn:
            rows = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel.in_(["sms", "email"]),
                    deliveries.c.state == RowState.SENDING,
                    deliveries.c.updated_at < claimed_before,
                )
                .values(
                    state=RowState.FAILED,
                    error_code=LOST_IN_FLIGHT,
                    error="worker lost between claim and outcome; not re-sent to avoid a duplicate",
                    updated_at=datetime.now(UTC),
                )
                .returning(deliveries.c.supporter_id)
            ).all()
        return len(rows)

    def sending_rows(self, blast_id: str, claimed_before: datetime) -> list[SendingRow]:
        """See :class:`~messaging.ports.LedgerSweep` (one indexed read, the supporter joined)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    deliveries.c.channel,
                    deliveries.c.supporter_id,
                    deliveries.c.destination,
                    deliveries.c.attempts,
                    deliveries.c.updated_at,
                    supporters.c.first_sms_at,
                    *(supporters.c[f] for f in TEMPLATE_FIELDS),
                )
                .select_from(
                    deliveries.outerjoin(supporters, supporters.c.id == deliveries.c.supporter_id)
                )
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.state == RowState.SENDING,
                    deliveries.c.updated_at < claimed_before,
                )
                .order_by(deliveries.c.channel, deliveries.c.supporter_id)
            ).all()
        return [
            SendingRow(
                channel,
                Claimed(
                    int(sid),
                    destination,
                    int(attempts),
                    {f: v or "" for f, v in zip(TEMPLATE_FIELDS, values, strict=True)},
                    _aware(first),
                ),
                _aware(claimed_at) or claimed_before,
            )
            for channel, sid, destination, attempts, claimed_at, first, *values in rows
        ]


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


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
        return [
            ({f: v or "" for f, v in zip(TEMPLATE_FIELDS, values, strict=True)}, first)
            for first, *values in self._conn.execute(query)
        ]

    def sample(self, channel: str, limit: int) -> list[dict[str, Any]]:
        query = (
            select(*(supporters.c[f] for f in TEMPLATE_FIELDS))
            .select_from(deliveries.join(supporters, supporters.c.id == deliveries.c.supporter_id))
            .where(*self._pending(channel))
            .order_by(deliveries.c.supporter_id)
            .limit(limit)
        )
        return [
            {f: v or "" for f, v in zip(TEMPLATE_FIELDS, values, strict=True)}
            for values in self._conn.execute(query)
        ]

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
