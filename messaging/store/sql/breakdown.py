"""The breakdown of one blast (messaging/blasts/breakdown.py) from the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from messaging.blasts.breakdown import Breakdown, DeferredZone, ordered
from messaging.blasts.lifecycle import RowState
from messaging.store.schema import deliveries, supporters


class SqlBreakdown:
    """:class:`~messaging.blasts.breakdown.BreakdownReads`: both queries ride the
    ``(blast_id, channel, state)`` index, so a page view costs the failed and deferred rows
    of one blast, not its whole ledger."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def breakdown(self, blast_id: str) -> Breakdown:
        d = deliveries.c
        failed = (
            select(d.channel, d.error_code, func.count())
            .where(d.blast_id == blast_id, d.state == RowState.FAILED.value)
            .group_by(d.channel, d.error_code)
        )
        deferred = (
            select(
                supporters.c.timezone,
                func.count(),
                func.min(d.deferred_until),
                func.max(d.deferred_until),
            )
            .select_from(deliveries.outerjoin(supporters, supporters.c.id == d.supporter_id))
            .where(d.blast_id == blast_id, d.channel == "sms", d.state == RowState.DEFERRED.value)
            .group_by(supporters.c.timezone)
        )
        failures: dict[str, dict[str, int]] = {}
        with self._engine.connect() as conn:
            for channel, code, n in conn.execute(failed):
                failures.setdefault(str(channel), {})[str(code or "")] = int(n)
            zones = [
                DeferredZone(tz, int(n), _aware(first), _aware(last))
                for tz, n, first, last in conn.execute(deferred)
            ]
        return ordered(failures, zones)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL aware ones."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
