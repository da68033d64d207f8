"""The topic store's in-memory twin."""

from __future__ import annotations

from datetime import UTC, datetime

from config.settings import QuietHours, parse_quiet_hours
from messaging.content.topics import validate_topic_name
from messaging.ports import TopicInfo
from messaging.store.memory.tables import MemoryTables


class MemoryTopicStore:
    """:class:`~messaging.ports.TopicStore` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def register(self, name: str, sns_topic_arn: str | None = None) -> bool:
        validate_topic_name(name)
        with self._t.lock:
            known = self._t.topics.get(name)
            if known is None:
                self._t.topics[name] = (sns_topic_arn, datetime.now(UTC))
                return True
            if sns_topic_arn:
                self._t.topics[name] = (sns_topic_arn, known[1])
            return False

    def set_quiet_hours(self, name: str, window: QuietHours | None) -> bool:
        with self._t.lock:
            if name not in self._t.topics:
                return False
            if window is None:
                self._t.topic_quiet_hours.pop(name, None)
            else:
                self._t.topic_quiet_hours[name] = str(window)
            return True

    def quiet_hours(self, name: str) -> QuietHours | None:
        with self._t.lock:
            raw = self._t.topic_quiet_hours.get(name)
        return parse_quiet_hours(raw) if raw else None

    def names(self) -> list[str]:
        with self._t.lock:
            return sorted(self._t.topics)

    def get(self, name: str) -> TopicInfo | None:
        return next((t for t in self.list() if t.name == name), None)

    def list(self) -> list[TopicInfo]:
        with self._t.lock:
            counts: dict[str, int] = {}
            for topic, _ in self._t.subscriptions:
                counts[topic] = counts.get(topic, 0) + 1
            quiet = self._t.topic_quiet_hours
            return [
                TopicInfo(
                    name,
                    arn,
                    counts.get(name, 0),
                    created,
                    parse_quiet_hours(quiet[name]) if name in quiet else None,
                )
                for name, (arn, created) in sorted(self._t.topics.items())
            ]
