"""Fleet-wide rate limits: a batch reserves its send times in one round trip.

The limiter is a GCRA schedule kept in Redis (``schedule.lua``): each send gets the earliest
time at which it may go without its sender number or the account exceeding its rate, on
Redis's clock, so a hundred workers pace as one. Senders sleep until their slot instead of
bursting and eating 429s, and never reserve further ahead than a horizon: traffic is never
parked in Twilio's own queue, where a cancel could no longer reach it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

from messaging.ports import Reservation
from messaging.sending.pacing import (
    THROTTLE_COOLDOWN_S,
    THROTTLE_DECREASE,
    THROTTLE_FLOOR,
    THROTTLE_RECOVERY_PER_S,
    schedule_intervals_us,
)

#: A reservation's slots are kept this long after the last one (a key idle longer resets).
KEY_TTL_MS = 60_000


def _slow_key(shared_key: str) -> str:
    return f"{shared_key}:slow"


def _express_key(shared_key: str) -> str:
    return f"{shared_key}:express"


class RedisRateLimiter:
    """The :class:`~messaging.ports.RateLimiter` of the fleet: one Lua call per batch."""

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
        express_share: bool = False,
        express: bool = False,
    ) -> Reservation:
        """See :class:`~messaging.ports.RateLimiter`."""
        shared_us, shared_express_us = schedule_intervals_us(shared_rate_per_s, express_share)
        each_us, each_express_us = schedule_intervals_us(per_send_rate_per_s, express_share)
        keys = [shared_key, _slow_key(shared_key), _express_key(shared_key)]
        if per_send_keys:  # only the first send may go express: only its key's express
            keys += [_express_key(per_send_keys[0]), *per_send_keys]
        before = time.time()
        raw = self._script(
            keys=keys,
            args=[
                shared_us,
                each_us,
                n,
                int(horizon_s * 1_000_000),
                cost,
                KEY_TTL_MS,
                THROTTLE_RECOVERY_PER_S,
                shared_express_us,
                each_express_us,
                int(express),
            ],
        )
        after = time.time()
        # Redis time → local time: the offset measured around this very call.
        offset = (before + after) / 2 - int(raw[0]) / 1_000_000
        return Reservation(
            tuple(int(s) / 1_000_000 + offset for s in raw[2:]),
            booked_until_s=int(raw[1]) / 1_000_000 + offset,
        )

    def throttle(self, shared_key: str) -> float:
        """See :class:`~messaging.ports.RateLimiter`."""
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
