"""Blasts in the system of record: creation (idempotent by alert id), status, counts."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from messaging import states
from messaging.alert import Alert
from messaging.store.schema import blasts, deliveries

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BlastRecord:
    """One blast as stored."""

    blast_id: str
    topic: str
    status: str
    priority: str
    alert: Alert
    created_at: datetime
    updated_at: datetime
    expanded_at: datetime | None
    ended_at: datetime | None
    expansion_cursor: int
    stats: dict[str, Any]

    @property
    def ended(self) -> bool:
        """True once nothing more will be sent."""
        return self.status in states.ENDED_STATUSES


def _record(row: Any) -> BlastRecord:
    return BlastRecord(
        blast_id=row.blast_id,
        topic=row.topic,
        status=row.status,
        priority=row.priority,
        alert=Alert.model_validate_json(row.alert),
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        expanded_at=_aware(row.expanded_at) if row.expanded_at else None,
        ended_at=_aware(row.ended_at) if row.ended_at else None,
        expansion_cursor=int(row.expansion_cursor),
        stats=json.loads(row.stats) if row.stats else {},
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class BlastStore:
    """Reads and writes the ``blasts`` table and the ledger's per-state counts."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def create(
        self, alert: Alert, topic: str, sns_message_id: str | None
    ) -> tuple[BlastRecord, bool]:
        """Record the blast of ``alert``; if the alert id exists, return the existing blast.

        The alert id is the primary key, so a duplicate SQS delivery, or two intake workers
        racing on one, can never make a second blast (contract §4).
        """
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            inserted = conn.execute(
                self._insert(blasts)
                .values(
                    blast_id=alert.alert_id,
                    topic=topic,
                    status=states.EXPANDING,
                    priority=alert.priority,
                    alert=alert.to_json(),
                    sns_message_id=sns_message_id,
                    dry_run=alert.dry_run,
                    is_test=bool(alert.test_recipients),
                    send_by=alert.send_by,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["blast_id"])
                .returning(blasts.c.blast_id)
            ).first()
            record = self._get(conn, alert.alert_id)
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
        self, blast_id: str, status: str, *, only_from: Iterable[str] | None = None
    ) -> bool:
        """Move a blast to ``status`` (from one of ``only_from``, if given). True if it moved."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {"status": status, "updated_at": now}
        if status in states.ENDED_STATUSES:
            values["ended_at"] = now
        query = blasts.update().where(blasts.c.blast_id == blast_id)
        if only_from is not None:
            query = query.where(blasts.c.status.in_(list(only_from)))
        with self._engine.begin() as conn:
            moved = conn.execute(query.values(**values).returning(blasts.c.blast_id)).first()
        return moved is not None

    def advance_cursor(self, conn: Connection, blast_id: str, cursor: int) -> None:
        """Record expansion progress inside the caller's transaction (with its ledger rows)."""
        conn.execute(
            blasts.update()
            .where(blasts.c.blast_id == blast_id)
            .values(expansion_cursor=cursor, updated_at=datetime.now(UTC))
        )

    def finish_expansion(self, blast_id: str, stats: dict[str, Any]) -> bool:
        """Mark expansion done; the blast moves on to ``sending`` unless it was paused or ended."""
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            conn.execute(
                blasts.update()
                .where(blasts.c.blast_id == blast_id)
                .values(expanded_at=now, updated_at=now, stats=json.dumps(stats, sort_keys=True))
            )
            moved = conn.execute(
                blasts.update()
                .where(blasts.c.blast_id == blast_id, blasts.c.status == states.EXPANDING)
                .values(status=states.SENDING_BLAST)
                .returning(blasts.c.blast_id)
            ).first()
        return moved is not None

    def state_counts(self, blast_ids: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        """Ledger rows per blast, channel and state (one grouped query on the ledger index)."""
        result: dict[str, dict[str, dict[str, int]]] = {b: {} for b in blast_ids}
        if not blast_ids:
            return result
        query = (
            select(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.state, func.count())
            .where(deliveries.c.blast_id.in_(blast_ids))
            .group_by(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.state)
        )
        with self._engine.connect() as conn:
            for blast_id, channel, state, n in conn.execute(query):
                result[blast_id].setdefault(channel, {})[state] = int(n)
        return result

    def summaries(
        self, records: list[BlastRecord], live: LiveCounts | None = None
    ) -> list[dict[str, Any]]:
        """The contract's JSON view (§6) of each blast, counts included.

        With ``live``, a running blast's counts come from its live counters (one Redis read,
        instead of a grouped scan of its ledger rows per look); an ended blast's, and any
        whose counters are missing or unreadable, from the ledger.
        """
        running = [r.blast_id for r in records if r.status not in states.ENDED_STATUSES]
        counted: dict[str, ByChannel | None] = {}
        if live is not None and running:
            try:
                counted = dict(live(running))
            except Exception as exc:  # Redis down or slow: the ledger still answers
                log.warning("blast.live_counts_unavailable", error_type=type(exc).__name__)
        from_ledger = self.state_counts(
            [r.blast_id for r in records if counted.get(r.blast_id) is None]
        )
        result = []
        for r in records:
            live_counts = counted.get(r.blast_id)
            by_channel = live_counts if live_counts is not None else from_ledger[r.blast_id]
            result.append(
                summary(r, by_channel, source="ledger" if live_counts is None else "live")
            )
        return result


#: Reads live counters: ``{blast_id: {channel: {state: rows}} or None}``.
ByChannel = dict[str, dict[str, int]]
LiveCounts = Callable[[list[str]], Mapping[str, ByChannel | None]]


def summary(
    record: BlastRecord, by_channel: dict[str, dict[str, int]], *, source: str = "ledger"
) -> dict[str, Any]:
    """``{"blast_id", "topic", "status", "created_at", "counts": {...}, ...}``.

    ``counts_source`` says where the counts came from: ``live`` (the Redis counters of a
    running blast, reconciled with the ledger every scheduler pass) or ``ledger``.
    """
    channels = record.alert.channels
    return {
        "blast_id": record.blast_id,
        "topic": record.topic,
        "status": record.status,
        "priority": record.priority,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "dry_run": record.alert.dry_run,
        "test": bool(record.alert.test_recipients),
        "counts": {c: states.counts_from_states(by_channel.get(c, {})) for c in channels},
        "audience": record.stats,
        "counts_source": source,
    }
