"""In-memory twins of the transport ports (:mod:`messaging.ports`), for unit tests and
single-process tools: no Redis, no broker, same semantics as the adapters in ``queues/``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from messaging.blasts.lifecycle import as_written
from messaging.ports import ByChannel, HeldRow, ProgressCounters, Reservation, SendWork
from messaging.sending.pacing import (
    THROTTLE_COOLDOWN_S,
    THROTTLE_DECREASE,
    THROTTLE_FLOOR,
    THROTTLE_RECOVERY_PER_S,
    schedule_intervals_us,
)


class InMemorySendQueue:
    """Collects send work in a list."""

    def __init__(self) -> None:
        self.items: list[SendWork] = []
        #: What :meth:`others_waiting` answers: the list has no lanes to take turns on.
        self.contended = False
        #: What :meth:`openings_waiting` answers.
        self.opening_waits = False

    def enqueue(self, work: SendWork) -> None:
        """See :class:`~messaging.ports.SendQueue`."""
        self.items.append(work)

    def others_waiting(self, work: SendWork) -> bool:
        """See :class:`~messaging.ports.SendQueue`."""
        return self.contended

    def openings_waiting(self, work: SendWork) -> bool:
        """See :class:`~messaging.ports.SendQueue`."""
        return self.opening_waits


class InMemoryProgressCounters:
    """Live counters in dicts. Like the Redis hash, counters that were never based on the
    ledger (no :meth:`replace` yet) ignore additions and read as None."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[str, dict[str, int]]] = {}
        self._stamps: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, blast_id: str, channel: str, deltas: Mapping[str, int]) -> None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        with self._lock:
            self._stamps[blast_id] = time.time()
            counts = self._counts.get(blast_id)
            if counts is None:
                return
            by_state = counts.setdefault(channel, {})
            for state, n in deltas.items():
                by_state[state] = by_state.get(state, 0) + int(n)

    def touch(self, blast_id: str) -> None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        self._stamps[blast_id] = time.time()

    def last_progress(self, blast_id: str) -> float | None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        return self._stamps.get(blast_id)

    def replace(self, blast_id: str, by_channel: Mapping[str, Mapping[str, int]]) -> None:
        """See :class:`~messaging.ports.ProgressCounters`."""
        fresh = {
            channel: {s: int(n) for s, n in as_written(by_state).items() if n}
            for channel, by_state in by_channel.items()
        }
        with self._lock:
            self._counts[blast_id] = fresh

    def read(self, blast_ids: Iterable[str]) -> dict[str, ByChannel | None]:
        """See :class:`~messaging.ports.ProgressCounters`."""
        with self._lock:
            return {
                b: (
                    {c: {s: max(n, 0) for s, n in by.items()} for c, by in self._counts[b].items()}
                    if b in self._counts
                    else None
                )
                for b in blast_ids
            }


class InMemoryBlastControl:
    """Blast statuses and the suppression version in a dict."""

    def __init__(self, progress: ProgressCounters | None = None) -> None:
        self._status: dict[str, str] = {}
        self.progress: ProgressCounters = progress or InMemoryProgressCounters()
        self._suppressions = 0

    def set(self, blast_id: str, status: str) -> None:
        """See :class:`~messaging.ports.BlastControl`."""
        self._status[blast_id] = str(status)

    def get(self, blast_id: str, *, fresh: bool = False) -> str | None:
        """See :class:`~messaging.ports.BlastControl` (nothing here is ever stale)."""
        return self._status.get(blast_id)

    def bump_suppressions(self) -> None:
        """See :class:`~messaging.ports.BlastControl`."""
        self._suppressions += 1

    def suppressions_version(self) -> int:
        """See :class:`~messaging.ports.BlastControl`."""
        return self._suppressions


class InMemoryRateLimiter:
    """The Redis limiter's GCRA schedule (``queues/flow/schedule.lua``) in process memory."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._slow: dict[str, tuple[float, float]] = {}  # key -> (factor, since)
        self._lock = threading.Lock()

    def _factor(self, shared_key: str, now: float) -> tuple[float, float]:
        factor, since = self._slow.get(shared_key, (1.0, 0.0))
        return min(1.0, factor + (now - since) * THROTTLE_RECOVERY_PER_S), since

    def throttle(self, shared_key: str) -> float:
        """See :class:`~messaging.ports.RateLimiter`."""
        with self._lock:
            now = self._clock()
            factor, since = self._factor(shared_key, now)
            if shared_key in self._slow and now - since < THROTTLE_COOLDOWN_S:
                return factor
            factor = max(THROTTLE_FLOOR, factor * THROTTLE_DECREASE)
            self._slow[shared_key] = (factor, now)
            return factor

    def reserve(
        self,
        shared_key: str,
        shared_rate_per_s: float,
        *,
        n: int = 1,
        per_send_keys: Sequence[str] = (),
        per_send_rate_per_s: float = 1.0,
        cost: int = 1,
        horizon_s: float = 5.0,
        express_share: bool = False,
        express: bool = False,
    ) -> Reservation:
        """See :class:`~messaging.ports.RateLimiter`."""
        with self._lock:
            now = self._clock()
            factor = self._factor(shared_key, now)[0]
            shared_us, shared_express_us = schedule_intervals_us(shared_rate_per_s, express_share)
            each_us, each_express_us = schedule_intervals_us(per_send_rate_per_s, express_share)
            keys: Sequence[str | None] = list(per_send_keys) if per_send_keys else [None] * n
            shared = self._at(shared_key, now)
            shared_express = _express_key(shared_key)
            slots: list[float] = []
            for key in keys:
                own = now if key is None else self._at(key, now)
                slot = max(shared, own)
                # The first send's express slot: both express schedules, or the per-send
                # key's main one if that key has none (as schedule.lua).
                fast = express and not slots and shared_express_us > 0
                fast_key = (
                    None if not fast or key is None or not each_express_us else _express_key(key)
                )
                if fast:
                    fast_slot = max(
                        self._at(shared_express, now),
                        own if fast_key is None else self._at(fast_key, now),
                    )
                    fast = fast_slot < slot
                    slot = min(slot, fast_slot)
                if slot > now + horizon_s:
                    break
                if fast:
                    self._tat[shared_express] = slot + shared_express_us / 1e6 / factor * cost
                else:
                    shared = slot + shared_us / 1e6 / factor * cost
                if fast and fast_key is not None:
                    self._tat[fast_key] = slot + each_express_us / 1e6
                elif key is not None:
                    self._tat[key] = slot + each_us / 1e6
                slots.append(slot)
            self._tat[shared_key] = shared
            return Reservation(tuple(slots), booked_until_s=shared)

    def _at(self, key: str, now: float) -> float:
        """A schedule's next free slot (now when it is idle)."""
        return max(self._tat.get(key, now), now)


def _express_key(shared_key: str) -> str:
    return f"{shared_key}:express"


class InMemoryInFlight:
    """Both sides of :class:`~messaging.ports.InFlight` / ``InFlightView`` in one process;
    :meth:`die` makes it a dead sender."""

    def __init__(self) -> None:
        self._rows: set[HeldRow] = set()
        self.alive = True
        self._lock = threading.Lock()

    def hold(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """See :class:`~messaging.ports.InFlight`."""
        with self._lock:
            self._rows.update((blast_id, channel, int(s)) for s in supporter_ids)

    def release(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """See :class:`~messaging.ports.InFlight`."""
        with self._lock:
            self._rows.difference_update((blast_id, channel, int(s)) for s in supporter_ids)

    def owned(self) -> set[HeldRow]:
        """See :class:`~messaging.ports.InFlightView`."""
        with self._lock:
            return set(self._rows) if self.alive else set()

    def die(self) -> None:
        """Stop beating, as a SIGKILLed sender does."""
        self.alive = False
