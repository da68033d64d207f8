"""The kill switch: a blast's pause/cancel reaches every sender within a second.

The system of record holds the blast's status; Redis holds a copy every sender can read in
well under a millisecond, and each process caches it for at most ``CACHE_TTL_S``. Senders
check it before every single provider call, so even sends already scheduled a few seconds
ahead by the rate limiter stop.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from queues.flow.progress import InMemoryProgressCounters, ProgressCounters, RedisProgressCounters
from queues.names import Names

#: How stale a process's view of a blast's status may be. Kill-switch latency ≤ this + one
#: provider call.
CACHE_TTL_S = 0.25
#: Control keys outlive any blast.
KEY_TTL_S = 7 * 86_400


class BlastControl(Protocol):
    """Where senders learn that a blast was paused or canceled."""

    #: The blast's live counts and last-progress stamp, kept beside its status.
    progress: ProgressCounters

    def set(self, blast_id: str, status: str) -> None:
        """Publish a blast's status to the fleet."""
        ...

    def get(self, blast_id: str) -> str | None:
        """The blast's status as last published, or None if never published."""
        ...

    def bump_suppressions(self) -> None:
        """Tell the fleet the suppression list changed (a STOP, an unsubscribe)."""
        ...

    def suppressions_version(self) -> int:
        """A number that changes whenever the suppression list does (cached briefly)."""
        ...


class RedisBlastControl:
    """Blast statuses in Redis, cached per process for :data:`CACHE_TTL_S`."""

    def __init__(self, client: Any, names: Names, *, clock: Any = time.monotonic) -> None:
        self._client = client
        self._names = names
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        self.progress: ProgressCounters = RedisProgressCounters(client, names)

    def _key(self, blast_id: str) -> str:
        return self._names.redis_key("blast-status", blast_id)

    def set(self, blast_id: str, status: str) -> None:
        """See :class:`BlastControl`."""
        self._client.set(self._key(blast_id), status, ex=KEY_TTL_S)
        with self._lock:
            self._cache.pop(blast_id, None)

    def get(self, blast_id: str) -> str | None:
        """See :class:`BlastControl`."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(blast_id)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        raw = self._client.get(self._key(blast_id))
        status = raw.decode() if isinstance(raw, bytes) else raw
        with self._lock:
            self._cache[blast_id] = (now, status)
        return status

    def bump_suppressions(self) -> None:
        """See :class:`BlastControl`."""
        self._client.incr(self._names.redis_key("suppressions", "version"))
        with self._lock:
            self._cache.pop("\0suppressions", None)

    def suppressions_version(self) -> int:
        """See :class:`BlastControl`."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get("\0suppressions")
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return int(hit[1] or 0)
        raw = self._client.get(self._names.redis_key("suppressions", "version"))
        value = raw.decode() if isinstance(raw, bytes) else raw
        with self._lock:
            self._cache["\0suppressions"] = (now, value)
        return int(value or 0)


class InMemoryBlastControl:
    """Blast statuses in a dict, for unit tests."""

    def __init__(self) -> None:
        self._status: dict[str, str] = {}
        self.progress: ProgressCounters = InMemoryProgressCounters()
        self._suppressions = 0

    def set(self, blast_id: str, status: str) -> None:
        """See :class:`BlastControl`."""
        self._status[blast_id] = status

    def get(self, blast_id: str) -> str | None:
        """See :class:`BlastControl`."""
        return self._status.get(blast_id)

    def bump_suppressions(self) -> None:
        """See :class:`BlastControl`."""
        self._suppressions += 1

    def suppressions_version(self) -> int:
        """See :class:`BlastControl`."""
        return self._suppressions
