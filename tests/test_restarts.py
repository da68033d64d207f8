"""Our own services restart mid-blast (issue #14, item 7).

Given a blast in flight, when the fleet's Redis (a real ``redis-server`` this test owns,
without persistence) is killed and started again empty on the same port, and every
PostgreSQL session of the fleet is terminated, then the blast completes with every number
texted exactly once.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select, text

from messaging.blasts.lifecycle import RowState
from messaging.store.db import create_db_engine
from messaging.store.schema import deliveries
from tests import fleet
from tests.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PEOPLE = 2_000


class OwnRedis:
    """A redis-server on a port of its own, without persistence: a restart loses everything."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis(free_port())
    server.start()
    yield server
    server.kill()


def test_redis_restarted_empty_and_database_sessions_dropped_mid_blast(
    pg_url: str, moto_url: str, prefix: str, tmp_path: Path, own_redis: OwnRedis
) -> None:
    with fleet.EmulatedFleet(
        db_url=pg_url,
        moto_url=moto_url,
        prefix=prefix,
        REDIS_URL=own_redis.url,
        SMS_RATE_PER_SENDER="50",
        SMS_RATE_ACCOUNT="200",
    ) as (twilio, _, env):
        twilio.faults.update(latency_ms=20, latency_jitter_ms=20)
        phones = fleet.seed_people(env, tmp_path, PEOPLE, "restarts", timeout=300)
        procs = fleet.Fleet(env, tmp_path)
        procs.start("intake", "intake", "--wait-time", "1")
        procs.start("scheduler", "scheduler", "--interval", "1", "--stall-after", "5")
        for i in range(2):
            procs.start(f"sender{i}", "sender", "--threads", "4", "--channels", "sms")
        sns, _ = fleet.aws_clients(moto_url)
        sns.publish(
            TopicArn=fleet.topic_arn(sns, prefix, "restarts"),
            Message=json.dumps({"alert_id": "restarts-1", "sms": {"body": "Hi {{ first_name }}"}}),
        )
        engine = create_db_engine(pg_url)
        summary = None
        try:
            _wait_sent(twilio, 300)
            # When Redis dies and comes back empty on the same port
            own_redis.kill()
            time.sleep(2)
            own_redis.start()
            _wait_sent(twilio, 900)
            # And every session the fleet holds on PostgreSQL is terminated
            with engine.connect() as conn:
                dropped = conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert dropped > 0
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                summary = fleet.blast_summary(env, "restarts-1")
                if summary and summary["status"] == "completed":
                    break
                time.sleep(1)
        finally:
            procs.stop()
        # Then the blast completed, every number got exactly one text, and the ledger agrees
        assert summary is not None and summary["status"] == "completed", (summary, procs.logs())
        received = Counter(m["to"] for m in twilio.recorder.messages())
        duplicates = sum(n - 1 for n in received.values() if n > 1)
        lost = len(set(phones) - set(received))
        assert (duplicates, lost) == (0, 0)
        with engine.connect() as conn:
            states = Counter(
                s for (s,) in conn.execute(
                    select(deliveries.c.state).where(deliveries.c.blast_id == "restarts-1")
                )
            )  # fmt: skip
        engine.dispose()
        assert states == {RowState.SENT: PEOPLE}
        # And each process said so in one clear line per outage, never with a traceback
        for log in tmp_path.glob("*.log"):
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            assert not [e for e in lines if "exception" in e], (log.name, lines)
            outages = Counter(e["outage"] for e in lines if "outage" in e)
            assert all(n == 1 for n in outages.values()), (log.name, outages)
            talk = [e for e in lines if "onnection" in json.dumps(e) and "outage" not in e]
            assert not talk, (log.name, talk)


def _wait_sent(twilio: object, n: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while len(twilio.recorder.messages()) < n:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"fewer than {n} texts sent in {timeout_s}s"
        time.sleep(0.2)
