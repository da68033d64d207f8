"""Fleet-wide rate limits: a batch reserves its send times in one round trip.

The limiter is a GCRA schedule kept in Redis (``schedule.lua``): each send gets the earliest
time at which it may go without its sender number or the account exceeding its rate, on
Redis's clock, so a hundred workers pace as one. Senders sleep until their slot instead of
bursting and eating 429s, and never reserve further ahead than a horizon: traffic is never
parked in Twilio's own queue, where a cancel could no longer reach it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

#: A reservation's slots are kept this long after the last one (a key idle longer resets).
KEY_TTL_MS = 60_000


@dataclass(frozen=True, slots=True)
class Reservation:
    """Send times granted to the first ``len(slots_s)`` sends of a batch, in local epoch seconds."""

    slots_s: tuple[float, ...]

    @property
    def granted(self) -> int:
        """How many sends got a slot (the rest must be tried again later)."""
        return len(self.slots_s)


class RateLimiter(Protocol):
    """Reserves send times under a shared rate and optional per-send rates."""

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
    ) -> Reservation:
        """Slots for ``n`` sends (or one per ``per_send_keys`` entry), each costing ``cost``."""
        ...


def _micro(rate_per_s: float) -> int:
    return max(1, round(1_000_000 / rate_per_s))


class RedisRateLimiter:
    """The :class:`RateLimiter` of the fleet: one Lua call per batch."""

    def __init__(self, client: Any) -> None:
        script = resources.files("queues.flow").joinpath("schedule.lua").read_text()
        self._script = client.register_script(script)

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
    ) -> Reservation:
        """See :class:`RateLimiter`."""
        before = time.time()
        raw = self._script(
            keys=[shared_key, *per_send_keys],
            args=[
                _micro(shared_rate_per_s),
                _micro(per_send_rate_per_s),
                n,
                int(horizon_s * 1_000_000),
                cost,
                KEY_TTL_MS,
            ],
        )
        after = time.time()
        # Redis time → local time: the offset measured around this very call.
        offset = (before + after) / 2 - int(raw[0]) / 1_000_000
        return Reservation(tuple(int(s) / 1_000_000 + offset for s in raw[1:]))


class InMemoryRateLimiter:
    """The same schedule in process memory, for unit tests and single-process tools."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._lock = threading.Lock()

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
    ) -> Reservation:
        """See :class:`RateLimiter`."""
        with self._lock:
            now = self._clock()
            keys: Sequence[str | None] = list(per_send_keys) if per_send_keys else [None] * n
            shared = max(self._tat.get(shared_key, now), now)
            slots = []
            for key in keys:
                slot = shared
                if key is not None:
                    slot = max(slot, self._tat.get(key, now), now)
                if slot > now + horizon_s:
                    break
                shared = slot + cost / shared_rate_per_s
                if key is not None:
                    self._tat[key] = slot + 1 / per_send_rate_per_s
                slots.append(slot)
            self._tat[shared_key] = shared
            return Reservation(tuple(slots))
