"""An idle lane's consumer wakes when work is enqueued, instead of polling (issue #21, item 6).

dramatiq's Redis consumer sleeps between polls of an empty queue; ours blocks on the lane's
wake list, which every enqueue for now pushes a token onto (``queues/wake.py``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from config.names import Names
from messaging.ports import SendWork
from queues.lanes import Lanes, make_broker
from queues.wake import WAKE_TOKENS_MAX, wake_key
from tests.conftest import REDIS_TEST_URL

pytestmark = [pytest.mark.integration]

#: A consumer's idle wait in these tests: far longer than a wake should ever take.
LONG_WAIT_MS = 5_000


@pytest.fixture
def lanes() -> Iterator[Lanes]:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    lanes = Lanes(make_broker(client, Names(f"wake{uuid.uuid4().hex[:8]}")))
    yield lanes
    keys = client.keys(f"{lanes.broker.namespace}*")
    if keys:
        client.delete(*keys)
    client.close()


def _work(blast: str = "b1") -> SendWork:
    return SendWork(blast, "sms", "normal", (1, 2, 3))


def test_an_enqueue_wakes_an_idle_consumer_at_once(lanes: Lanes) -> None:
    # Given a consumer of an empty lane, waiting up to five seconds
    consumer = lanes.broker.consume("sms-normal", prefetch=2, timeout=LONG_WAIT_MS)
    got: list[object] = []
    started = threading.Event()

    def consume() -> None:
        started.set()
        deadline = time.monotonic() + 2 * LONG_WAIT_MS / 1000
        while not got and time.monotonic() < deadline:
            message = next(consumer)
            if message is not None:
                got.append((message, time.monotonic()))

    thread = threading.Thread(target=consume)
    thread.start()
    started.wait()
    time.sleep(0.3)  # it is blocked on the wake list by now
    # When a unit is enqueued
    enqueued_at = time.monotonic()
    lanes.enqueue(_work())
    thread.join(timeout=3 * LONG_WAIT_MS / 1000)
    # Then it has the unit within a fraction of its wait, not after it
    assert got, "the consumer never received the unit"
    message, received_at = got[0]  # type: ignore[misc]
    assert message.args[0] == "b1"  # type: ignore[attr-defined]
    assert received_at - enqueued_at < 1.0, f"woke after {received_at - enqueued_at:.2f} s"
    consumer.close()


def test_an_idle_consumer_without_work_waits_its_timeout(lanes: Lanes) -> None:
    # An empty lane with no tokens: one next() is one blocked call of the whole wait, not
    # a poll loop (what keeps idle lanes cheap)
    consumer = lanes.broker.consume("sms-normal", prefetch=2, timeout=400)
    started = time.monotonic()
    assert next(consumer) is None
    assert time.monotonic() - started >= 0.35
    consumer.close()


def test_delayed_work_leaves_no_token_and_tokens_are_capped(lanes: Lanes) -> None:
    client = lanes.broker.client
    key = wake_key(lanes.broker.namespace, "sms-normal")
    # Work due later wakes nobody: it goes to the delay queue
    lanes.enqueue(SendWork("b1", "sms", "normal", (1,), delay_s=30.0))
    assert client.llen(key) == 0
    # Work for now leaves one token per unit put on the lane, capped, and the list expires
    for n in range(WAKE_TOKENS_MAX + 10):
        lanes.enqueue(_work(f"b{n}"))
    assert client.llen(key) == WAKE_TOKENS_MAX
    assert 0 < client.pttl(key) <= 60_000


def test_a_consumer_with_full_prefetch_leaves_the_tokens_to_others(lanes: Lanes) -> None:
    # Given a consumer holding as many units as it may (prefetch 1, nothing acked)
    consumer = lanes.broker.consume("sms-normal", prefetch=1, timeout=200)
    lanes.enqueue(_work("b1"))
    assert next(consumer) is not None
    # When another blast's unit arrives
    lanes.enqueue(_work("b2"))
    key = wake_key(lanes.broker.namespace, "sms-normal")
    before = lanes.broker.client.llen(key)
    assert next(consumer) is None
    # Then its token is still there for a consumer that can take the unit
    assert lanes.broker.client.llen(key) == before > 0
    consumer.close()


def test_a_consumer_with_full_prefetch_looks_again_within_a_tenth_of_a_second(
    lanes: Lanes,
) -> None:
    # A thread's ack frees room without a token, so a full consumer keeps looking often,
    # whatever its idle wait (dramatiq's backoff would grow to the whole 5 s here)
    consumer = lanes.broker.consume("sms-normal", prefetch=1, timeout=LONG_WAIT_MS)
    lanes.enqueue(_work("b1"))
    assert next(consumer) is not None
    started = time.monotonic()
    for _ in range(10):  # backoffs 5, 10, … ms, capped at 100 (uncapped: 1.3 s at least)
        assert next(consumer) is None
    assert time.monotonic() - started < 1.0
    consumer.close()
