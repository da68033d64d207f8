"""The blast store's in-memory twin."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from messaging.blasts.lifecycle import ENDED_STATUSES, BlastStatus
from messaging.content.alert import STORED, Alert
from messaging.ports import BlastRecord, ByChannel
from messaging.store.memory.tables import MemoryTables
from messaging.store.views import Summaries


def _record(row: dict[str, Any]) -> BlastRecord:
    return BlastRecord(
        blast_id=row["blast_id"],
        topic=row["topic"],
        status=row["status"],
        priority=row["priority"],
        alert=Alert.model_validate_json(row["alert"], context=STORED),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expanded_at=row["expanded_at"],
        ended_at=row["ended_at"],
        expansion_cursor=int(row["expansion_cursor"]),
        stats=json.loads(row["stats"]) if row["stats"] else {},
        pause_reason=row.get("pause_reason"),
        pause_detail=row.get("pause_detail"),
        requested_by=row.get("requested_by"),
        approved_by=row.get("approved_by"),
        send_at=row.get("send_at"),
    )


class MemoryBlastStore(Summaries):
    """:class:`~messaging.ports.BlastStore` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def create(
        self, alert: Alert, topic: str, sns_message_id: str | None
    ) -> tuple[BlastRecord, bool]:
        now = datetime.now(UTC)
        scheduled = alert.scheduled(now)
        with self._t.lock:
            new = alert.alert_id not in self._t.blasts
            if new:
                self._t.blasts[alert.alert_id] = {
                    "blast_id": alert.alert_id,
                    "topic": topic,
                    "status": BlastStatus.SCHEDULED if scheduled else BlastStatus.EXPANDING,
                    "send_at": alert.send_at if scheduled else None,
                    "priority": alert.priority,
                    "alert": alert.to_json(),
                    "sns_message_id": sns_message_id,
                    "requested_by": alert.requested_by or "sns",
                    "created_at": now,
                    "updated_at": now,
                    "expanded_at": None,
                    "ended_at": None,
                    "expansion_cursor": 0,
                    "stats": None,
                }
            return _record(self._t.blasts[alert.alert_id]), new

    def get(self, blast_id: str) -> BlastRecord | None:
        with self._t.lock:
            row = self._t.blasts.get(blast_id)
            return _record(row) if row else None

    def status(self, blast_id: str) -> tuple[str, bool] | None:
        with self._t.lock:
            row = self._t.blasts.get(blast_id)
            return (row["status"], row["expanded_at"] is not None) if row else None

    def recent(self, limit: int = 50) -> list[BlastRecord]:
        with self._t.lock:
            rows = sorted(self._t.blasts.values(), key=lambda r: r["blast_id"])
            rows.sort(key=lambda r: r["created_at"], reverse=True)
            return [_record(r) for r in rows[:limit]]

    def ids_with_status(self, status: str, *, expanded: bool | None = None) -> list[str]:
        with self._t.lock:
            rows = [
                r
                for r in self._t.blasts.values()
                if r["status"] == status
                and (expanded is None or (r["expanded_at"] is not None) == expanded)
            ]
            return [r["blast_id"] for r in sorted(rows, key=lambda r: r["created_at"])]

    def set_status(
        self,
        blast_id: str,
        status: str,
        *,
        only_from: Iterable[str] | None = None,
        pause_reason: str | None = None,
        pause_detail: str | None = None,
        approved_by: str | None = None,
    ) -> bool:
        now = datetime.now(UTC)
        with self._t.lock:
            row = self._t.blasts.get(blast_id)
            if row is None or (only_from is not None and row["status"] not in set(only_from)):
                return False
            paused = status == "paused"
            row.update(
                status=status,
                updated_at=now,
                pause_reason=pause_reason if paused else None,
                pause_detail=pause_detail if paused else None,
            )
            if approved_by is not None:
                row["approved_by"] = approved_by
            if status in ENDED_STATUSES:
                row["ended_at"] = now
            return True

    def finish_expansion(
        self, blast_id: str, stats: dict[str, Any], *, to: str = "sending"
    ) -> bool:
        now = datetime.now(UTC)
        with self._t.lock:
            row = self._t.blasts.get(blast_id)
            if row is None:
                return False
            row.update(expanded_at=now, updated_at=now, stats=json.dumps(stats, sort_keys=True))
            if row["status"] != BlastStatus.EXPANDING:
                return False
            row["status"] = to
            return True

    def click_counts(self, blast_ids: list[str]) -> dict[str, dict[str, int]]:
        wanted = set(blast_ids)
        out: dict[str, dict[str, int]] = {}
        with self._t.lock:
            for (blast_id, channel, _), row in self._t.deliveries.items():
                if blast_id in wanted and row.clicked_at is not None:
                    by_channel = out.setdefault(blast_id, {})
                    by_channel[channel] = by_channel.get(channel, 0) + 1
        return out

    def variant_counts(self, blast_id: str) -> dict[int, ByChannel]:
        out: dict[int, ByChannel] = {}
        with self._t.lock:
            for row in self._t.rows_of(blast_id):
                if row.variant is None:
                    continue
                by_state = out.setdefault(row.variant, {}).setdefault(row.channel, {})
                by_state[row.state] = by_state.get(row.state, 0) + 1
                if row.clicked_at is not None:
                    by_state["clicked"] = by_state.get("clicked", 0) + 1
        return out

    def state_counts(self, blast_ids: list[str]) -> dict[str, ByChannel]:
        result: dict[str, ByChannel] = {b: {} for b in blast_ids}
        with self._t.lock:
            for (blast_id, channel, _), row in self._t.deliveries.items():
                if blast_id in result:
                    by_state = result[blast_id].setdefault(channel, {})
                    by_state[row.state] = by_state.get(row.state, 0) + 1
            for (blast_id, channel, state), n in self._t.pruned_counts.items():
                if blast_id in result:
                    by_state = result[blast_id].setdefault(channel, {})
                    by_state[state] = by_state.get(state, 0) + n
        return result
