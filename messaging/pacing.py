"""The pacing policy every rate limiter follows (the Redis one and its in-memory twin).

Configured rates are ceilings, so sends are paced slightly under them, and a provider's
429 slows a key down for a while (AIMD) before it recovers.
"""

from __future__ import annotations

#: Pacing at 92 % of a configured rate: a send that arrives late (event loop, network, a
#: busy provider edge) must not push any one-second window over the limit; this absorbs
#: ~85 ms of lateness at any rate (1/0.92 - 1 s).
RATE_HEADROOM = 0.92
#: Adaptive slow-down after a provider 429 (AIMD): the key's rate is multiplied by this ...
THROTTLE_DECREASE = 0.7
#: ... at most once per this many seconds (a burst of 429s is one signal) ...
THROTTLE_COOLDOWN_S = 1.0
#: ... never below this share of the configured rate ...
THROTTLE_FLOOR = 0.1
#: ... and recovers by this share of the configured rate per second.
THROTTLE_RECOVERY_PER_S = 0.1


def interval_us(rate_per_s: float) -> int:
    """Microseconds between two paced sends at ``rate_per_s`` (headroom included)."""
    return max(1, round(1_000_000 / (rate_per_s * RATE_HEADROOM)))
