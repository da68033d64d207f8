"""Blast counts kept with the ledger's writes, and the ledger's retention (issue #21).

Triggers on ``deliveries`` (migration 0010) keep ``blast_counts`` in the transaction of
every ledger write; on PostgreSQL they append to ``blast_count_deltas`` instead, which
:meth:`SqlLedgerRetention.compact_counts` folds in. A blast's counts are therefore its
``blast_counts`` rows plus its deltas: a handful of indexed rows, whatever the ledger's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, delete, func, select, tuple_, union_all

from messaging.blasts.lifecycle import ENDED_STATUSES
from messaging.store.schema import blast_count_deltas, blast_counts, blasts, deliveries
from messaging.store.sql.dialect import SqlDialect


def counts_subquery(blast_filter: Any | None = None) -> Any:
    """``(blast_id, channel, state, n)``: folded counts and pending deltas, not yet summed.

    ``blast_filter(blast_id_column)`` narrows both halves (it is applied to each table, so
    each half is an index lookup per blast).
    """
    halves = []
    for table in (blast_counts, blast_count_deltas):
        half = select(table.c.blast_id, table.c.channel, table.c.state, table.c.n)
        if blast_filter is not None:
            half = half.where(blast_filter(table.c.blast_id))
        halves.append(half)
    return union_all(*halves).subquery("counted")


def state_counts_query(blast_ids: Sequence[str]) -> Select[Any]:
    """Rows per blast, channel and state of ``blast_ids`` (zero counts left out, as a
    grouped count of the ledger would)."""
    counted = counts_subquery(lambda column: column.in_(list(blast_ids)))
    total = func.sum(counted.c.n)
    return (
        select(counted.c.blast_id, counted.c.channel, counted.c.state, total)
        .group_by(counted.c.blast_id, counted.c.channel, counted.c.state)
        .having(total != 0)
    )


class SqlLedgerRetention:
    """:class:`~messaging.ports.LedgerRetention` on PostgreSQL or SQLite."""

    __slots__ = ("_dialect", "_engine")

    def __init__(self, engine: Engine, dialect: SqlDialect) -> None:
        self._engine = engine
        self._dialect = dialect

    def compact_counts(self, max_rows: int) -> int:
        """Fold the oldest ``max_rows`` deltas into ``blast_counts``, in one transaction.

        Two compactors at once are safe: the second's DELETE waits for the first's rows and
        finds them gone, so a delta is folded once."""
        oldest = select(blast_count_deltas.c.id).order_by(blast_count_deltas.c.id).limit(max_rows)
        with self._engine.begin() as conn:
            moved = conn.execute(
                delete(blast_count_deltas)
                .where(blast_count_deltas.c.id.in_(oldest.scalar_subquery()))
                .returning(
                    blast_count_deltas.c.blast_id,
                    blast_count_deltas.c.channel,
                    blast_count_deltas.c.state,
                    blast_count_deltas.c.n,
                )
            ).all()
            sums: dict[tuple[str, str, str], int] = {}
            for blast_id, channel, state, n in moved:
                key = (str(blast_id), str(channel), str(state))
                sums[key] = sums.get(key, 0) + int(n)
            rows = [
                {"blast_id": b, "channel": c, "state": s, "n": n}
                for (b, c, s), n in sorted(sums.items())  # one lock order: no deadlock
                if n
            ]
            if rows:
                insert = self._dialect.insert(blast_counts)
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=["blast_id", "channel", "state"],
                        set_={"n": blast_counts.c.n + insert.excluded.n},
                    ),
                    rows,
                )
        return len(moved)

    def prune_batch(self, ended_before: datetime, max_rows: int) -> int:
        """Delete up to ``max_rows`` ledger rows of one blast that ended before
        ``ended_before`` (oldest ending first), by primary key, in one short transaction:
        no long lock, and the triggers leave the blast's counts as they were."""
        ended = (
            select(blasts.c.blast_id)
            .where(blasts.c.status.in_(sorted(ENDED_STATUSES)), blasts.c.ended_at < ended_before)
            .where(
                select(deliveries.c.blast_id)
                .where(deliveries.c.blast_id == blasts.c.blast_id)
                .exists()
            )
            .order_by(blasts.c.ended_at, blasts.c.blast_id)
            .limit(1)
        )
        key = tuple_(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.supporter_id)
        with self._engine.begin() as conn:
            blast_id = conn.execute(ended).scalar()
            if blast_id is None:
                return 0
            victims = (
                select(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.supporter_id)
                .where(deliveries.c.blast_id == blast_id)
                .limit(max_rows)
            )
            result = conn.execute(delete(deliveries).where(key.in_(victims)))
        return int(result.rowcount or 0)
