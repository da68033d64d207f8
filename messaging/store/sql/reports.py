"""Aggregates over the ledger for metrics, autoscaling and health checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, and_, func, select, text

from messaging.lifecycle import ENDED_STATUSES, RowState
from messaging.ports import FleetCounts
from messaging.store.schema import blasts, deliveries


def _live_join() -> Any:
    return deliveries.join(blasts, blasts.c.blast_id == deliveries.c.blast_id)


class SqlReportStore:
    """:class:`~messaging.ports.ReportStore`: grouped counts, each one indexed query."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def fleet_counts(self) -> FleetCounts:
        open_blasts = blasts.c.status.not_in(sorted(ENDED_STATUSES))
        by_state = (
            select(deliveries.c.channel, deliveries.c.state, func.count())
            .select_from(_live_join())
            .where(open_blasts)
            .group_by(deliveries.c.channel, deliveries.c.state)
        )
        by_status = select(blasts.c.status, func.count()).group_by(blasts.c.status)
        with self._engine.connect() as conn:
            rows = {(str(c), str(s)): int(n) for c, s, n in conn.execute(by_state)}
            statuses = {str(s): int(n) for s, n in conn.execute(by_status)}
        return FleetCounts(open_rows=rows, blasts=statuses)

    def lane_backlog(
        self, blast_statuses: Sequence[str], channels: Sequence[str], row_states: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        query = (
            select(deliveries.c.channel, blasts.c.priority, func.count())
            .select_from(_live_join())
            .where(
                blasts.c.status.in_(list(blast_statuses)),
                # Both channel and state spelled out, so every column of the index is used.
                deliveries.c.channel.in_(list(channels)),
                deliveries.c.state.in_(list(row_states)),
            )
            .group_by(deliveries.c.channel, blasts.c.priority)
        )
        with self._engine.connect() as conn:
            return {(str(c), str(p)): int(n) for c, p, n in conn.execute(query)}

    def live_outcomes(
        self,
        blast_statuses: Sequence[str],
        channels: Sequence[str],
        row_states: Sequence[str],
        carrier_codes: Sequence[str],
    ) -> tuple[dict[tuple[str, str], int], int]:
        live = blasts.c.status.in_(list(blast_statuses))
        by_state = (
            select(deliveries.c.channel, deliveries.c.state, func.count())
            .select_from(_live_join())
            .where(
                live,
                deliveries.c.channel.in_(list(channels)),
                deliveries.c.state.in_(list(row_states)),
            )
            .group_by(deliveries.c.channel, deliveries.c.state)
        )
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
            rows = {(str(c), str(s)): int(n) for c, s, n in conn.execute(by_state)}
            carrier_filtered = int(conn.execute(filtered).scalar_one())
        return rows, carrier_filtered
