"""The pacing policy every rate limiter follows (the Redis one and its in-memory twin).

Configured rates are ceilings, so sends are paced slightly under them, and a provider's
429 slows a key down for a while (AIMD) before it recovers.
"""

from __future__ import annotations

import math

#: How far apart in time a send may reach the provider from its slot (early by a timer's
#: grain, late by a busy event loop, a descheduled process, the network) with no one-second
#: window there ever holding more than the configured rate. Slots are spaced (1 + budget) /
#: rate apart: a window [t, t + 1 s) then holds only sends whose slots lie in a span of
#: 1 s + budget, which fits at most ``rate`` of them. Senders keep their own spread under it
#: (a send later than ``LATE_TOLERANCE_S`` of the Twilio adapter, 20 ms, takes a fresh
#: slot) and the rest is for what follows the check. 40 ms: paces at 96 % of the rate.
#: It was 85 ms (92 %) while sender threads claimed rows in a free-for-all: at a binding
#: rate they claimed 3.7 rows per row sent, and that CPU made the provider loop's sends
#: late by up to 40 ms (p99 30 ms). Sizing pieces to the room (``messaging.sending.room``) took
#: the p99 to ~10 ms; a 40 ms budget with a 15 ms tolerance had measured worse before it.
LATENESS_BUDGET_S = 0.04
#: ... and never less than this many sends' worth: at a few dozen a second one stall that
#: bunches two sends is already more than 40 ms (seen at 40/s with four senders on a host
#: with six times more work than cores) ...
BURST_SENDS = 2
#: ... nor more than the old budget (at 1 msg/s two sends would be two seconds).
MAX_LATENESS_BUDGET_S = 0.085


def lateness_budget_s(rate_per_s: float) -> float:
    """The lateness budget of a key paced at ``rate_per_s`` (see :data:`LATENESS_BUDGET_S`)."""
    return min(MAX_LATENESS_BUDGET_S, max(LATENESS_BUDGET_S, BURST_SENDS / rate_per_s))


def headroom(rate_per_s: float) -> float:
    """The share of ``rate_per_s`` the schedule paces at: 1 / (1 + the lateness budget),
    96 % with the 40 ms budget from 50/s up, 95 % at 40/s, 92 % below 24/s."""
    return 1 / (1 + lateness_budget_s(rate_per_s))


#: Adaptive slow-down after a provider 429 (AIMD): the key's rate is multiplied by this ...
THROTTLE_DECREASE = 0.7
#: ... at most once per this many seconds (a burst of 429s is one signal) ...
THROTTLE_COOLDOWN_S = 1.0
#: ... never below this share of the configured rate ...
THROTTLE_FLOOR = 0.1
#: ... and recovers by this share of the configured rate per second.
THROTTLE_RECOVERY_PER_S = 0.1


def interval_us(rate_per_s: float) -> int:
    """Microseconds between two paced sends at ``rate_per_s`` (lateness budget included)."""
    # Up, never down: at 2,000/s an interval rounded down to 542 µs fits 2,001 slots into a
    # second and the budget (tests/test_ratelimit.py checks every rate's worst window).
    return max(1, math.ceil(1_000_000 / (rate_per_s * headroom(rate_per_s))))


#: A binding rate keeps a small second schedule for express sends: the first text of a new
#: blast (its opening). Lower priorities book the main schedule up to a horizon (0.25 s)
#: ahead, so a new alert's first text waited behind up to a quarter second of others' slots
#: (p50 432 ms from publish under load, issue #21, against 100 ms). The two schedules are
#: paced apart, each within its lateness budget, and their rates add up to the configured
#: one, so no one-second window holds more than the rate whichever mix of them goes. The
#: price is the express share of the main schedule's rate: one send a second per this much
#: of the rate (0.4 % at 500/s) ...
EXPRESS_PER_RATE = 200.0
#: ... and none below this rate, where one express send a second would cost more than 1 %.
EXPRESS_MIN_RATE_PER_S = 100.0


def express_rate_per_s(rate_per_s: float) -> float:
    """The share of ``rate_per_s`` kept as the express schedule (see :data:`EXPRESS_PER_RATE`);
    whole sends a second, so the two schedules' window counts add up to at most the rate."""
    if rate_per_s < EXPRESS_MIN_RATE_PER_S:
        return 0.0
    return float(max(1, math.floor(rate_per_s / EXPRESS_PER_RATE)))


def schedule_intervals_us(rate_per_s: float, express_share: bool) -> tuple[int, int]:
    """A key's schedules: (main interval, express interval or 0 when it has none), in
    microseconds. ``express_share``: the key keeps one (SMS: a first text; not email, whose
    sends cost a call's recipients)."""
    express = express_rate_per_s(rate_per_s) if express_share else 0.0
    return interval_us(rate_per_s - express), interval_us(express) if express else 0
