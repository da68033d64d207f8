"""The topic store's in-memory twin."""

from __future__ import annotations

from datetime import UTC, datetime

from messaging.ports import TopicInfo
from messaging.store.memory.tables import MemoryTables
from messaging.topics import validate_topic_name


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
            return [
                TopicInfo(name, arn, counts.get(name, 0), created)
                for name, (arn, created) in sorted(self._t.topics.items())
            ]
