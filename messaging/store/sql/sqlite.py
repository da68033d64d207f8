"""SQLite: the embedded default, where the portable statements are already fast enough.

Everything but the ``INSERT`` construct and the JSON lookup is :class:`~.dialect.SqlDialect`'s
portable SQLAlchemy Core, which SQLite (embedded, in-process) runs without a round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, func
from sqlalchemy.dialects import sqlite

from messaging.store.sql.dialect import SqlDialect


class SqliteDialect(SqlDialect):
    """:class:`~messaging.store.sql.dialect.SqlDialect` for SQLite (the embedded default)."""

    name = "sqlite"
    keeps_statistics = False

    def insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    def json_field_in(
        self, column: ColumnElement[Any], name: str, values: Sequence[str]
    ) -> ColumnElement[bool]:
        # ``name`` is [a-z0-9_] (the alert's rule), so quoting it in the path is safe.
        return func.json_extract(column, f'$."{name}"').in_(list(values))
