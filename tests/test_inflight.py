"""Held rows travel to Redis packed (one argument per blast and channel), and come back as
the same rows: holds, releases and beats of batches larger than one script chunk."""

from __future__ import annotations

import time

import redis

from config.names import Names
from queues.flow.inflight import RedisInFlight, encode, packed
from tests.conftest import REDIS_TEST_URL


def test_packed_rows_are_built_by_the_script_as_encode_writes_them(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    mine = RedisInFlight(client, Names(prefix))
    try:
        # When a process holds 2,500 rows of one blast (over two script chunks) and 2 of another
        mine.hold("b.1:x", "sms", range(1, 2501))
        mine.hold("b2", "email", [7, 8])
        # Then its set has each row exactly as encode writes it
        rows = {("b.1:x", "sms", s) for s in range(1, 2501)} | {
            ("b2", "email", 7),
            ("b2", "email", 8),
        }
        members = {m.decode() for m in client.smembers(mine._set)}
        assert members == {encode(r) for r in rows}
        assert packed("b2", "email", [7, 8]) == ["email|", "|b2", "7,8"]
        # When it releases 2,000 of them, one it never held among them
        mine.release("b.1:x", "sms", [*range(1, 2001), 9999])
        left = {("b.1:x", "sms", s) for s in range(2001, 2501)} | {
            ("b2", "email", 7),
            ("b2", "email", 8),
        }
        assert {m.decode() for m in client.smembers(mine._set)} == {encode(r) for r in left}
        # When Redis loses the set, a beat puts back exactly what the process still holds
        client.delete(mine._set)
        mine.beat()
        assert {m.decode() for m in client.smembers(mine._set)} == {encode(r) for r in left}
        # When it releases the rest, a beat announces nothing
        mine.release("b.1:x", "sms", range(2001, 2501))
        mine.release("b2", "email", [7, 8])
        mine.beat()
        assert client.smembers(mine._set) == set()
    finally:
        mine.close()


def test_the_registry_sees_packed_rows_as_owned(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    names = Names(prefix)
    mine = RedisInFlight(client, names, alive_s=0.3)
    view = RedisInFlight(client, names, alive_s=0.3)
    try:
        mine.hold("b1", "sms", [1, 2, 3])
        time.sleep(0.35)  # the registry is older than the alive window
        mine.beat()
        assert view.owned() == {("b1", "sms", 1), ("b1", "sms", 2), ("b1", "sms", 3)}
    finally:
        mine.close()
