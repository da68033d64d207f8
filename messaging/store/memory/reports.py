"""The report store's in-memory twin."""

from __future__ import annotations

from collections.abc import Sequence

from messaging.blasts.lifecycle import ENDED_STATUSES, RowState
from messaging.ports import FleetCounts
from messaging.store.memory.tables import MemoryTables


class MemoryReportStore:
    """:class:`~messaging.ports.ReportStore` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def ping(self) -> None:
        return None

    def fleet_counts(self) -> FleetCounts:
        rows: dict[tuple[str, str], int] = {}
        statuses: dict[str, int] = {}
        with self._t.lock:
            for blast in self._t.blasts.values():
                statuses[blast["status"]] = statuses.get(blast["status"], 0) + 1
            for r in self._t.deliveries.values():
                owner = self._t.blasts.get(r.blast_id)
                if owner is not None and owner["status"] not in ENDED_STATUSES:
                    rows[(r.channel, r.state)] = rows.get((r.channel, r.state), 0) + 1
        return FleetCounts(open_rows=rows, blasts=statuses)

    def lane_backlog(
        self, blast_statuses: Sequence[str], channels: Sequence[str], row_states: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        lanes: dict[tuple[str, str], int] = {}
        with self._t.lock:
            for r in self._t.deliveries.values():
                blast = self._t.blasts.get(r.blast_id)
                if (
                    blast is not None
                    and blast["status"] in blast_statuses
                    and r.channel in channels
                    and r.state in row_states
                ):
                    key = (r.channel, blast["priority"])
                    lanes[key] = lanes.get(key, 0) + 1
        return lanes

    def live_outcomes(
        self,
        blast_statuses: Sequence[str],
        channels: Sequence[str],
        row_states: Sequence[str],
        carrier_codes: Sequence[str],
    ) -> tuple[dict[tuple[str, str], int], int]:
        rows: dict[tuple[str, str], int] = {}
        filtered = 0
        with self._t.lock:
            for r in self._t.deliveries.values():
                blast = self._t.blasts.get(r.blast_id)
                if blast is None or blast["status"] not in blast_statuses:
                    continue
                if r.channel in channels and r.state in row_states:
                    rows[(r.channel, r.state)] = rows.get((r.channel, r.state), 0) + 1
                if (
                    r.channel == "sms"
                    and r.state == RowState.FAILED
                    and r.error_code in carrier_codes
                ):
                    filtered += 1
        return rows, filtered
