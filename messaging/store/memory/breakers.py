"""In-memory twin of :class:`messaging.store.sql.breakers.SqlBreakerWindow`."""

from __future__ import annotations

from messaging.blasts.lifecycle import RowState
from messaging.ports import RecentOutcomes
from messaging.safety.breakers import CARRIER_FILTERING_CODES, NOT_COUNTED_AS_FAILURES
from messaging.store.memory.tables import MemoryTables

_FINISHED = frozenset({RowState.SENT, RowState.DELIVERED, RowState.FAILED})


class MemoryBreakerWindow:
    """See :class:`~messaging.ports.BreakerWindow`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def recent(self, blast_id: str, window: int) -> RecentOutcomes:
        with self._t.lock:
            rows = [r for r in self._t.rows_of(blast_id) if r.state in _FINISHED]
        last = sorted(rows, key=lambda r: r.updated_at, reverse=True)[:window]
        failed = [
            r
            for r in last
            if r.state == RowState.FAILED and r.error_code not in NOT_COUNTED_AS_FAILURES
        ]
        return RecentOutcomes(
            sends=len(last),
            failed=len(failed),
            carrier_filtered=sum(r.error_code in CARRIER_FILTERING_CODES for r in failed),
            sms_sent=sum(
                r.channel == "sms" and r.state in (RowState.SENT, RowState.DELIVERED) for r in rows
            ),
        )
