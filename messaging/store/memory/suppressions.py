"""The suppression list's in-memory twin, with its audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

from messaging.compliance.suppression import Channel, Suppression, suppression_key
from messaging.store.memory.tables import MemoryTables


class MemorySuppressionList:
    """:class:`~messaging.compliance.suppression.SuppressionList` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def _audit(self, channel: Channel, value: str, action: str, reason: str, source: str) -> None:
        self._t.suppression_events.append(
            {
                "channel": channel,
                "value": value,
                "action": action,
                "reason": reason,
                "source": source,
                "at": datetime.now(UTC),
            }
        )

    def add(self, channel: Channel, value: str, *, reason: str, source: str) -> bool:
        value = suppression_key(channel, value)
        with self._t.lock:
            new = (channel, value) not in self._t.suppressions
            if new:
                self._t.suppressions[(channel, value)] = (reason, source, datetime.now(UTC))
            self._audit(channel, value, "add", reason, source)
        return new

    def remove(self, channel: Channel, value: str, *, source: str) -> bool:
        value = suppression_key(channel, value)
        with self._t.lock:
            removed = self._t.suppressions.pop((channel, value), None)
            self._audit(channel, value, "remove", "lifted", source)
        return removed is not None

    def suppressed_among(self, channel: Channel, values: list[str]) -> set[str]:
        with self._t.lock:
            return {
                v for v in values if (channel, suppression_key(channel, v)) in self._t.suppressions
            }

    def lookup(self, channel: Channel, value: str) -> Suppression | None:
        key = suppression_key(channel, value)
        with self._t.lock:
            found = self._t.suppressions.get((channel, key))
        if found is None:
            return None
        reason, source, created_at = found
        return Suppression(channel, key, reason, source, created_at)
