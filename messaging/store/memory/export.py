"""The export's in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator

from messaging.blasts.export import ExportRow
from messaging.store.memory.tables import MemoryTables


class MemoryExportStore:
    """:class:`~messaging.blasts.export.ExportStore` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def export_rows(self, blast_id: str) -> Iterator[ExportRow]:
        """See :class:`~messaging.blasts.export.ExportStore`."""
        with self._t.lock:
            rows = sorted(self._t.rows_of(blast_id), key=lambda r: (r.channel, r.supporter_id))
            people = {r.supporter_id: self._t.supporters.get(r.supporter_id) for r in rows}
        for r in rows:
            person = people[r.supporter_id]
            yield ExportRow(
                person.get("external_id") if person else None,
                r.channel,
                r.destination,
                r.state,
                r.error_code,
                r.sent_at,
                r.delivered_at,
                r.clicked_at,
                r.variant,
            )
