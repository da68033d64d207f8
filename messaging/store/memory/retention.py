"""The ledger retention twin: prunes ended blasts' rows, keeping their counts."""

from __future__ import annotations

from datetime import datetime

from messaging.blasts.lifecycle import ENDED_STATUSES
from messaging.store.memory.tables import MemoryTables


class MemoryLedgerRetention:
    """:class:`~messaging.ports.LedgerRetention` over :class:`MemoryTables`."""

    __slots__ = ("_t",)

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def compact_counts(self, max_rows: int) -> int:
        return 0  # the twin counts the rows themselves: nothing is ever pending

    def prune_batch(self, ended_before: datetime, max_rows: int) -> int:
        with self._t.lock:
            ended = sorted(
                (b["ended_at"], blast_id)
                for blast_id, b in self._t.blasts.items()
                if b["status"] in ENDED_STATUSES
                and b.get("ended_at") is not None
                and b["ended_at"] < ended_before
            )
            for _, blast_id in ended:
                keys = [k for k in self._t.deliveries if k[0] == blast_id][:max_rows]
                if not keys:
                    continue
                for key in keys:
                    row = self._t.deliveries.pop(key)
                    counted = (row.blast_id, row.channel, row.state)
                    self._t.pruned_counts[counted] = self._t.pruned_counts.get(counted, 0) + 1
                return len(keys)
        return 0
