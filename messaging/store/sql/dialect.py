"""What differs between PostgreSQL and SQLite, behind one object picked once per engine.

Every store in this package is written once, in SQLAlchemy Core; where the two databases
need different statements (upserts, array binds, the ledger's hot claim and outcome
statements, COPY imports, planner statistics) the store asks its :class:`SqlDialect`.
:func:`dialect_for` is the only place in the tree that tests which database an engine is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import ColumnElement, Connection, Engine, Table
from sqlalchemy.sql.dml import Insert

if TYPE_CHECKING:
    from messaging.ports import Outcome, SupporterRow

#: A claimed row as the dialects return it: ``(supporter_id, destination, attempts,
#: first_sms_at, *template_fields)``, ordered by supporter id.
ClaimRow = Sequence[Any]


class SqlDialect(Protocol):
    """The database-specific half of the SQL stores."""

    #: ``"postgresql"`` or ``"sqlite"`` (for messages, never for branching).
    name: str
    #: True when the planner keeps row estimates worth refreshing after a bulk write.
    keeps_statistics: bool

    def insert(self, table: Table) -> Any:
        """An INSERT that supports ``on_conflict_do_nothing/do_update`` and RETURNING."""
        ...

    def among(self, column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """``column IN values``, bound the cheapest way this database allows."""
        ...

    def json_field_in(
        self, column: ColumnElement[Any], name: str, values: Sequence[str]
    ) -> ColumnElement[bool]:
        """The JSON object in ``column`` has ``name`` equal to one of ``values`` (text)."""
        ...

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
        ...

    def record_outcomes(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        outcomes: Sequence[Outcome],
        now: datetime,
    ) -> None:
        """Write the outcomes of rows still ``sending``."""
        ...

    def estimated_rows(self, conn: Connection, table: str) -> float:
        """The planner's row estimate of ``table`` (only if :attr:`keeps_statistics`)."""
        ...

    def analyze(self, conn: Connection, table: str) -> None:
        """Refresh the planner's statistics of ``table``."""
        ...

    def expansion_join(self, page: Any, live_match: ColumnElement[bool]) -> tuple[Any, Any]:
        """``(source, live_elsewhere)``: the expansion page joined to "a live row of this
        destination already exists in the blast", and the predicate that reads it."""
        ...

    def begin_expansion(self, conn: Connection) -> None:
        """Session settings for one expansion statement (inside its transaction)."""
        ...

    def write_supporters(
        self,
        conn: Connection,
        rows: list[SupporterRow],
        columns_present: frozenset[str],
        now: datetime,
    ) -> tuple[int, frozenset[str]]:
        """Upsert a batch; ``(how many already existed, topics new to alert_topics)``."""
        ...


def dialect_for(engine: Engine | Connection) -> SqlDialect:
    """The dialect object of ``engine``'s database: the one place that asks which it is."""
    if engine.dialect.name == "postgresql":
        from messaging.store.sql.postgres import PostgresDialect

        return PostgresDialect()
    if engine.dialect.name == "sqlite":
        from messaging.store.sql.sqlite import SqliteDialect

        return SqliteDialect()
    raise ValueError(f"unsupported database {engine.dialect.name!r}: PostgreSQL or SQLite")


__all__ = ["ClaimRow", "Insert", "SqlDialect", "dialect_for"]
