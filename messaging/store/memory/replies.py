"""In-memory replies: the twin of :mod:`messaging.store.sql.replies` for unit tests."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from datetime import datetime

from messaging.ports import NewReply, Reply


class MemoryReplyStore:
    """Replies in a list; the ledger's "last SMS to a phone" is given by the test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = []
        #: phone → (supporter id, blast id), as the ledger would answer.
        self.last_sent: dict[str, tuple[int | None, str | None]] = {}

    def seen(self, message_sid: str) -> bool:
        """True when this MessageSid was stored before."""
        with self._lock:
            return any(r.message_sid == message_sid for r in self._replies)

    def add(self, reply: NewReply) -> Reply | None:
        """Store one reply; None if its MessageSid was already stored."""
        with self._lock:
            if reply.message_sid and any(r.message_sid == reply.message_sid for r in self._replies):
                return None
            fields = {f.name: getattr(reply, f.name) for f in dataclasses.fields(NewReply)}
            stored = Reply(**fields, id=len(self._replies) + 1)
            self._replies.append(stored)
            return stored

    def last_sms_to(self, phone: str) -> tuple[int | None, str | None]:
        """See :meth:`messaging.ports.ReplyLog.last_sms_to`."""
        return self.last_sent.get(phone, (None, None))

    def replies(
        self, *, needs_review: bool = False, from_number: str | None = None, limit: int = 100
    ) -> list[Reply]:
        """Newest first; only those awaiting review with ``needs_review``, only one phone's
        with ``from_number``."""
        with self._lock:
            chosen = [
                r
                for r in self._replies
                if (r.needs_review or not needs_review) and from_number in (None, r.from_number)
            ]
        chosen.sort(key=lambda r: (r.received_at, r.id), reverse=True)
        return chosen[:limit]

    def review(self, reply_id: int, verdict: str, by: str, at: datetime) -> Reply | None:
        """Record a person's verdict; None if there is no such reply."""
        with self._lock:
            for i, r in enumerate(self._replies):
                if r.id == reply_id:
                    self._replies[i] = dataclasses.replace(
                        r, review_verdict=verdict, reviewed_by=by, reviewed_at=at
                    )
                    return self._replies[i]
        return None

    def counts(self, blast_id: str) -> dict[str, int]:
        """Replies answering ``blast_id`` per kind."""
        with self._lock:
            return dict(Counter(r.kind for r in self._replies if r.blast_id == blast_id))
