"""The breakdown's in-memory twin."""

from __future__ import annotations

from datetime import datetime

from messaging.blasts.breakdown import Breakdown, DeferredZone, ordered
from messaging.blasts.lifecycle import RowState
from messaging.store.memory.tables import MemoryTables


class MemoryBreakdown:
    """:class:`~messaging.blasts.breakdown.BreakdownReads` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def breakdown(self, blast_id: str) -> Breakdown:
        failures: dict[str, dict[str, int]] = {}
        zones: dict[str | None, list[datetime | None]] = {}
        with self._t.lock:
            for r in self._t.deliveries.values():
                if r.blast_id != blast_id:
                    continue
                if r.state == RowState.FAILED:
                    codes = failures.setdefault(r.channel, {})
                    codes[r.error_code or ""] = codes.get(r.error_code or "", 0) + 1
                elif r.state == RowState.DEFERRED and r.channel == "sms":
                    tz = self._t.supporters.get(r.supporter_id, {}).get("timezone")
                    zones.setdefault(tz, []).append(r.deferred_until)
        deferred = []
        for tz, times in zones.items():
            known = [t for t in times if t is not None]
            deferred.append(
                DeferredZone(tz, len(times), min(known, default=None), max(known, default=None))
            )
        return ordered(failures, deferred)
