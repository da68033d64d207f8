"""In-memory audit log: the twin of :mod:`messaging.store.sql.audit` for unit tests."""

from __future__ import annotations

import threading
from dataclasses import asdict
from datetime import datetime

from messaging.access.audit import AuditEntry, NewAuditEntry


class MemoryAuditStore:
    """Entries in a list; like the SQL store, it has no way to change or remove one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[AuditEntry] = []

    def append(self, entry: NewAuditEntry) -> AuditEntry:
        """Append one entry; returns it with its id."""
        with self._lock:
            stored = AuditEntry(id=len(self._entries) + 1, **asdict(entry))
            self._entries.append(stored)
            return stored

    def entries(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        """Entries at or after ``since``, newest first."""
        with self._lock:
            chosen = [e for e in self._entries if since is None or e.at >= since]
        chosen.sort(key=lambda e: (e.at, e.id), reverse=True)
        return chosen[:limit]
