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
(embedded, in-process) SQLAlchemy's executemany is already fast (:func:`write_portable`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, or_, select

from messaging.ports import SUPPORTER_COLUMNS, BatchResult, SupporterRow
from messaging.store.schema import alert_topics, subscriptions, supporters
from messaging.store.sql.dialect import SqlDialect, dialect_for

#: Leading fields of :class:`SupporterRow` that are ``supporters`` columns, in COPY order.
ROW_WIDTH = 1 + len(SUPPORTER_COLUMNS)

#: Most values one portable ``IN (...)`` list carries: far below SQLite's 32,766 bound
#: parameters (SQLite 3.32+), whatever batch size the caller picks.
IN_CHUNK = 10_000


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


def write_portable(
    conn: Connection,
    insert: Any,
    rows: list[SupporterRow],
    columns_present: frozenset[str],
    now: datetime,
) -> tuple[int, frozenset[str]]:
    """Upsert with portable statements; (how many already existed, topics new to
    ``alert_topics``). ``insert`` is the dialect's INSERT construct (``on_conflict_*``)."""
    ids: dict[str, int] = {}
    for chunk in chunks([row.external_id for row in rows], IN_CHUNK):
        query = select(supporters.c.id, supporters.c.external_id).where(
            supporters.c.external_id.in_(chunk)
        )
        ids.update((external_id, int(id_)) for id_, external_id in conn.execute(query))
    existing = set(ids)
    upsert = supporter_upsert(insert(supporters), columns_present).returning(
        supporters.c.id, supporters.c.external_id
    )
    fields = ("external_id", *SUPPORTER_COLUMNS)
    params = [
        {**dict(zip(fields, row[:ROW_WIDTH], strict=True)), "created_at": now, "updated_at": now}
        for row in rows
    ]
    # RETURNING names the rows written (new or changed); unchanged ones keep their known id.
    ids.update((external_id, int(id_)) for id_, external_id in conn.execute(upsert, params))
    if "topics" not in columns_present:
        return len(existing), frozenset()
    new_topics = _register_topics(conn, insert, rows, now)
    _replace_subscriptions(conn, insert, rows, ids, existing, now)
    return len(existing), new_topics


def _register_topics(
    conn: Connection, insert: Any, rows: list[SupporterRow], now: datetime
) -> frozenset[str]:
    names = sorted({topic for row in rows for topic in row.topics})
    if not names:
        return frozenset()
    new: set[str] = set()
    stmt = (
        insert(alert_topics)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(alert_topics.c.name)
    )
    for name in names:
        # One at a time: RETURNING names only what was actually inserted.
        new.update(conn.scalars(stmt, {"name": name, "created_at": now}))
    return frozenset(new)


def _replace_subscriptions(
    conn: Connection,
    insert: Any,
    rows: list[SupporterRow],
    ids: dict[str, int],
    existing: set[str],
    now: datetime,
) -> None:
    wanted = {(ids[row.external_id], topic) for row in rows for topic in row.topics}
    current: set[tuple[int, str]] = set()
    # Only supporters that existed before this batch can hold subscriptions already.
    for chunk in chunks([ids[external_id] for external_id in existing], IN_CHUNK):
        query = select(subscriptions.c.supporter_id, subscriptions.c.topic).where(
            subscriptions.c.supporter_id.in_(chunk)
        )
        current.update((int(sid), str(topic)) for sid, topic in conn.execute(query))
    stale = current - wanted
    if stale:
        conn.execute(
            subscriptions.delete().where(
                subscriptions.c.supporter_id == bindparam("sid"),
                subscriptions.c.topic == bindparam("tp"),
            ),
            [{"sid": sid, "tp": topic} for sid, topic in sorted(stale)],
        )
    missing = wanted - current
    if missing:
        conn.execute(
            insert(subscriptions).on_conflict_do_nothing(index_elements=["topic", "supporter_id"]),
            [
                {"topic": topic, "supporter_id": sid, "created_at": now}
                for sid, topic in sorted(missing)
            ],
        )
