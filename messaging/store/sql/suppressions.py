"""The suppression list in the system of record, with an append-only audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select

from messaging.compliance.suppression import Channel, Suppression, suppression_key
from messaging.store.schema import suppression_events, suppressions
from messaging.store.sql.dialect import SqlDialect, dialect_for


class SqlSuppressionList:
    """A :class:`~messaging.compliance.suppression.SuppressionList` on its table."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self._engine = engine
        self._dialect = dialect or dialect_for(engine)

    def add(self, channel: Channel, value: str, *, reason: str, source: str) -> bool:
        """Suppress ``value``; True if it was not suppressed before. Always audited."""
        value = suppression_key(channel, value)
        now = datetime.now(UTC)
        with self._engine.begin() as conn:
            added = conn.execute(
                self._dialect.insert(suppressions)
                .values(channel=channel, value=value, reason=reason, source=source, created_at=now)
                .on_conflict_do_nothing(index_elements=["channel", "value"])
                # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT statements.
                .returning(suppressions.c.value)
            ).first()
            conn.execute(
                suppression_events.insert().values(
                    channel=channel, value=value, action="add", reason=reason, source=source, at=now
                )
            )
        return added is not None

    def remove(self, channel: Channel, value: str, *, source: str) -> bool:
        """Lift a suppression; True if there was one. Always audited."""
        value = suppression_key(channel, value)
        with self._engine.begin() as conn:
            removed = conn.execute(
                suppressions.delete()
                .where(suppressions.c.channel == channel, suppressions.c.value == value)
                .returning(suppressions.c.value)
            ).first()
            conn.execute(
                suppression_events.insert().values(
                    channel=channel,
                    value=value,
                    action="remove",
                    reason="lifted",
                    source=source,
                    at=datetime.now(UTC),
                )
            )
        return removed is not None

    def suppressed_among(self, channel: Channel, values: list[str]) -> set[str]:
        """Which of ``values`` are suppressed now (one indexed query; send-time check)."""
        if not values:
            return set()
        keys = {suppression_key(channel, v): v for v in values}
        query = select(suppressions.c.value).where(
            suppressions.c.channel == channel,
            self._dialect.among(suppressions.c.value, list(keys)),
        )
        with self._engine.connect() as conn:
            return {keys[v] for v in conn.scalars(query)}

    def lookup(self, channel: Channel, value: str) -> Suppression | None:
        """The active suppression of ``value``, if any."""
        query = select(suppressions).where(
            suppressions.c.channel == channel,
            suppressions.c.value == suppression_key(channel, value),
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        return Suppression(
            row["channel"], row["value"], row["reason"], row["source"], row["created_at"]
        )
