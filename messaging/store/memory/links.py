"""In-memory twin of :class:`messaging.store.sql.links.SqlLinkStore`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from messaging.blasts.lifecycle import RowState
from messaging.content.links import Link
from messaging.store.memory.tables import MemoryTables


class MemoryLinkStore:
    """Links in a dict; clicks on the shared ledger rows."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables
        self._links: dict[int, Link] = {}
        self._ids: dict[tuple[str, str, str], int] = {}

    def register(self, blast_id: str, channel: str, urls: Sequence[str]) -> dict[str, int]:
        with self._t.lock:
            out = {}
            for url in urls:
                key = (blast_id, channel, url)
                if key not in self._ids:
                    link_id = len(self._links) + 1
                    self._ids[key] = link_id
                    self._links[link_id] = Link(link_id, blast_id, channel, url)
                out[url] = self._ids[key]
            return out

    def get(self, link_id: int) -> Link | None:
        return self._links.get(link_id)

    def click(self, clicks: Sequence[tuple[str, str, int]]) -> int:
        now = datetime.now(UTC)
        moved = 0
        with self._t.lock:
            for key in set(clicks):
                row = self._t.deliveries.get(key)
                if row is not None and row.clicked_at is None:
                    row.clicked_at = now
                    moved += 1
        return moved

    def settle_winner(self, blast_id: str, winner: int, now: datetime) -> int:
        moved = 0
        with self._t.lock:
            for row in self._t.rows_of(blast_id):
                if row.state == RowState.DEFERRED and row.variant is None:
                    row.variant, row.deferred_until, row.updated_at = winner, now, now
                    moved += 1
        return moved

    def row_variants(
        self, blast_id: str, channel: str, supporter_ids: Sequence[int]
    ) -> dict[int, int]:
        out: dict[int, int] = {}
        with self._t.lock:
            for sid in supporter_ids:
                row = self._t.deliveries.get((blast_id, channel, sid))
                if row is not None and row.variant is not None:
                    out[sid] = row.variant
        return out
