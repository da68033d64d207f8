"""PostgreSQL: the statements that make the stores fast on the production database.

A claim and an outcome write run once per send batch (1,000 emails, hundreds of texts).
Portable SQLAlchemy spends most of its time on them binding a thousand ``IN`` parameters
and running a thousand one-row ``UPDATE``\\ s; here each is one statement over arrays:
~30 µs of our CPU per recipient became a few. Supporter imports ``COPY`` each batch into a
scratch table and merge it with set-based statements (:mod:`.postgres_import`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    String,
    Table,
    Text,
    TextClause,
    any_,
    bindparam,
    cast,
    literal,
    or_,
    text,
    true,
)
from sqlalchemy.dialects import postgresql

from messaging.blasts.lifecycle import RowState
from messaging.store.sql.dialect import ClaimRow, SqlDialect, clipped_error
from messaging.store.sql.pg_arrays import int_array, text_array

if TYPE_CHECKING:
    from messaging.ports import Outcome, SupporterRow

#: Take ``pending`` rows (the at-most-once guard) and read their supporters' template fields
#: in the same statement. The LEFT JOIN keeps a row whose supporter was erased meanwhile.
CLAIM_SQL = """
    WITH taken AS (
        UPDATE deliveries
        SET state = :sending, attempts = attempts + 1, updated_at = :now
        WHERE blast_id = :blast_id AND channel = :channel
          AND supporter_id = ANY(CAST(:ids AS bigint[])) AND state = :pending
        RETURNING supporter_id, destination, attempts
    )
    SELECT taken.supporter_id, taken.destination, taken.attempts, s.first_sms_at{fields}
    FROM taken LEFT JOIN supporters s ON s.id = taken.supporter_id
    ORDER BY taken.supporter_id
"""

#: Write every outcome of a batch; only rows still ``sending`` move (a cancel may have
#: closed some meanwhile).
RECORD_SQL = text(
    """
    UPDATE deliveries AS d
    SET state = v.state, provider_message_id = v.pid, sender = v.sender,
        error_code = v.code, error = v.error, segments = v.segments,
        deferred_until = v.deferred_until, updated_at = :now,
        sent_at = CASE WHEN v.state = :sent THEN CAST(:now AS timestamptz) END
    FROM unnest(
        CAST(:sids AS bigint[]), CAST(:states AS text[]), CAST(:pids AS text[]),
        CAST(:senders AS text[]), CAST(:codes AS text[]), CAST(:errors AS text[]),
        CAST(:segments AS int[]), CAST(:deferred AS timestamptz[])
    ) AS v(sid, state, pid, sender, code, error, segments, deferred_until)
    WHERE d.blast_id = :blast_id AND d.channel = :channel
      AND d.supporter_id = v.sid AND d.state = :sending
    """
)


#: A batch whose outcomes differ only by supporter (an email call's recipients, all sent
#: with one message id): one array bound instead of eight of a thousand values each, each
#: built from the outcomes one by one.
RECORD_SAME_SQL = text(
    """
    UPDATE deliveries
    SET state = :state, provider_message_id = :pid, sender = :sender,
        error_code = :code, error = :error, segments = CAST(:segments AS int),
        deferred_until = CAST(:deferred AS timestamptz), updated_at = :now,
        sent_at = CAST(:sent_at AS timestamptz)
    WHERE blast_id = :blast_id AND channel = :channel
      AND supporter_id = ANY(CAST(:sids AS bigint[])) AND state = :sending
    """
)


# One per set of fields templates read (a handful in a fleet's life: most read first_name).
@lru_cache(maxsize=64)
def _claim_statement(fields: tuple[str, ...]) -> TextClause:
    return text(CLAIM_SQL.format(fields="".join(f", s.{f}" for f in fields)))


class PostgresDialect(SqlDialect):
    """:class:`~messaging.store.sql.dialect.SqlDialect` for PostgreSQL (psycopg 3)."""

    name = "postgresql"
    keeps_statistics = True

    def insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    def among(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        # One bound array instead of one parameter per value: a batch binds hundreds, and
        # compiling them cost more than the query. Ids and strings go as array text.
        as_array = postgresql.ARRAY(column.type)
        if isinstance(column.type, Integer):
            as_text = int_array(values)
        elif isinstance(column.type, String):
            as_text = text_array(values)
        else:
            return column == any_(bindparam(None, list(values), type_=as_array))
        return column == any_(cast(bindparam(None, as_text, Text()), as_array))

    def json_field_in(
        self, column: ColumnElement[Any], name: str, values: Sequence[str]
    ) -> ColumnElement[bool]:
        # Containment, ``fields @> '{"ward": "7"}'``, is what the GIN index
        # (jsonb_path_ops) answers; ``fields ->> 'ward' = '7'`` would scan every supporter.
        return or_(*(column.op("@>")(literal({name: v}, postgresql.JSONB())) for v in values))

    def claim(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        supporter_ids: Sequence[int],
        fields: Sequence[str],
        now: datetime,
    ) -> Sequence[ClaimRow]:
        return conn.execute(
            _claim_statement(tuple(fields)),
            {
                "sending": RowState.SENDING,
                "pending": RowState.PENDING,
                "now": now,
                "blast_id": blast_id,
                "channel": channel,
                "ids": int_array(supporter_ids),
            },
        ).all()  # fetchall: iterating the result fetches row by row

    def record_outcomes(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        outcomes: Sequence[Outcome],
        now: datetime,
    ) -> None:
        o = outcomes[0]
        if all(
            x.state == o.state
            and x.provider_message_id == o.provider_message_id
            and x.sender == o.sender
            and x.error_code == o.error_code
            and x.error == o.error
            and x.segments == o.segments
            and x.deferred_until == o.deferred_until
            for x in outcomes
        ):
            conn.execute(
                RECORD_SAME_SQL,
                {
                    "now": now,
                    "sending": RowState.SENDING,
                    "blast_id": blast_id,
                    "channel": channel,
                    "sids": int_array([x.supporter_id for x in outcomes]),
                    "state": o.state,
                    "pid": o.provider_message_id,
                    "sender": o.sender,
                    "code": o.error_code,
                    "error": clipped_error(o.error),
                    "segments": o.segments,
                    "deferred": o.deferred_until,
                    "sent_at": now if o.state == RowState.SENT else None,
                },
            )
            return
        conn.execute(
            RECORD_SQL,
            {
                "now": now,
                "sent": RowState.SENT,
                "sending": RowState.SENDING,
                "blast_id": blast_id,
                "channel": channel,
                "sids": int_array([o.supporter_id for o in outcomes]),
                "states": text_array([o.state for o in outcomes]),
                "pids": text_array([o.provider_message_id for o in outcomes]),
                "senders": text_array([o.sender for o in outcomes]),
                "codes": text_array([o.error_code for o in outcomes]),
                "errors": text_array([clipped_error(o.error) for o in outcomes]),
                "segments": int_array([o.segments for o in outcomes]),
                "deferred": [o.deferred_until for o in outcomes],
            },
        )

    def estimated_rows(self, conn: Connection, table: str) -> float:
        return float(
            conn.execute(
                text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": table},
            ).scalar_one()
        )

    def analyze(self, conn: Connection, table: str) -> None:
        conn.exec_driver_sql(f"ANALYZE {table}")

    def expansion_join(self, page: Any, live_match: ColumnElement[bool]) -> tuple[Any, Any]:
        # A correlated EXISTS inside an OR becomes a *hashed* subplan that reads every
        # row of the blast written so far, once per page: quadratic in the blast size
        # (13 s per 5,000-row page at 20k rows under concurrent sending). A LATERAL
        # LIMIT 1 is one probe of the partial unique index per page row.
        from sqlalchemy import select

        live = select(literal(1).label("hit")).where(live_match).limit(1).lateral("live")
        return page.outerjoin(live, true()), live.c.hit.is_not(None)

    def begin_expansion(self, conn: Connection) -> None:
        # Every relation of an expansion is reached by key range or key (page bounds,
        # primary keys, the partial unique index); on small or freshly analysed tables the
        # planner otherwise scans all supporters for each page.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")

    def write_supporters(
        self,
        conn: Connection,
        rows: list[SupporterRow],
        columns_present: frozenset[str],
        now: datetime,
    ) -> tuple[int, frozenset[str]]:
        from messaging.store.sql.postgres_import import write_postgres

        return write_postgres(conn, rows, columns_present, now)
