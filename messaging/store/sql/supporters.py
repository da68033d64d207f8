"""Bulk upsert of supporters and their subscriptions, one batch per transaction.

The CSV import (contract §5) hands over batches of already-normalised rows; this module only
knows the tables. Each batch is one transaction: find which external ids exist (so the report
can say inserted vs updated), upsert by ``external_id``, then, when the file has a ``topics``
column, make each supporter's subscriptions exactly the topics named, registering unknown
topics in ``alert_topics`` for ``rapid provision`` to create.

Two ways to the same result, chosen by the dialect: on PostgreSQL the batch is ``COPY``-ed
into a temporary table and merged by set-based statements (:mod:`.postgres_import`): a
multi-row ``INSERT … VALUES`` of thousands of rows spends most of its time building and
parsing the query on the client, while COPY streams the rows in the wire format. On SQLite
(embedded, in-process) SQLAlchemy's executemany is already fast (:mod:`.sqlite`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, or_

from messaging.ports import SUPPORTER_COLUMNS, BatchResult, SupporterRow
from messaging.store.schema import supporters
from messaging.store.sql.dialect import SqlDialect, dialect_for

#: Leading fields of :class:`SupporterRow` that are ``supporters`` columns, in COPY order.
ROW_WIDTH = 1 + len(SUPPORTER_COLUMNS)


class SqlSupporterWriter:
    """Writes batches of :class:`SupporterRow` to ``supporters`` and ``subscriptions``."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self._engine = engine
        self._dialect = dialect or dialect_for(engine)

    def write_batch(
        self, rows: Sequence[SupporterRow], columns_present: frozenset[str]
    ) -> BatchResult:
        """Upsert ``rows`` by external id in one transaction.

        On update only the columns in ``columns_present`` (the file's header) are
        overwritten; the others keep their stored value. A ``timezone`` that was derived
        rather than read (``timezone`` not in the header) fills in or corrects the stored
        one but never erases it. New supporters get ``False`` opt-ins when the file has no
        opt-in column. If ``topics`` is present, each row's subscriptions become exactly its
        topics. Should an external id repeat within ``rows``, the last row wins.
        """
        unique = list({row.external_id: row for row in rows}.values())
        if not unique:
            return BatchResult(0, 0)
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            existing, new_topics = self._dialect.write_supporters(
                conn, unique, columns_present, now
            )
        return BatchResult(len(unique) - existing, existing, new_topics)


def supporter_upsert(insert: Any, columns_present: frozenset[str]) -> Any:
    """``insert`` made an upsert by external id that overwrites what a re-import may.

    A row whose values would not change is left alone (no new row version, no index
    churn, ``updated_at`` kept): re-importing last night's file mostly changes nothing.
    """
    excluded = insert.excluded
    update: dict[str, Any] = {
        name: excluded[name] for name in SUPPORTER_COLUMNS if name in columns_present
    }
    if "timezone" not in columns_present:
        # Derived from the phone or ZIP, not read from the file: a better guess than what we
        # had, but no guess is no reason to forget the zone an earlier file gave.
        update["timezone"] = func.coalesce(excluded.timezone, supporters.c.timezone)
    changed = or_(*(supporters.c[name].is_distinct_from(value) for name, value in update.items()))
    update["updated_at"] = excluded.updated_at
    return insert.on_conflict_do_update(index_elements=["external_id"], set_=update, where=changed)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
