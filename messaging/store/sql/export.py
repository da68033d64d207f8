"""The export's read of the ledger: one streamed query, in primary-key order."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, select

from messaging.blasts.export import ExportRow
from messaging.store.schema import deliveries, supporters

#: Rows fetched per round trip from the server-side cursor (PostgreSQL) or SQLite's.
FETCH_ROWS = 5_000


class SqlExportStore:
    """:class:`~messaging.blasts.export.ExportStore` on ``deliveries`` (+ ``supporters``)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def export_rows(self, blast_id: str) -> Iterator[ExportRow]:
        """See :class:`~messaging.blasts.export.ExportStore`: a server-side cursor, so memory holds
        :data:`FETCH_ROWS` rows at a time whatever the blast's size."""
        query = (
            select(
                supporters.c.external_id,
                deliveries.c.channel,
                deliveries.c.destination,
                deliveries.c.state,
                deliveries.c.error_code,
                deliveries.c.sent_at,
                deliveries.c.delivered_at,
                deliveries.c.clicked_at,
                deliveries.c.variant,
            )
            .select_from(
                deliveries.outerjoin(supporters, supporters.c.id == deliveries.c.supporter_id)
            )
            .where(deliveries.c.blast_id == blast_id)
            # The primary key's order: an index range scan, no sort of a million rows.
            .order_by(deliveries.c.channel, deliveries.c.supporter_id)
        )
        make = ExportRow._make
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(
                query
            )
            for row in result:
                yield make(row)
