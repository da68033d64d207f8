"""One scheduler leads the fleet: a Redis lease (``queues/leader.py``) against real Redis.

Given two schedulers, exactly one holds the lease; when the leader dies (stops renewing)
the other takes over within the TTL, and when it stops cleanly (releases) at its next tick.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from config.names import Names
from config.settings import load_settings
from queues.leader import InMemoryLeadership, Leadership, RedisLeaderLease
from tests.conftest import REDIS_TEST_URL
from tests.factories import live_redis

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    c = live_redis()
    yield c
    c.close()


def pair(client: redis.Redis, prefix: str, ttl_ms: int) -> tuple[Leadership, Leadership]:
    names = Names(prefix)
    return (
        RedisLeaderLease(client, names, "scheduler", ttl_ms=ttl_ms, safety_ms=100),
        RedisLeaderLease(client, names, "scheduler", ttl_ms=ttl_ms, safety_ms=100),
    )


def test_one_of_two_leads_and_the_other_takes_over_within_the_ttl_when_it_dies(
    client: redis.Redis, prefix: str
) -> None:
    # Given two schedulers ticking every 50 ms on a 600 ms lease
    a, b = pair(client, prefix, ttl_ms=600)
    assert a.hold() and not b.hold()
    for _ in range(5):  # the leader keeps renewing past its TTL; the other never leads
        time.sleep(0.2)
        assert a.hold() and not b.hold()
    # When the leader dies (no release, no renewal)
    died = time.monotonic()
    while not b.hold():
        time.sleep(0.05)
        assert time.monotonic() - died < 1.0, "no takeover within the TTL"
    # Then the other leads within the TTL, and the dead one cannot renew any more
    assert time.monotonic() - died <= 0.6 + 0.1
    assert not a.hold()


def test_a_clean_stop_hands_over_at_the_next_tick(client: redis.Redis, prefix: str) -> None:
    a, b = pair(client, prefix, ttl_ms=60_000)
    assert a.hold() and not b.hold()
    a.release()
    assert b.hold()  # at once, not after the minute-long TTL
    a.release()  # a non-holder's release changes nothing
    assert b.hold() and not a.hold()


def test_a_leader_that_cannot_renew_stands_down_before_its_lease_could_pass(
    client: redis.Redis, prefix: str
) -> None:
    # Given a leader whose clock says its lease is nearly over and whose lease was taken
    now = [100.0]
    lease = RedisLeaderLease(
        client, Names(prefix), "scheduler", ttl_ms=1000, safety_ms=200, clock=lambda: now[0]
    )
    assert lease.hold()
    client.set(Names(prefix).redis_key("leader", "scheduler"), "someone-else")
    # When it renews, it learns it lost the lease
    now[0] += 0.5
    assert not lease.hold()


def test_schedulers_share_one_lease_per_prefix(client: redis.Redis, prefix: str) -> None:
    a = RedisLeaderLease(client, Names(prefix), "scheduler")
    b = RedisLeaderLease(client, Names(prefix + "x"), "scheduler")
    assert a.hold() and b.hold()
    a.release()
    b.release()


def test_the_in_memory_twin_behaves_the_same() -> None:
    leases: dict[str, tuple[str, float]] = {}
    now = [0.0]
    a = InMemoryLeadership(leases, "scheduler", ttl_ms=600, clock=lambda: now[0])
    b = InMemoryLeadership(leases, "scheduler", ttl_ms=600, clock=lambda: now[0])
    assert a.hold() and not b.hold()
    now[0] += 0.7
    assert b.hold() and not a.hold()
    b.release()
    assert a.hold()


def test_run_scheduler_sweeps_only_while_it_leads(
    client: redis.Redis, pg_url: str, prefix: str, moto_url: str
) -> None:
    # Given two `rapid scheduler` loops on the same prefix, one started first
    from workers.app import App
    from workers.commands.run import run_scheduler

    env = {
        "RAPID_PREFIX": prefix,
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_TEST_URL,
        "AWS_ENDPOINT_URL": moto_url,
    }
    key = Names(prefix).redis_key("leader", "scheduler")
    apps = [App(load_settings(env)) for _ in range(2)]
    leases = [
        RedisLeaderLease(app.redis, app.names, "scheduler", ttl_ms=1000, safety_ms=100)
        for app in apps
    ]
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(
            target=run_scheduler,
            args=(app, stop),
            kwargs={"interval_s": 0.1, "leadership": lease},
            daemon=True,
        )
        for app, stop, lease in zip(apps, stops, leases, strict=True)
    ]
    threads[0].start()
    deadline = time.monotonic() + 10
    while client.get(key) != leases[0].token.encode():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    threads[1].start()
    time.sleep(0.5)
    # Then the first leads and the second waits
    assert client.get(key) == leases[0].token.encode()
    # When the leader stops (SIGTERM path: it releases the lease)
    stops[0].set()
    threads[0].join(timeout=10)
    # Then the second takes over at its next ticks
    deadline = time.monotonic() + 2
    while client.get(key) != leases[1].token.encode():
        assert time.monotonic() < deadline, "the second scheduler never took over"
        time.sleep(0.05)
    stops[1].set()
    threads[1].join(timeout=10)
    assert client.get(key) is None
