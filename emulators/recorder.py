"""What the emulators received: accepted messages, raw requests and outcome counters.

A :class:`Recorder` is written by an emulator's event loop and read by tests in another
thread, so every method takes a lock. Messages and raw requests carry a sequence number that
keeps growing across :meth:`Recorder.clear_messages`, so a poller paging with ``since`` never
sees an entry twice.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Raw requests kept by default; older ones are dropped first. Enough for a test run, bounded
#: so a benchmark of millions of sends does not grow without limit.
DEFAULT_MAX_REQUESTS = 10_000


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One provider API request exactly as it arrived, and how it was answered."""

    #: Position in the recorder's request log (0, 1, 2, …).
    seq: int
    #: ``"twilio"`` or ``"sendgrid"``.
    provider: str
    method: str
    #: Path as sent, without the query string, e.g. ``/v3/mail/send``.
    path: str
    #: Raw query string, without ``?``; empty when none.
    query: str
    #: Headers in arrival order, names lower-cased (as ASGI delivers them).
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: HTTP status answered (for a timeout: the status sent after the hold).
    status: int
    #: ``"201"``, ``"400"``, … or ``"timeout"``: the key counted in :meth:`Recorder.stats`.
    outcome: str
    #: Unix time the request was received, in seconds.
    received_at: float

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` header, or ``""``."""
        return self.header("content-type") or ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; the body is base64 so any bytes survive the trip."""
        return {
            "seq": self.seq,
            "provider": self.provider,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": [list(pair) for pair in self.headers],
            "body_b64": base64.b64encode(self.body).decode("ascii"),
            "status": self.status,
            "outcome": self.outcome,
            "received_at": self.received_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RecordedRequest:
        """Rebuild a request from :meth:`to_json` output (e.g. ``GET /_emulator/requests``)."""
        return cls(
            seq=int(data["seq"]),
            provider=str(data["provider"]),
            method=str(data["method"]),
            path=str(data["path"]),
            query=str(data["query"]),
            headers=tuple((str(k), str(v)) for k, v in data["headers"]),
            body=base64.b64decode(data["body_b64"]),
            status=int(data["status"]),
            outcome=str(data["outcome"]),
            received_at=float(data["received_at"]),
        )


class _SeqLog:
    """A list whose entries are addressed by an ever-growing sequence number."""

    __slots__ = ("_entries", "_first_seq")

    def __init__(self, maxlen: int | None) -> None:
        self._entries: deque[Any] = deque(maxlen=maxlen)
        self._first_seq = 0  # sequence number of _entries[0]

    @property
    def next_seq(self) -> int:
        return self._first_seq + len(self._entries)

    def append(self, entry: Any) -> None:
        if self._entries.maxlen is not None and len(self._entries) == self._entries.maxlen:
            self._first_seq += 1  # the deque is about to drop its oldest entry
        self._entries.append(entry)

    def since(self, seq: int) -> list[Any]:
        start = max(seq - self._first_seq, 0)
        if start == 0:
            return list(self._entries)
        return list(itertools.islice(self._entries, start, None))

    def count_since(self, seq: int) -> int:
        return self.next_seq - max(seq, self._first_seq) if seq < self.next_seq else 0

    def clear(self) -> None:
        self._first_seq = self.next_seq
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class Recorder:
    """In-memory, thread-safe record of what one emulator received."""

    __slots__ = ("_changed", "_counts", "_lock", "_messages", "_requests")

    def __init__(
        self, *, max_messages: int | None = None, max_requests: int | None = DEFAULT_MAX_REQUESTS
    ) -> None:
        """``max_messages``/``max_requests`` bound memory (oldest dropped); ``None``: no bound."""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._messages = _SeqLog(max_messages)
        self._requests = _SeqLog(max_requests)
        self._counts: Counter[str] = Counter()

    # -- accepted messages -------------------------------------------------------------
    def add_messages(self, messages: Iterable[dict[str, Any]]) -> None:
        """Record accepted messages; each gets its ``seq`` key set."""
        with self._changed:
            for message in messages:
                message["seq"] = self._messages.next_seq
                self._messages.append(message)
            self._changed.notify_all()

    def messages(self, since: int = 0) -> list[dict[str, Any]]:
        """Recorded messages whose ``seq`` is ``>= since``, oldest first. Treat as read-only."""
        with self._lock:
            return self._messages.since(since)

    @property
    def next_message_seq(self) -> int:
        """The ``seq`` the next message will get: pass it as ``since`` to page forward."""
        with self._lock:
            return self._messages.next_seq

    def wait_for_messages(self, count: int, timeout: float = 5.0, since: int = 0) -> bool:
        """Block until at least ``count`` messages with ``seq >= since`` are held, or time out."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._messages.count_since(since) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def clear_messages(self) -> None:
        """Forget the messages (sequence numbers keep counting)."""
        with self._lock:
            self._messages.clear()

    # -- raw requests ------------------------------------------------------------------
    def add_request(
        self,
        *,
        provider: str,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        status: int,
        outcome: str,
        received_at: float | None = None,
    ) -> RecordedRequest:
        """Record one provider request (``received_at``: when it arrived; now if not
        given) and count its outcome."""
        with self._lock:
            recorded = RecordedRequest(
                seq=self._requests.next_seq,
                provider=provider,
                method=method,
                path=path,
                query=query,
                headers=tuple(headers),
                body=body,
                status=status,
                outcome=outcome,
                received_at=time.time() if received_at is None else received_at,
            )
            self._requests.append(recorded)
            self._counts[outcome] += 1
            return recorded

    def requests(self, since: int = 0) -> list[RecordedRequest]:
        """Recorded raw requests whose ``seq`` is ``>= since``, oldest first."""
        with self._lock:
            return self._requests.since(since)

    @property
    def next_request_seq(self) -> int:
        """The ``seq`` the next raw request will get."""
        with self._lock:
            return self._requests.next_seq

    def clear_requests(self) -> None:
        """Forget the raw requests (sequence numbers keep counting)."""
        with self._lock:
            self._requests.clear()

    # -- counters ----------------------------------------------------------------------
    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to a counter that is not a request outcome (e.g. ``callback_ok``)."""
        with self._lock:
            self._counts[key] += n

    def stats(self) -> dict[str, int]:
        """Requests by outcome (``"201"``, ``"400"``, ``"timeout"``, …) and other counters."""
        with self._lock:
            return dict(self._counts)

    def clear_stats(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._counts.clear()

    def reset(self) -> None:
        """Forget messages, raw requests and counters."""
        with self._lock:
            self._messages.clear()
            self._requests.clear()
            self._counts.clear()
