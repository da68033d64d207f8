"""The pacing policy every rate limiter follows (the Redis one and its in-memory twin).

Configured rates are ceilings, so sends are paced slightly under them, and a provider's
429 slows a key down for a while (AIMD) before it recovers.
"""

from __future__ import annotations

#: How far apart in time a send may reach the provider from its slot (early by a timer's
#: grain, late by a busy event loop or the network) with no one-second window there ever
#: holding more than the configured rate. Slots are spaced (1 + this) / rate apart: a
#: window [t, t + 1 s) then holds only sends whose slots lie in a span of 1 s + this, which
#: fits at most ``rate`` of them. A time, not a share of the rate: senders keep their own
#: spread well under it (a send later than ``LATE_TOLERANCE_S`` of the Twilio adapter takes
#: a fresh slot) and the rest is transit jitter. It was 85 ms (pacing at 92 %), which cost
#: 8 % of every configured rate for lateness the senders no longer allow.
LATENESS_BUDGET_S = 0.03
#: The share of a configured rate the schedule paces at (97.1 %, from the budget above).
RATE_HEADROOM = 1 / (1 + LATENESS_BUDGET_S)
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
