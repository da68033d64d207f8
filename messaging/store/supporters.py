"""Bulk upsert of supporters and their subscriptions, one batch per transaction.

The CSV import (contract §5) hands over batches of already-normalised rows; this module only
knows the tables. Each batch is one transaction: find which external ids exist (so the report
can say inserted vs updated), upsert by ``external_id``, then, when the file has a ``topics``
column, make each supporter's subscriptions exactly the topics named, registering unknown
topics in ``alert_topics`` for ``rapid provision`` to create.

Two ways to the same result. On PostgreSQL the batch is ``COPY``-ed into a temporary table
and merged by set-based statements: a multi-row ``INSERT … VALUES`` of thousands of rows
spends most of its time building and parsing the query on the client, while COPY streams
the rows in the wire format. On SQLite (embedded, in-process) SQLAlchemy's executemany is
already fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from messaging.store.schema import alert_topics, subscriptions, supporters

#: Columns an import may set, in table order. ``external_id`` is the key, never updated.
SUPPORTER_COLUMNS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "phone",
    "email",
    "postal_code",
    "state",
    "tags",
    "timezone",
    "sms_opt_in",
    "email_opt_in",
)

#: Most values one SQLite ``IN (...)`` list carries: far below its 32,766 bound parameters
#: (SQLite 3.32+), whatever batch size the caller picks.
IN_CHUNK = 10_000


class SupporterRow(NamedTuple):
    """One supporter as the import will store it: every value already normalised.

    ``None`` means "no value" (stored as NULL). The opt-ins are plain booleans because an
    absent or unusable opt-in is no consent (contract §5). ``topics`` matters only when the
    file has a ``topics`` column.
    """

    external_id: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    postal_code: str | None = None
    state: str | None = None
    tags: str | None = None
    timezone: str | None = None
    sms_opt_in: bool = False
    email_opt_in: bool = False
    topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did: supporters inserted and updated, topics registered for the first time.

    ``updated`` counts the supporters that already existed, whether or not the file changed
    any of their values (an unchanged row is not rewritten).
    """

    inserted: int
    updated: int
    new_topics: frozenset[str] = field(default_factory=frozenset)


class SupporterWriter:
    """Writes batches of :class:`SupporterRow` to ``supporters`` and ``subscriptions``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

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
            if self._postgres:
                existing, new_topics = _write_postgres(conn, unique, columns_present, now)
            else:
                existing, new_topics = _write_sqlite(conn, unique, columns_present, now)
        return BatchResult(len(unique) - existing, existing, new_topics)


def _upsert(insert: postgresql.Insert | sqlite.Insert, columns_present: frozenset[str]) -> Any:
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


# --- PostgreSQL ---------------------------------------------------------------------------

#: Leading fields of :class:`SupporterRow` that are ``supporters`` columns, in COPY order.
_ROW_WIDTH = 1 + len(SUPPORTER_COLUMNS)

# Per-transaction scratch tables, dropped at commit. Their own MetaData: they are not part
# of the schema, and migrations must never see them. ``existed`` marks what the batch's
# existence query found, so new and known supporters take different statements.
_scratch = MetaData()
_batch_rows = Table(
    "rapid_import_rows",
    _scratch,
    Column("external_id", String, nullable=False),
    *(Column(name, Boolean if name.endswith("_opt_in") else String) for name in SUPPORTER_COLUMNS),
    Column("existed", Boolean, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
_batch_topics = Table(
    "rapid_import_topics",
    _scratch,
    Column("supporter_id", BigInteger, nullable=False),
    Column("topic", String, nullable=False),
    Column("existed", Boolean, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
_TEXT_ARRAY = postgresql.ARRAY(String)
_ID_ARRAY = postgresql.ARRAY(BigInteger)


def _write_postgres(
    conn: Connection, rows: list[SupporterRow], columns_present: frozenset[str], now: datetime
) -> tuple[int, frozenset[str]]:
    """Upsert on PostgreSQL; (how many already existed, topics new to ``alert_topics``).

    The existence query also yields the ids of known supporters, so only new (or changed)
    rows need to come back through RETURNING.

    Every statement reaches ``supporters`` and ``subscriptions`` through their indexes, driven
    by the batch (an array of keys, a scratch table scanned once): joining a scratch table
    to them instead lets a planner with stale statistics (a table that grew by a million
    rows within a minute) hash the whole table once per batch.

    Supporters the existence query did not find are inserted with a plain INSERT, which
    costs the server a quarter less than ``ON CONFLICT`` (measured: 18 µs a row against
    22-24 µs); should another import have inserted one of them meanwhile, the INSERT fails
    inside its savepoint and those rows go through the upsert after all.
    """
    ids: dict[str, int] = {
        external_id: int(id_)
        for id_, external_id in conn.execute(
            select(supporters.c.id, supporters.c.external_id).where(
                supporters.c.external_id == func.any(bindparam("ids", type_=_TEXT_ARRAY))
            ),
            {"ids": [row.external_id for row in rows]},
        )
    }
    existing = set(ids)
    driver: Any = conn.connection.driver_connection  # same connection, same transaction
    _batch_rows.create(conn)
    with driver.cursor() as cursor, cursor.copy(_copy_sql(_batch_rows)) as copy:
        for row in rows:
            copy.write_row((*row[:_ROW_WIDTH], row.external_id in existing))
    names = ["external_id", *SUPPORTER_COLUMNS]
    columns = [*names, "created_at", "updated_at"]
    source = select(
        *(_batch_rows.c[name] for name in names),
        literal(now, supporters.c.created_at.type),
        literal(now, supporters.c.updated_at.type),
    )
    with_topics = "topics" in columns_present
    returning = (supporters.c.id, supporters.c.external_id) if with_topics else ()
    insert = postgresql.insert(supporters)
    upsert = _upsert(insert, columns_present)

    def run(statement: Any) -> None:
        # RETURNING names the rows written: new ids, and any row deleted since we looked.
        result = conn.execute(statement.returning(*returning) if returning else statement)
        if returning:
            ids.update((external_id, int(id_)) for id_, external_id in result)

    if len(existing) < len(rows):
        new_rows = source.where(~_batch_rows.c.existed)
        try:
            with conn.begin_nested():
                run(insert.from_select(columns, new_rows))
        except IntegrityError:
            # Another writer inserted one of these external ids after we looked.
            run(upsert.from_select(columns, new_rows))
    if existing:
        run(upsert.from_select(columns, source.where(_batch_rows.c.existed)))
    if not with_topics:
        return len(existing), frozenset()
    return len(existing), _merge_topics_postgres(conn, driver, rows, ids, existing, now)


def _merge_topics_postgres(
    conn: Connection,
    driver: Any,
    rows: list[SupporterRow],
    ids: dict[str, int],
    existing: set[str],
    now: datetime,
) -> frozenset[str]:
    _batch_topics.create(conn)
    with driver.cursor() as cursor, cursor.copy(_copy_sql(_batch_topics)) as copy:
        for row in rows:
            supporter_id = ids[row.external_id]
            existed = row.external_id in existing
            for topic in row.topics:
                copy.write_row((supporter_id, topic, existed))
    new_topics = frozenset(
        conn.scalars(
            postgresql.insert(alert_topics)
            .from_select(
                ["name", "created_at"],
                select(
                    _batch_topics.c.topic, literal(now, alert_topics.c.created_at.type)
                ).distinct(),
            )
            .on_conflict_do_nothing(index_elements=["name"])
            # RETURNING reports only the rows actually inserted: the topics that are new.
            .returning(alert_topics.c.name)
        )
    )
    wanted = select(
        _batch_topics.c.topic,
        _batch_topics.c.supporter_id,
        literal(now, subscriptions.c.created_at.type),
    )
    columns = ["topic", "supporter_id", "created_at"]
    if len(existing) < len(rows):
        # A supporter created in this transaction is invisible to every other one until we
        # commit, so nobody else can subscribe it meanwhile: a plain INSERT (a third cheaper
        # for the server than ON CONFLICT) cannot collide.
        conn.execute(
            postgresql.insert(subscriptions).from_select(
                columns, wanted.where(~_batch_topics.c.existed)
            )
        )
    if existing:
        # Only supporters that existed before this batch can hold subscriptions to drop.
        keep = exists().where(
            _batch_topics.c.supporter_id == subscriptions.c.supporter_id,
            _batch_topics.c.topic == subscriptions.c.topic,
        )
        conn.execute(
            delete(subscriptions).where(
                subscriptions.c.supporter_id == func.any(bindparam("ids", type_=_ID_ARRAY)),
                ~keep,
            ),
            {"ids": [ids[external_id] for external_id in existing]},
        )
        conn.execute(
            postgresql.insert(subscriptions)
            .from_select(columns, wanted.where(_batch_topics.c.existed))
            .on_conflict_do_nothing(index_elements=["topic", "supporter_id"])
        )
    return new_topics


def _copy_sql(table: Table) -> str:
    columns = ", ".join(column.name for column in table.columns)
    return f"COPY {table.name} ({columns}) FROM STDIN"


# --- SQLite -------------------------------------------------------------------------------


def _write_sqlite(
    conn: Connection, rows: list[SupporterRow], columns_present: frozenset[str], now: datetime
) -> tuple[int, frozenset[str]]:
    """Upsert on SQLite; (how many already existed, topics new to ``alert_topics``)."""
    ids: dict[str, int] = {}
    for chunk in _chunks([row.external_id for row in rows], IN_CHUNK):
        query = select(supporters.c.id, supporters.c.external_id).where(
            supporters.c.external_id.in_(chunk)
        )
        ids.update((external_id, int(id_)) for id_, external_id in conn.execute(query))
    existing = set(ids)
    upsert = _upsert(sqlite.insert(supporters), columns_present).returning(
        supporters.c.id, supporters.c.external_id
    )
    fields = ("external_id", *SUPPORTER_COLUMNS)
    params = [
        {**dict(zip(fields, row[:_ROW_WIDTH], strict=True)), "created_at": now, "updated_at": now}
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
    for chunk in _chunks([ids[external_id] for external_id in existing], IN_CHUNK):
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


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
