"""Blasts in the system of record: creation (idempotent by alert id), status, counts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from messaging.blasts.lifecycle import ENDED_STATUSES, BlastStatus
from messaging.content.alert import STORED, Alert
from messaging.ports import BlastRecord
from messaging.store.schema import blasts
from messaging.store.sql.counts import state_counts_query
from messaging.store.sql.dialect import SqlDialect, dialect_for
from messaging.store.views import Summaries


def _record(row: Any) -> BlastRecord:
    return BlastRecord(
        blast_id=row.blast_id,
        topic=row.topic,
        status=row.status,
        priority=row.priority,
        alert=Alert.model_validate_json(row.alert, context=STORED),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        expanded_at=_aware(row.expanded_at) if row.expanded_at else None,
        ended_at=_aware(row.ended_at) if row.ended_at else None,
        expansion_cursor=int(row.expansion_cursor),
        stats=json.loads(row.stats) if row.stats else {},
        pause_reason=row.pause_reason,
        pause_detail=row.pause_detail,
        requested_by=row.requested_by,
        approved_by=row.approved_by,
        send_at=_aware(row.send_at) if row.send_at else None,
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class SqlBlastStore(Summaries):
    """:class:`~messaging.ports.BlastStore` on the ``blasts`` table (counts from the ledger)."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self._engine = engine
        self._insert = (dialect or dialect_for(engine)).insert

    def create(
        self, alert: Alert, topic: str, sns_message_id: str | None
    ) -> tuple[BlastRecord, bool]:
        """Record the blast of ``alert``; if the alert id exists, return the existing blast.

        The alert id is the primary key, so a duplicate SQS delivery, or two intake workers
        racing on one, can never make a second blast (contract §4).
        """
        now = datetime.now(UTC)
        scheduled = alert.scheduled(now)
        with self._engine.begin() as conn:
            inserted = conn.execute(
                self._insert(blasts)
                .values(
                    blast_id=alert.alert_id,
                    topic=topic,
                    # A blast due later waits, scheduled, for ``rapid scheduler``.
                    status=BlastStatus.SCHEDULED if scheduled else BlastStatus.EXPANDING,
                    send_at=alert.send_at if scheduled else None,
                    priority=alert.priority,
                    alert=alert.to_json(),
                    sns_message_id=sns_message_id,
                    dry_run=alert.dry_run,
                    is_test=bool(alert.test_recipients),
                    send_by=alert.send_by,
                    # Contract §11: an alert that names no requester was published to SNS.
                    requested_by=alert.requested_by or "sns",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["blast_id"])
                # The new row whole: no second read before the alert's first page.
                .returning(*blasts.c)
            ).first()
            record = _record(inserted) if inserted else self._get(conn, alert.alert_id)
        assert record is not None
        return record, inserted is not None

    def get(self, blast_id: str) -> BlastRecord | None:
        """One blast, or None."""
        with self._engine.connect() as conn:
            return self._get(conn, blast_id)

    def status(self, blast_id: str) -> tuple[str, bool] | None:
        """``(status, expanded)`` of one blast, or None: the row without parsing its alert
        (asked once per send batch)."""
        query = select(blasts.c.status, blasts.c.expanded_at).where(blasts.c.blast_id == blast_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return (str(row[0]), row[1] is not None) if row else None

    @staticmethod
    def _get(conn: Connection, blast_id: str) -> BlastRecord | None:
        row = conn.execute(select(blasts).where(blasts.c.blast_id == blast_id)).first()
        return _record(row) if row else None

    def recent(self, limit: int = 50) -> list[BlastRecord]:
        """The newest blasts first."""
        query = select(blasts).order_by(blasts.c.created_at.desc(), blasts.c.blast_id).limit(limit)
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def ids_with_status(self, status: str, *, expanded: bool | None = None) -> list[str]:
        """Ids of the blasts in ``status`` (optionally only those whose expansion finished)."""
        query = select(blasts.c.blast_id).where(blasts.c.status == status)
        if expanded is not None:
            column = blasts.c.expanded_at
            query = query.where(column.is_not(None) if expanded else column.is_(None))
        with self._engine.connect() as conn:
            return list(conn.scalars(query.order_by(blasts.c.created_at)))

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
        """See :class:`~messaging.ports.BlastStore`."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if status in ENDED_STATUSES:
            values["ended_at"] = now
        # A pause's reason lives exactly as long as the pause.
        paused = status == "paused"
        values["pause_reason"] = pause_reason if paused else None
        values["pause_detail"] = pause_detail if paused else None
        if approved_by is not None:
            values["approved_by"] = approved_by
        query = blasts.update().where(blasts.c.blast_id == blast_id)
        if only_from is not None:
            query = query.where(blasts.c.status.in_(list(only_from)))
        with self._engine.begin() as conn:
            moved = conn.execute(query.values(**values).returning(blasts.c.blast_id)).first()
        return moved is not None

    def finish_expansion(
        self, blast_id: str, stats: dict[str, Any], *, to: str = "sending"
    ) -> bool:
        """Mark expansion done; the blast moves on to ``to`` unless it was paused or ended."""
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(
                blasts.update()
                .where(blasts.c.blast_id == blast_id)
                .values(expanded_at=now, updated_at=now, stats=json.dumps(stats, sort_keys=True))
            )
            moved = conn.execute(
                blasts.update()
                .where(blasts.c.blast_id == blast_id, blasts.c.status == BlastStatus.EXPANDING)
                .values(status=to)
                .returning(blasts.c.blast_id)
            ).first()
        return moved is not None

    def click_counts(self, blast_ids: list[str]) -> dict[str, dict[str, int]]:
        """Clicked rows per blast and channel (the partial index of clicked rows)."""
        from messaging.store.sql.links import click_counts

        with self._engine.connect() as conn:
            return click_counts(conn, blast_ids)

    def variant_counts(self, blast_id: str) -> dict[int, dict[str, dict[str, int]]]:
        """Rows per variant, channel and state, clicks beside (one grouped read)."""
        from messaging.store.sql.links import variant_counts

        with self._engine.connect() as conn:
            return variant_counts(conn, blast_id)

    def state_counts(self, blast_ids: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        """Ledger rows per blast, channel and state, from the counts the ledger's triggers
        keep (a few indexed rows per blast, whatever the ledger's size; ``counts.py``)."""
        result: dict[str, dict[str, dict[str, int]]] = {b: {} for b in blast_ids}
        if not blast_ids:
            return result
        with self._engine.connect() as conn:
            for blast_id, channel, state, n in conn.execute(state_counts_query(blast_ids)):
                result[blast_id].setdefault(channel, {})[state] = int(n)
        return result
