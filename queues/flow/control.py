"""The kill switch: a blast's pause/cancel reaches every sender within a second.

The system of record holds the blast's status; Redis holds a copy every sender can read in
well under a millisecond, and each process caches it for at most ``CACHE_TTL_S``. Senders
check it before every single provider call, so even sends already scheduled a few seconds
ahead by the rate limiter stop.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from config.names import Names
from messaging.ports import ProgressCounters
from queues.flow.progress import RedisProgressCounters

#: How stale a process's view of a blast's status may be. Kill-switch latency ≤ this + one
#: provider call.
CACHE_TTL_S = 0.25
#: Control keys outlive any blast.
KEY_TTL_S = 7 * 86_400


class RedisBlastControl:
    """:class:`~messaging.ports.BlastControl` in Redis: statuses cached per process for
    :data:`CACHE_TTL_S`."""

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
        """See :class:`~messaging.ports.BlastControl`."""
        self._client.set(self._key(blast_id), status, ex=KEY_TTL_S)
        with self._lock:
            self._cache.pop(blast_id, None)

    def get(self, blast_id: str, *, fresh: bool = False) -> str | None:
        """See :class:`~messaging.ports.BlastControl`."""
        now = self._clock()
        if not fresh:
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
        """See :class:`~messaging.ports.BlastControl`."""
        self._client.incr(self._names.redis_key("suppressions", "version"))
        with self._lock:
            self._cache.pop("\0suppressions", None)

    def suppressions_version(self) -> int:
        """See :class:`~messaging.ports.BlastControl`."""
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
