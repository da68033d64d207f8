"""The supporter import's in-memory twin."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from messaging.ports import SUPPORTER_COLUMNS, BatchResult, SupporterRow
from messaging.store.memory.tables import MemoryTables


class MemorySupporterWriter:
    """:class:`~messaging.ports.SupporterWriter` over :class:`MemoryTables`."""

    def __init__(self, tables: MemoryTables) -> None:
        self._t = tables

    def write_batch(
        self, rows: Sequence[SupporterRow], columns_present: frozenset[str]
    ) -> BatchResult:
        unique = list({row.external_id: row for row in rows}.values())
        now = datetime.now(UTC)
        existed, new_topics = 0, set()
        with self._t.lock:
            for row in unique:
                values = dict(zip(("external_id", *SUPPORTER_COLUMNS), row, strict=False))
                sid = self._t.by_external_id.get(row.external_id)
                if sid is None:
                    sid = self._t.next_supporter_id
                    self._t.next_supporter_id += 1
                    self._t.by_external_id[row.external_id] = sid
                    self._t.supporters[sid] = {
                        **values,
                        "id": sid,
                        "first_sms_at": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                else:
                    existed += 1
                    person = self._t.supporters[sid]
                    update = {k: values[k] for k in SUPPORTER_COLUMNS if k in columns_present}
                    if "timezone" not in columns_present and values["timezone"] is not None:
                        # A derived zone corrects the stored one but never erases it.
                        update["timezone"] = values["timezone"]
                    if any(person.get(k) != v for k, v in update.items()):
                        person.update(update, updated_at=now)
                if "topics" in columns_present:
                    self._t.subscriptions -= {(t, s) for t, s in self._t.subscriptions if s == sid}
                    for topic in row.topics:
                        self._t.subscriptions.add((topic, sid))
                        if topic not in self._t.topics:
                            self._t.topics[topic] = (None, now)
                            new_topics.add(topic)
        return BatchResult(len(unique) - existed, existed, frozenset(new_topics))
