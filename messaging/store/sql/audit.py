"""The audit log in the system of record (table ``audit_log``, migration 0007).

Only INSERT and SELECT: this class has no way to change an entry, and on PostgreSQL the
table's trigger refuses UPDATE, DELETE and TRUNCATE from any role.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from messaging.access.audit import AuditEntry, NewAuditEntry
from messaging.store.schema import audit_log


def _entry(row: Any) -> AuditEntry:
    # SQLite hands back naive datetimes; what it stored was UTC.
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    return AuditEntry(**{**row._mapping, "id": int(row.id), "at": at})


class SqlAuditStore:
    """Appends to and reads ``audit_log``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def append(self, entry: NewAuditEntry) -> AuditEntry:
        """Append one entry; returns it with its id."""
        values: dict[str, Any] = asdict(entry)
        with self._engine.begin() as conn:
            new_id = conn.execute(
                audit_log.insert().values(**values).returning(audit_log.c.id)
            ).scalar_one()
        return AuditEntry(id=int(new_id), **values)

    def entries(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        """Entries at or after ``since``, newest first (the ``at`` index)."""
        query = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        with self._engine.connect() as conn:
            return [_entry(r) for r in conn.execute(query.limit(limit))]
