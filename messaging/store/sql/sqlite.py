"""SQLite: the embedded default, where portable statements are already fast enough."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    bindparam,
    exists,
    func,
    select,
)
from sqlalchemy.dialects import sqlite

from messaging.lifecycle import RowState
from messaging.ports import SUPPORTER_COLUMNS, SupporterRow
from messaging.store.schema import alert_topics, deliveries, subscriptions, supporters
from messaging.store.sql.dialect import ClaimRow
from messaging.store.sql.supporters import ROW_WIDTH, chunks, supporter_upsert

if TYPE_CHECKING:
    from messaging.ports import Outcome

#: Most values one SQLite ``IN (...)`` list carries: far below its 32,766 bound parameters
#: (SQLite 3.32+), whatever batch size the caller picks.
IN_CHUNK = 10_000


class SqliteDialect:
    """:class:`~messaging.store.sql.dialect.SqlDialect` for SQLite (the embedded default)."""

    name = "sqlite"
    keeps_statistics = False

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def among(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        return column.in_(list(values))

    def json_field_in(
        self, column: ColumnElement[Any], name: str, values: Sequence[str]
    ) -> ColumnElement[bool]:
        # ``name`` is [a-z0-9_] (the alert's rule), so quoting it in the path is safe.
        return func.json_extract(column, f'$."{name}"').in_(list(values))

    def claim(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        supporter_ids: Sequence[int],
        fields: Sequence[str],
        now: datetime,
    ) -> Sequence[ClaimRow]:
        taken = conn.execute(
            deliveries.update()
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel == channel,
                deliveries.c.supporter_id.in_(list(supporter_ids)),
                deliveries.c.state == RowState.PENDING,
            )
            .values(state=RowState.SENDING, attempts=deliveries.c.attempts + 1, updated_at=now)
            .returning(deliveries.c.supporter_id, deliveries.c.destination, deliveries.c.attempts)
        ).all()
        if not taken:
            return []
        people = {
            row[0]: row[1:]
            for row in conn.execute(
                select(
                    supporters.c.id,
                    supporters.c.first_sms_at,
                    *(supporters.c[f] for f in fields),
                ).where(supporters.c.id.in_([t.supporter_id for t in taken]))
            )
        }
        # A row whose supporter was erased meanwhile keeps empty fields (as PostgreSQL's
        # LEFT JOIN does).
        blank = (None,) * (1 + len(fields))
        return [(sid, dest, att, *people.get(sid, blank)) for sid, dest, att in sorted(taken)]

    def record_outcomes(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        outcomes: Sequence[Outcome],
        now: datetime,
    ) -> None:
        stmt = (
            deliveries.update()
            .where(
                deliveries.c.blast_id == bindparam("b_blast"),
                deliveries.c.channel == bindparam("b_channel"),
                deliveries.c.supporter_id == bindparam("b_sid"),
                deliveries.c.state == RowState.SENDING,
            )
            .values(
                state=bindparam("b_state"),
                provider_message_id=bindparam("b_pid"),
                sender=bindparam("b_sender"),
                error_code=bindparam("b_code"),
                error=bindparam("b_error"),
                segments=bindparam("b_segments"),
                sent_at=bindparam("b_sent_at"),
                deferred_until=bindparam("b_deferred_until"),
                updated_at=now,
            )
        )
        conn.execute(
            stmt,
            [
                {
                    "b_blast": blast_id,
                    "b_channel": channel,
                    "b_sid": o.supporter_id,
                    "b_state": o.state,
                    "b_pid": o.provider_message_id,
                    "b_sender": o.sender,
                    "b_code": o.error_code,
                    "b_error": (o.error or None) and o.error[:1000],
                    "b_segments": o.segments,
                    "b_sent_at": now if o.state == RowState.SENT else None,
                    "b_deferred_until": o.deferred_until,
                }
                for o in outcomes
            ],
        )

    def estimated_rows(self, conn: Connection, table: str) -> float:
        return 0.0  # SQLite plans by index shape; there is nothing to refresh

    def analyze(self, conn: Connection, table: str) -> None:
        return None

    def expansion_join(self, page: Any, live_match: ColumnElement[bool]) -> tuple[Any, Any]:
        return page, exists().where(live_match)

    def begin_expansion(self, conn: Connection) -> None:
        return None

    def write_supporters(
        self,
        conn: Connection,
        rows: list[SupporterRow],
        columns_present: frozenset[str],
        now: datetime,
    ) -> tuple[int, frozenset[str]]:
        return write_sqlite(conn, rows, columns_present, now)


# --- the supporter import ---------------------------------------------------------------


def write_sqlite(
    conn: Connection, rows: list[SupporterRow], columns_present: frozenset[str], now: datetime
) -> tuple[int, frozenset[str]]:
    """Upsert on SQLite; (how many already existed, topics new to ``alert_topics``)."""
    ids: dict[str, int] = {}
    for chunk in chunks([row.external_id for row in rows], IN_CHUNK):
        query = select(supporters.c.id, supporters.c.external_id).where(
            supporters.c.external_id.in_(chunk)
        )
        ids.update((external_id, int(id_)) for id_, external_id in conn.execute(query))
    existing = set(ids)
    upsert = supporter_upsert(sqlite.insert(supporters), columns_present).returning(
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
    new_topics = _register_topics_sqlite(conn, rows, now)
    _replace_subscriptions_sqlite(conn, rows, ids, existing, now)
    return len(existing), new_topics


def _register_topics_sqlite(
    conn: Connection, rows: list[SupporterRow], now: datetime
) -> frozenset[str]:
    names = sorted({topic for row in rows for topic in row.topics})
    if not names:
        return frozenset()
    new: set[str] = set()
    stmt = (
        sqlite.insert(alert_topics)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(alert_topics.c.name)
    )
    for name in names:
        # One at a time: RETURNING names only what was actually inserted.
        new.update(conn.scalars(stmt, {"name": name, "created_at": now}))
    return frozenset(new)


def _replace_subscriptions_sqlite(
    conn: Connection,
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
            sqlite.insert(subscriptions).on_conflict_do_nothing(
                index_elements=["topic", "supporter_id"]
            ),
            [
                {"topic": topic, "supporter_id": sid, "created_at": now}
                for sid, topic in sorted(missing)
            ],
        )
