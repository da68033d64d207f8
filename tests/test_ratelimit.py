"""The rate limiter's schedule: one contract, run on the in-memory and the Redis version."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator

import pytest

from messaging.memory import InMemoryRateLimiter
from messaging.ports import RateLimiter
from messaging.sending.pacing import (
    THROTTLE_DECREASE,
    express_rate_per_s,
    headroom,
    lateness_budget_s,
)
from queues.flow.ratelimit import RedisRateLimiter
from tests.factories import live_redis


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    if request.param == "memory":
        yield InMemoryRateLimiter()
        return
    client = live_redis()
    yield RedisRateLimiter(client)
    client.close()


def key() -> str:
    return f"t:{uuid.uuid4().hex}"


def gaps(slots: tuple[float, ...]) -> list[float]:
    return [round(b - a, 4) for a, b in itertools.pairwise(slots)]


def test_slots_are_spaced_under_the_rate(limiter: RateLimiter) -> None:
    # Given 10 msg/s, when a batch of 5 reserves, then the slots are 1/(10 × headroom) apart
    res = limiter.reserve(key(), 10, n=5, horizon_s=5)
    assert res.granted == 5
    assert gaps(res.slots_s) == [round(1 / (10 * headroom(10)), 4)] * 4


def test_each_sender_number_keeps_its_own_rate_under_the_account(limiter: RateLimiter) -> None:
    # Given a fast account and 1 msg/s per number: two numbers interleave, each 1 s apart
    a, b = key(), key()
    res = limiter.reserve(
        key(), 1000, per_send_keys=[a, b, a, b], per_send_rate_per_s=1, horizon_s=5
    )
    start = res.slots_s[0]
    offsets = [s - start for s in res.slots_s]
    assert offsets[0] == 0 and offsets[1] < 0.01  # the two numbers start together
    # Each number's second send is its own interval after its first (unrounded: two offsets
    # a millisecond apart may round to either side of a hundredth)
    interval_s = 1 / headroom(1)
    assert offsets[2] - offsets[0] == pytest.approx(interval_s, abs=0.006)
    assert offsets[3] - offsets[1] == pytest.approx(interval_s, abs=0.006)


def test_nothing_is_reserved_past_the_horizon(limiter: RateLimiter) -> None:
    # Given 10 msg/s and a 1 s horizon, only the first ~10 of 100 get a slot now
    res = limiter.reserve(key(), 10, n=100, horizon_s=1.0)
    assert 9 <= res.granted <= 11
    assert res.slots_s[-1] - res.slots_s[0] <= 1.0


def test_batches_share_one_schedule(limiter: RateLimiter) -> None:
    k = key()
    first = limiter.reserve(k, 10, n=3, horizon_s=5)
    second = limiter.reserve(k, 10, n=3, horizon_s=5)
    assert second.slots_s[0] - first.slots_s[-1] == pytest.approx(1 / (10 * headroom(10)), abs=0.01)


def test_email_cost_counts_recipients(limiter: RateLimiter) -> None:
    # Given 1000 recipients/s, two calls of 1000 recipients are one second (and headroom) apart
    res = limiter.reserve(key(), 1000, n=2, cost=1000, horizon_s=5)
    assert gaps(res.slots_s) == [round(1 / headroom(1000), 4)]


def test_a_429_slows_the_key_once_per_burst(limiter: RateLimiter) -> None:
    k = key()
    # When a provider answers 429 three times in a burst, the rate drops once
    assert limiter.throttle(k) == pytest.approx(THROTTLE_DECREASE, abs=0.002)
    assert limiter.throttle(k) == pytest.approx(THROTTLE_DECREASE, abs=0.002)
    res = limiter.reserve(k, 10, n=2, horizon_s=5)
    assert gaps(res.slots_s)[0] == pytest.approx(
        1 / (10 * headroom(10) * THROTTLE_DECREASE), abs=0.01
    )


def max_in_any_window(times: list[float], window_s: float = 1.0) -> int:
    """The most events in any half-open window [t, t + window_s)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize("rate", [1, 5, 40, 500, 2000])
def test_sends_late_within_the_budget_never_overfill_a_window(
    limiter: RateLimiter, rate: int
) -> None:
    # Given three seconds of slots at the configured rate
    res = limiter.reserve(key(), rate, n=3 * rate, horizon_s=10)
    slots = res.slots_s
    # When the sends leave as badly as the budget allows: the first second as late as it
    # may be (just under the budget: floats), then a sudden return to time (lateness
    # falling is what fills a window)
    budget_s = lateness_budget_s(rate)
    worst = [s + (0.99 * budget_s if s < slots[0] + 1 else 0.0) for s in slots]
    # Then no one-second window holds more than the rate
    assert max_in_any_window(worst) <= rate
    # And a spread beyond the budget would (the margin is not wider than it needs to be)
    beyond = [s + (2 * budget_s if s < slots[0] + 1 else 0.0) for s in slots]
    assert max_in_any_window(beyond) > rate or rate * budget_s < 1


def test_the_schedule_paces_close_to_the_configured_rate(limiter: RateLimiter) -> None:
    # Given 500 msg/s, the schedule itself gives 96 % of it (the lateness budget's share)
    res = limiter.reserve(key(), 500, n=501, horizon_s=10)
    assert 500 / (res.slots_s[-1] - res.slots_s[0]) == pytest.approx(500 * headroom(500), rel=0.01)
    assert headroom(500) > 0.96


def test_the_budget_is_a_time_and_at_least_two_sends() -> None:
    # 40 ms from 50/s up; two sends' worth below that (one stall that bunches two sends
    # is already more), but never more than 85 ms
    assert lateness_budget_s(500) == lateness_budget_s(2000) == lateness_budget_s(50) == 0.04
    assert lateness_budget_s(40) == pytest.approx(0.05)
    assert lateness_budget_s(1) == lateness_budget_s(10) == 0.085


# --- the express schedule: a new blast's first text does not wait behind booked slots ---


def test_a_first_text_goes_ahead_of_a_booked_schedule(limiter: RateLimiter) -> None:
    k = key()
    # Given 500 texts/s, the schedule booked a quarter second ahead by sends already going
    booked = limiter.reserve(k, 500, n=500, horizon_s=0.25, express_share=True)
    assert booked.booked_until_s - booked.slots_s[0] > 0.2
    # When a new blast's opening reserves its first texts
    opening = limiter.reserve(k, 500, n=3, horizon_s=0.5, express_share=True, express=True)
    # Then its first text goes now, on the express schedule, and the rest behind the booking
    assert opening.slots_s[0] - booked.slots_s[0] < 0.01
    assert opening.slots_s[1] >= booked.booked_until_s - 0.001
    # And the express schedule is paced too: the next opening's first text, right after,
    # finds it a second away (2 a second at 500/s) and takes the main schedule's next slot
    assert express_rate_per_s(500) == 2
    again = limiter.reserve(k, 500, n=1, horizon_s=0.5, express_share=True, express=True)
    assert again.slots_s[0] >= opening.booked_until_s - 0.001


def test_without_a_share_or_below_its_rate_there_is_no_express(limiter: RateLimiter) -> None:
    for rate, share in ((500, False), (99, True)):
        k = key()
        booked = limiter.reserve(k, rate, n=rate, horizon_s=0.25, express_share=share)
        first = limiter.reserve(k, rate, n=1, horizon_s=0.5, express_share=share, express=True)
        assert first.slots_s[0] >= booked.booked_until_s - 0.001, rate


def test_an_express_text_keeps_its_sender_numbers_rate(limiter: RateLimiter) -> None:
    k = key()

    def opening_from(number: str, number_rate_per_s: float) -> float:
        """How long from now an opening's first text from ``number`` waits."""
        first = limiter.reserve(
            k,
            500,
            per_send_keys=[number],
            per_send_rate_per_s=number_rate_per_s,
            horizon_s=5,
            express_share=True,
            express=True,
        )
        return first.slots_s[0] - time.time()

    # Given a number at 1 text/s (too slow to keep an express share) that just sent, and
    # the account's schedule booked ahead
    slow = key()
    limiter.reserve(k, 500, per_send_keys=[slow], per_send_rate_per_s=1, express_share=True)
    limiter.reserve(k, 500, n=100, horizon_s=0.25, express_share=True)
    # Then an opening's first text from it waits for the number's own next slot, ~1 s away
    assert opening_from(slow, 1) > 0.8
    # And from a number fast enough for a share of its own it goes at once
    fast = key()
    limiter.reserve(k, 500, per_send_keys=[fast] * 50, per_send_rate_per_s=500, express_share=True)
    assert opening_from(fast, 500) < 0.05


@pytest.mark.parametrize("rate", [100, 500, 2000])
def test_express_texts_and_late_sends_never_overfill_a_window(
    limiter: RateLimiter, rate: int
) -> None:
    # Given three seconds of the main schedule booked, and openings' first texts taking
    # every express slot there is meanwhile (the most the express schedule lets go)
    k = key()
    main = limiter.reserve(k, rate, n=3 * rate, horizon_s=10, express_share=True).slots_s
    express = []
    while True:
        slot = limiter.reserve(k, rate, horizon_s=10, express_share=True, express=True).slots_s[0]
        if slot >= main[-1]:
            break
        express.append(slot)
    assert len(express) >= 3 * express_rate_per_s(rate) * headroom(rate) - 1
    # When every send leaves as badly as the budget allows (as in the test above)
    budget_s = lateness_budget_s(rate)
    slots = sorted([*main, *express])
    worst = [s + (0.99 * budget_s if s < slots[0] + 1 else 0.0) for s in slots]
    # Then no one-second window holds more than the rate
    assert max_in_any_window(worst) <= rate
    # And the express texts on top of a schedule paced at the whole rate would have
    unsplit = limiter.reserve(key(), rate, n=3 * rate, horizon_s=10).slots_s
    shifted = [s - unsplit[0] + main[0] for s in unsplit]
    both = sorted([*shifted, *express])
    late = [s + (0.99 * budget_s if s < both[0] + 1 else 0.0) for s in both]
    assert max_in_any_window(late) > rate
