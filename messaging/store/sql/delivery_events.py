"""Provider events on the ledger: status callbacks, inbound SMS, SendGrid event batches.

Every update only moves a row out of ``sent`` (a conditional ``UPDATE … WHERE state =
'sent'``), so events that repeat or arrive out of order change nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, select

from messaging.blasts.lifecycle import RowState
from messaging.store.schema import deliveries, early_statuses, inbound_messages, webhook_events
from messaging.store.sql.dialect import SqlDialect, dialect_for

#: Ids looked up per ``IN (…)`` query: far below every database's parameter limit.
ID_CHUNK = 500


class SqlDeliveryEventStore:
    """:class:`~messaging.ports.DeliveryEventStore` on the ledger and the event logs."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self._engine = engine
        self._dialect = dialect or dialect_for(engine)

    def sms_destination(self, message_sid: str) -> str | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(deliveries.c.destination).where(
                    deliveries.c.provider_message_id == message_sid,
                    deliveries.c.channel == "sms",
                )
            ).first()
        return str(row[0]) if row is not None else None

    def settle_sms(self, message_sid: str, values: Mapping[str, Any]) -> bool:
        with self._engine.begin() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.provider_message_id == message_sid,
                    deliveries.c.channel == "sms",
                    deliveries.c.state == RowState.SENT,
                )
                .values(**values)
                .returning(deliveries.c.blast_id)
            ).first()
        return moved is not None

    def park_sms_status(self, message_sid: str, values: Mapping[str, Any]) -> None:
        row = {
            "provider_message_id": message_sid,
            "state": values["state"],
            "error_code": values.get("error_code"),
            "error": values.get("error"),
            "received_at": values["updated_at"],
        }
        stmt = self._dialect.insert(early_statuses).values(**row)
        # A failure report outranks a delivery report for the same message.
        stmt = stmt.on_conflict_do_update(
            index_elements=["provider_message_id"],
            set_={k: stmt.excluded[k] for k in ("state", "error_code", "error", "received_at")},
            where=early_statuses.c.state != RowState.FAILED,
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def inbound_seen(self, message_sid: str) -> bool:
        query = select(inbound_messages.c.id).where(inbound_messages.c.message_sid == message_sid)
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def record_inbound(self, message: Mapping[str, Any]) -> bool:
        with self._engine.begin() as conn:
            inserted = conn.execute(
                self._dialect.insert(inbound_messages)
                .values(**message)
                .on_conflict_do_nothing(index_elements=["message_sid"])
                .returning(inbound_messages.c.id)
            ).first()
        return inserted is not None

    def seen_events(self, provider: str, ids: Sequence[str]) -> set[str]:
        seen: set[str] = set()
        unique = sorted(set(ids))
        with self._engine.connect() as conn:
            for start in range(0, len(unique), ID_CHUNK):
                seen.update(
                    conn.scalars(
                        select(webhook_events.c.event_id).where(
                            webhook_events.c.provider == provider,
                            webhook_events.c.event_id.in_(unique[start : start + ID_CHUNK]),
                        )
                    )
                )
        return seen

    def apply_email_outcomes(
        self,
        delivered: Sequence[tuple[str, int, datetime]],
        failed: Sequence[tuple[str, int, str, str]],
        provider: str,
        event_ids: Sequence[str],
        now: datetime,
    ) -> None:
        row = (
            deliveries.c.blast_id == bindparam("b_blast"),
            deliveries.c.channel == "email",
            deliveries.c.supporter_id == bindparam("b_sid"),
            deliveries.c.state == RowState.SENT,
        )
        with self._engine.begin() as conn:
            if delivered:
                conn.execute(
                    deliveries.update()
                    .where(*row)
                    .values(
                        state=RowState.DELIVERED, delivered_at=bindparam("b_at"), updated_at=now
                    ),
                    [{"b_blast": b, "b_sid": s, "b_at": at} for b, s, at in delivered],
                )
            if failed:
                conn.execute(
                    deliveries.update()
                    .where(*row)
                    .values(
                        state=RowState.FAILED,
                        error_code=bindparam("b_code"),
                        error=bindparam("b_error"),
                        updated_at=now,
                    ),
                    [
                        {"b_blast": b, "b_sid": s, "b_code": code, "b_error": error}
                        for b, s, code, error in failed
                    ],
                )
            if event_ids:
                conn.execute(
                    self._dialect.insert(webhook_events).on_conflict_do_nothing(),
                    [{"provider": provider, "event_id": i, "received_at": now} for i in event_ids],
                )
