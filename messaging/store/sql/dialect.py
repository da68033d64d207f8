"""What differs between PostgreSQL and SQLite, behind one object picked once per engine.

Every store in this package is written once, in SQLAlchemy Core; where the two databases
need different statements (upserts, array binds, the ledger's hot claim and outcome
statements, COPY imports, planner statistics) the store asks its :class:`SqlDialect`.
:class:`SqlDialect` itself holds the portable statements, which run on either database;
:mod:`.sqlite` only names its ``INSERT`` and JSON functions, and :mod:`.postgres` overrides
the hot statements with array SQL. :func:`dialect_for` is the only place in the tree that
tests which database an engine is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Engine, Table, bindparam, exists, select
from sqlalchemy.sql.dml import Insert

from messaging.blasts.lifecycle import RowState
from messaging.store.schema import deliveries, supporters

if TYPE_CHECKING:
    from messaging.ports import Outcome, SupporterRow

#: A claimed row as the dialects return it: ``(supporter_id, destination, attempts,
#: first_sms_at, *template_fields)``, ordered by supporter id.
ClaimRow = Sequence[Any]

#: Longest provider error text kept on a delivery row (the column is unbounded; a vendor's
#: HTML error page is not worth storing whole on every failed row).
ERROR_CHARS = 1000


def clipped_error(error: str | None) -> str | None:
    """``error`` as stored: empty becomes NULL, long text is cut at :data:`ERROR_CHARS`."""
    return (error or None) and error[:ERROR_CHARS]


class SqlDialect:
    """The database-specific half of the SQL stores, with portable statements as defaults.

    A subclass names its ``INSERT`` construct and JSON lookup; it overrides any other
    method only where its database has a faster statement for the same result.
    """

    #: ``"postgresql"`` or ``"sqlite"`` (for messages, never for branching).
    name: str
    #: True when the planner keeps row estimates worth refreshing after a bulk write.
    keeps_statistics: bool = False

    def insert(self, table: Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing/do_update`` and RETURNING."""
        raise NotImplementedError

    def json_field_in(
        self, column: ColumnElement[Any], name: str, values: Sequence[str]
    ) -> ColumnElement[bool]:
        """The JSON object in ``column`` has ``name`` equal to one of ``values`` (text)."""
        raise NotImplementedError

    def among(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """``column IN values``, bound the cheapest way this database allows."""
        return column.in_(list(values))

    def claim(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        supporter_ids: Sequence[int],
        fields: Sequence[str],
        now: datetime,
    ) -> Sequence[ClaimRow]:
        """Move ``pending`` rows to ``sending`` and return them with their template fields."""
        taken = conn.execute(
            deliveries.update()
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel == channel,
                self.among(deliveries.c.supporter_id, supporter_ids),
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
                ).where(self.among(supporters.c.id, [t.supporter_id for t in taken]))
            )
        }
        # A row whose supporter was erased meanwhile keeps empty fields (a LEFT JOIN's
        # answer).
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
        """Write the outcomes of rows still ``sending`` (a cancel may have closed some)."""
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
                    "b_error": clipped_error(o.error),
                    "b_segments": o.segments,
                    "b_sent_at": now if o.state == RowState.SENT else None,
                    "b_deferred_until": o.deferred_until,
                }
                for o in outcomes
            ],
        )

    def estimated_rows(self, conn: Connection, table: str) -> float:
        """The planner's row estimate of ``table`` (only if :attr:`keeps_statistics`)."""
        return 0.0  # a database that plans by index shape has nothing to estimate

    def analyze(self, conn: Connection, table: str) -> None:
        """Refresh the planner's statistics of ``table``."""

    def expansion_join(self, page: Any, live_match: ColumnElement[bool]) -> tuple[Any, Any]:
        """``(source, live_elsewhere)``: the expansion page joined to "a live row of this
        destination already exists in the blast", and the predicate that reads it."""
        return page, exists().where(live_match)

    def begin_expansion(self, conn: Connection) -> None:
        """Session settings for one expansion statement (inside its transaction)."""

    def write_supporters(
        self,
        conn: Connection,
        rows: list[SupporterRow],
        columns_present: frozenset[str],
        now: datetime,
    ) -> tuple[int, frozenset[str]]:
        """Upsert a batch; ``(how many already existed, topics new to alert_topics)``."""
        from messaging.store.sql.supporters import write_portable

        return write_portable(conn, self.insert, rows, columns_present, now)


def dialect_for(engine: Engine | Connection) -> SqlDialect:
    """The dialect object of ``engine``'s database: the one place that asks which it is."""
    if engine.dialect.name == "postgresql":
        from messaging.store.sql.postgres import PostgresDialect

        return PostgresDialect()
    if engine.dialect.name == "sqlite":
        from messaging.store.sql.sqlite import SqliteDialect

        return SqliteDialect()
    raise ValueError(f"unsupported database {engine.dialect.name!r}: PostgreSQL or SQLite")


__all__ = ["ClaimRow", "Insert", "SqlDialect", "clipped_error", "dialect_for"]
