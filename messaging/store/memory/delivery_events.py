"""The delivery-event store's in-memory twin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from messaging.blasts.lifecycle import RowState
from messaging.store.memory.tables import MemoryTables, Row


class MemoryDeliveryEventStore:
    """:class:`~messaging.ports.DeliveryEventStore` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def _sms_rows(self, message_sid: str) -> list[Row]:
        return [
            r
            for r in self._t.deliveries.values()
            if r.channel == "sms" and r.provider_message_id == message_sid
        ]

    def sms_destination(self, message_sid: str) -> str | None:
        with self._t.lock:
            rows = self._sms_rows(message_sid)
            return rows[0].destination if rows else None

    def settle_sms(self, message_sid: str, values: Mapping[str, Any]) -> bool:
        with self._t.lock:
            rows = [r for r in self._sms_rows(message_sid) if r.state == RowState.SENT]
            for r in rows:
                for name, value in values.items():
                    setattr(r, name, value)
            return bool(rows)

    def park_sms_status(self, message_sid: str, values: Mapping[str, Any]) -> None:
        with self._t.lock:
            known = self._t.early_statuses.get(message_sid)
            if known is not None and known["state"] == RowState.FAILED:
                return  # a failure report outranks a delivery report
            self._t.early_statuses[message_sid] = {
                "state": values["state"],
                "error_code": values.get("error_code"),
                "error": values.get("error"),
                "received_at": values["updated_at"],
            }

    def inbound_seen(self, message_sid: str) -> bool:
        with self._t.lock:
            return message_sid in self._t.inbound_sids

    def record_inbound(self, message: Mapping[str, Any]) -> bool:
        sid = message.get("message_sid")
        with self._t.lock:
            if sid is not None and sid in self._t.inbound_sids:
                return False
            if sid is not None:
                self._t.inbound_sids.add(sid)
            self._t.inbound.append(dict(message))
            return True

    def seen_events(self, provider: str, ids: Sequence[str]) -> set[str]:
        with self._t.lock:
            return {i for i in ids if (provider, i) in self._t.webhook_events}

    def apply_email_outcomes(
        self,
        delivered: Sequence[tuple[str, int, datetime]],
        failed: Sequence[tuple[str, int, str, str]],
        provider: str,
        event_ids: Sequence[str],
        now: datetime,
    ) -> None:
        with self._t.lock:
            for blast_id, sid, at in delivered:
                row = self._t.deliveries.get((blast_id, "email", sid))
                if row is not None and row.state == RowState.SENT:
                    row.state, row.delivered_at, row.updated_at = RowState.DELIVERED, at, now
            for blast_id, sid, code, error in failed:
                row = self._t.deliveries.get((blast_id, "email", sid))
                if row is not None and row.state == RowState.SENT:
                    row.state, row.error_code, row.error = RowState.FAILED, code, error
                    row.updated_at = now
            self._t.webhook_events.update((provider, i) for i in event_ids)
