"""Aggregates over the ledger for metrics, autoscaling and health checks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, func, select, text

from messaging.blasts.lifecycle import ENDED_STATUSES, RowState
from messaging.ports import FleetCounts
from messaging.store.schema import blasts, deliveries
from messaging.store.sql.counts import counts_subquery


def _live_join() -> Any:
    return deliveries.join(blasts, blasts.c.blast_id == deliveries.c.blast_id)


def _counted(statuses: ColumnElement[bool]) -> tuple[Any, Any]:
    """The kept counts (``counts.py``) of the blasts matching ``statuses``, joined to their
    blast: ``(joined, counted)``. An index lookup per such blast, not a ledger scan."""
    chosen = select(blasts.c.blast_id).where(statuses)
    counted = counts_subquery(lambda column: column.in_(chosen))
    return counted.join(blasts, blasts.c.blast_id == counted.c.blast_id), counted


def _summed(
    statuses: ColumnElement[bool],
    key: Callable[[Any], Any],
    channels: Sequence[str] | None = None,
    row_states: Sequence[str] | None = None,
) -> Select[Any]:
    """``(channel, key, n)``: the kept counts of the blasts matching ``statuses`` summed per
    channel and ``key(counted)`` (a column of the counts or of ``blasts``), optionally only
    of ``channels`` and ``row_states``; sums of zero are left out."""
    joined, counted = _counted(statuses)
    second = key(counted)
    query = select(counted.c.channel, second, func.sum(counted.c.n)).select_from(joined)
    if channels is not None:
        query = query.where(counted.c.channel.in_(list(channels)))
    if row_states is not None:
        query = query.where(counted.c.state.in_(list(row_states)))
    return query.group_by(counted.c.channel, second).having(func.sum(counted.c.n) != 0)


def _by_pair(conn: Connection, query: Select[Any]) -> dict[tuple[str, str], int]:
    return {(str(a), str(b)): int(n) for a, b, n in conn.execute(query)}


class SqlReportStore:
    """:class:`~messaging.ports.ReportStore`: the kept blast counts of the blasts asked
    about (a few rows each); only the carrier-filtered share reads ledger rows (a live
    blast's failed texts, by index)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def fleet_counts(self) -> FleetCounts:
        by_state = _summed(blasts.c.status.not_in(sorted(ENDED_STATUSES)), lambda c: c.c.state)
        by_status = select(blasts.c.status, func.count()).group_by(blasts.c.status)
        with self._engine.connect() as conn:
            rows = _by_pair(conn, by_state)
            statuses = {str(s): int(n) for s, n in conn.execute(by_status)}
        return FleetCounts(open_rows=rows, blasts=statuses)

    def lane_backlog(
        self, blast_statuses: Sequence[str], channels: Sequence[str], row_states: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        live = blasts.c.status.in_(list(blast_statuses))
        query = _summed(live, lambda _: blasts.c.priority, channels, row_states)
        with self._engine.connect() as conn:
            return _by_pair(conn, query)

    def live_outcomes(
        self,
        blast_statuses: Sequence[str],
        channels: Sequence[str],
        row_states: Sequence[str],
        carrier_codes: Sequence[str],
    ) -> tuple[dict[tuple[str, str], int], int]:
        live = blasts.c.status.in_(list(blast_statuses))
        by_state = _summed(live, lambda c: c.c.state, channels, row_states)
        filtered = (
            select(func.count())
            .select_from(_live_join())
            .where(
                live,
                and_(deliveries.c.channel == "sms", deliveries.c.state == RowState.FAILED),
                deliveries.c.error_code.in_(list(carrier_codes)),
            )
        )
        with self._engine.connect() as conn:
            rows = _by_pair(conn, by_state)
            carrier_filtered = int(conn.execute(filtered).scalar_one())
        return rows, carrier_filtered
