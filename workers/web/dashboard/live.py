"""The live picture of blasts the dashboard pushes: summaries plus rates, bars and ETAs.

Counts come the way ``rapid blast show`` reads them (the blast store's summaries over the
live Redis counters). One :class:`LiveBoard` serves every viewer of a ``rapid web`` process:
a look is cached for :data:`FRESH_S`, so ten wall displays cost one database and one Redis
read per half second, not ten; and the rates are measured from those shared looks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from messaging.blasts.lifecycle import ENDED_STATUSES
from messaging.ports import BlastStore, LiveCounts

#: How often a stream pushes, in seconds.
PUSH_EVERY_S: Final = 0.5
#: How long one look serves every viewer, in seconds (under :data:`PUSH_EVERY_S`).
FRESH_S: Final = 0.4
#: Seconds of history behind the "current" rate.
RATE_WINDOW_S: Final = 5.0
#: Blasts the list page and its stream show.
RECENT_BLASTS: Final = 20
#: Blasts whose rate history is kept (older ones are dropped first).
MAX_TRACKED: Final = 200


class RateBook:
    """Current rate (the last :data:`RATE_WINDOW_S`) of each (blast, channel) ``sent`` count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._points: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def add(self, blast_id: str, channel: str, sent: int) -> float:
        """Record a look at ``sent``; returns messages per second over the window."""
        now = self._clock()
        points = self._points.setdefault((blast_id, channel), deque())
        if points and sent < points[-1][1]:
            points.clear()  # counters were reconciled downwards: start again
        points.append((now, sent))
        while len(points) > 2 and now - points[0][0] > RATE_WINDOW_S:
            points.popleft()
        if len(self._points) > MAX_TRACKED * 2:
            for key in list(self._points)[: len(self._points) - MAX_TRACKED]:
                del self._points[key]
        t0, v0 = points[0]
        return (sent - v0) / (now - t0) if now > t0 else 0.0


def decorate(summary: dict[str, Any], rates: RateBook, now: datetime) -> dict[str, Any]:
    """A summary with, per channel, ``done``, ``percent``, ``rate_per_s``,
    ``avg_rate_per_s`` and ``eta_s`` (None when nothing moves)."""
    created = datetime.fromisoformat(summary["created_at"])
    ended = summary.get("ended_at")
    until = datetime.fromisoformat(ended) if ended else now
    lifetime_s = max((until - created).total_seconds(), 0.001)
    running = summary["status"] not in ENDED_STATUSES
    # Only a sending blast has a rate and an ETA; a paused one keeps its history for resume.
    moving = summary["status"] == "sending"
    progress: dict[str, Any] = {}
    for channel, c in summary["counts"].items():
        waiting = c["pending"] + c["deferred"]
        done = max(c["targeted"] - waiting, 0)
        current = rates.add(summary["blast_id"], channel, c["sent"]) if running else 0.0
        if not moving:
            current = 0.0
        progress[channel] = {
            "done": done,
            "total": c["targeted"],
            "percent": round(100.0 * done / c["targeted"], 1) if c["targeted"] else 100.0,
            "rate_per_s": round(current, 1),
            "avg_rate_per_s": round(c["sent"] / lifetime_s, 1),
            "eta_s": round(c["pending"] / current, 1) if current > 0 and c["pending"] else None,
        }
    return {**summary, "progress": progress}


class LiveBoard:
    """Shared, cached looks at blasts for every page and stream of one process."""

    def __init__(
        self,
        blasts: BlastStore,
        live: LiveCounts,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._blasts = blasts
        self._live = live
        self._clock = clock
        self._rates = RateBook(clock)
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._lock = asyncio.Lock()

    def _load(self, blast_id: str | None) -> list[dict[str, Any]]:
        if blast_id is None:
            records = self._blasts.recent(RECENT_BLASTS)
        else:
            record = self._blasts.get(blast_id)
            records = [record] if record is not None else []
        now = datetime.now(UTC)
        return [decorate(s, self._rates, now) for s in self._blasts.summaries(records, self._live)]

    def look(self, blast_id: str | None = None) -> list[dict[str, Any]]:
        """Decorated summaries now (blocking: call it off the event loop)."""
        return self._load(blast_id)

    def forget(self) -> None:
        """Drop cached looks (after an action, so no viewer is shown the state before it)."""
        self._cache.clear()

    async def shared_look(self, blast_id: str | None = None) -> list[dict[str, Any]]:
        """Like :meth:`look`, but one look per :data:`FRESH_S` serves every stream."""
        from starlette.concurrency import run_in_threadpool

        key = blast_id or "*"
        async with self._lock:
            cached = self._cache.get(key)
            if cached is not None and self._clock() - cached[0] < FRESH_S:
                return cached[1]
            found = await run_in_threadpool(self._load, blast_id)
            self._cache[key] = (self._clock(), found)
            if len(self._cache) > MAX_TRACKED:
                oldest = min(self._cache, key=lambda k: self._cache[k][0])
                del self._cache[oldest]
            return found
