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
#: Configured rates are ceilings, so we pace slightly under them: a send that arrives late
#: (event loop, network, a busy provider edge) must not push any one-second window over
#: the limit. Pacing at 92 % absorbs ~85 ms of lateness at any rate (1/0.92 - 1 s).
RATE_HEADROOM = 0.92
#: Adaptive slow-down after a provider 429 (AIMD): the key's rate is multiplied by this ...
THROTTLE_DECREASE = 0.7
#: ... at most once per this many seconds (a burst of 429s is one signal) ...
THROTTLE_COOLDOWN_S = 1.0
#: ... never below this share of the configured rate ...
THROTTLE_FLOOR = 0.1
#: ... and recovers by this share of the configured rate per second.
THROTTLE_RECOVERY_PER_S = 0.1


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

    def throttle(self, shared_key: str) -> float:
        """A provider said 429 for this key: slow it down; returns the new rate factor."""
        ...


def _micro(rate_per_s: float) -> int:
    return max(1, round(1_000_000 / (rate_per_s * RATE_HEADROOM)))


def _slow_key(shared_key: str) -> str:
    return f"{shared_key}:slow"


class RedisRateLimiter:
    """The :class:`RateLimiter` of the fleet: one Lua call per batch."""

    def __init__(self, client: Any) -> None:
        lua = resources.files("queues.flow")
        self._script = client.register_script(lua.joinpath("schedule.lua").read_text())
        self._throttle = client.register_script(lua.joinpath("throttle.lua").read_text())

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
            keys=[shared_key, _slow_key(shared_key), *per_send_keys],
            args=[
                _micro(shared_rate_per_s),
                _micro(per_send_rate_per_s),
                n,
                int(horizon_s * 1_000_000),
                cost,
                KEY_TTL_MS,
                THROTTLE_RECOVERY_PER_S,
            ],
        )
        after = time.time()
        # Redis time → local time: the offset measured around this very call.
        offset = (before + after) / 2 - int(raw[0]) / 1_000_000
        return Reservation(tuple(int(s) / 1_000_000 + offset for s in raw[1:]))

    def throttle(self, shared_key: str) -> float:
        """See :class:`RateLimiter`."""
        recovery_s = (1 - THROTTLE_FLOOR) / THROTTLE_RECOVERY_PER_S
        thousandths = self._throttle(
            keys=[_slow_key(shared_key)],
            args=[
                THROTTLE_DECREASE,
                THROTTLE_FLOOR,
                int(THROTTLE_COOLDOWN_S * 1_000_000),
                THROTTLE_RECOVERY_PER_S,
                int(recovery_s * 1000) + KEY_TTL_MS,
            ],
        )
        return int(thousandths) / 1000


class InMemoryRateLimiter:
    """The same schedule in process memory, for unit tests and single-process tools."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._slow: dict[str, tuple[float, float]] = {}  # key -> (factor, since)
        self._lock = threading.Lock()

    def _factor(self, shared_key: str, now: float) -> tuple[float, float]:
        factor, since = self._slow.get(shared_key, (1.0, 0.0))
        return min(1.0, factor + (now - since) * THROTTLE_RECOVERY_PER_S), since

    def throttle(self, shared_key: str) -> float:
        """See :class:`RateLimiter`."""
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
    ) -> Reservation:
        """See :class:`RateLimiter`."""
        with self._lock:
            now = self._clock()
            keys: Sequence[str | None] = list(per_send_keys) if per_send_keys else [None] * n
            shared = max(self._tat.get(shared_key, now), now)
            shared_interval_s = _micro(shared_rate_per_s) / 1e6 / self._factor(shared_key, now)[0]
            slots = []
            for key in keys:
                slot = shared
                if key is not None:
                    slot = max(slot, self._tat.get(key, now), now)
                if slot > now + horizon_s:
                    break
                shared = slot + shared_interval_s * cost
                if key is not None:
                    self._tat[key] = slot + _micro(per_send_rate_per_s) / 1e6
                slots.append(slot)
            self._tat[shared_key] = shared
            return Reservation(tuple(slots))
