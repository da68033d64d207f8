"""Alert topics in the system of record."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from config.settings import QuietHours, parse_quiet_hours
from messaging.content.topics import validate_topic_name
from messaging.ports import TopicInfo
from messaging.store.schema import alert_topics, subscriptions
from messaging.store.sql.dialect import SqlDialect, dialect_for


class SqlTopicStore:
    """:class:`~messaging.ports.TopicStore` on ``alert_topics``."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self._engine = engine
        self._dialect = dialect or dialect_for(engine)

    def register(self, name: str, sns_topic_arn: str | None = None) -> bool:
        """Record a topic (idempotent); set its ARN when given. True if it was new."""
        validate_topic_name(name)
        with self._engine.begin() as conn:
            # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT statements.
            inserted = conn.execute(
                self._dialect.insert(alert_topics)
                .values(name=name, sns_topic_arn=sns_topic_arn, created_at=datetime.now(UTC))
                .on_conflict_do_nothing(index_elements=["name"])
                .returning(alert_topics.c.name)
            ).first()
            if sns_topic_arn and not inserted:
                conn.execute(
                    alert_topics.update()
                    .where(alert_topics.c.name == name)
                    .values(sns_topic_arn=sns_topic_arn)
                )
        return inserted is not None

    def set_quiet_hours(self, name: str, window: QuietHours | None) -> bool:
        """Give a registered topic its own quiet window (None: the fleet's)."""
        with self._engine.begin() as conn:
            changed = conn.execute(
                alert_topics.update()
                .where(alert_topics.c.name == name)
                .values(quiet_hours=str(window) if window else None)
                .returning(alert_topics.c.name)
            ).first()
        return changed is not None

    def quiet_hours(self, name: str) -> QuietHours | None:
        """The topic's own quiet window, or None (a primary-key lookup)."""
        with self._engine.connect() as conn:
            raw = conn.scalar(select(alert_topics.c.quiet_hours).where(alert_topics.c.name == name))
        return parse_quiet_hours(raw) if raw else None

    def names(self) -> list[str]:
        """Every registered topic name, sorted."""
        with self._engine.connect() as conn:
            return list(conn.scalars(select(alert_topics.c.name).order_by(alert_topics.c.name)))

    def get(self, name: str) -> TopicInfo | None:
        """One topic, or None."""
        return next((t for t in self.list() if t.name == name), None)

    def list(self) -> list[TopicInfo]:
        """Every topic with its subscriber count, sorted by name."""
        counts = (
            select(subscriptions.c.topic, func.count().label("n"))
            .group_by(subscriptions.c.topic)
            .subquery()
        )
        query = (
            select(
                alert_topics.c.name,
                alert_topics.c.sns_topic_arn,
                func.coalesce(counts.c.n, 0),
                alert_topics.c.created_at,
                alert_topics.c.quiet_hours,
            )
            .select_from(alert_topics.outerjoin(counts, counts.c.topic == alert_topics.c.name))
            .order_by(alert_topics.c.name)
        )
        with self._engine.connect() as conn:
            return [
                TopicInfo(r[0], r[1], int(r[2]), r[3], parse_quiet_hours(r[4]) if r[4] else None)
                for r in conn.execute(query)
            ]
