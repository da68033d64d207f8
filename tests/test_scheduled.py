"""Scheduled sends (contract §4 ``send_at``, issue #19 item 3).

A blast published with ``send_at`` ahead is ``scheduled``: nothing is expanded or sent until
then, it can be canceled meanwhile, and ``rapid scheduler`` releases it within a second of
its time. The unit tests drive :class:`~messaging.blasts.scheduled.ScheduledReleases` with a clock
of their own over the in-memory stores; the end-to-end test runs intake, sender and
scheduler as processes against PostgreSQL, moto and the Twilio emulator.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emulators.server import Emulator
from messaging.blasts.intake import Intake
from messaging.blasts.lifecycle import BlastLifecycle, BlastStatus, RowState
from messaging.blasts.scheduled import ORPHAN_S, POLL_S, ScheduledReleases
from messaging.errors import InputError
from messaging.memory import InMemoryBlastControl, InMemorySendQueue
from messaging.ports import Delivery, SupporterRow
from messaging.store import Stores, memory_stores, open_stores
from messaging.store.db import create_db_engine
from tests.fleet import (
    aws_clients,
    emulated_env,
    rapid,
    seed_people,
    start_pipeline,
    topic_arn,
    wait_ended,
    wait_until,
)
from tests.test_e2e_pipeline import emulators  # noqa: F401 - the fixture

TOPIC = "t"
T0 = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _world() -> tuple[Stores, Intake, BlastLifecycle, InMemorySendQueue]:
    stores = memory_stores()
    rows = [
        SupporterRow(f"p{i}", phone=f"+1415555{1000 + i:04d}", sms_opt_in=True, topics=(TOPIC,))
        for i in range(5)
    ]
    stores.supporters.write_batch(rows, frozenset({"phone", "sms_opt_in", "topics"}))
    queue, control = InMemorySendQueue(), InMemoryBlastControl()

    def unwrap(body: str) -> Delivery:
        return Delivery(body, TOPIC, "m-1", "raw")

    intake = Intake(unwrap, stores.blasts, stores.ledger, queue, control)
    lifecycle = BlastLifecycle(stores.blasts, stores.ledger, control, queue)
    return stores, intake, lifecycle, queue


def _alert(alert_id: str, send_at: datetime, **extra: Any) -> str:
    return json.dumps(
        {"alert_id": alert_id, "sms": {"body": "Hi"}, "send_at": send_at.isoformat(), **extra}
    )


def test_a_scheduled_blast_waits_and_is_released_when_due() -> None:
    # Given an alert due in an hour, taken by the intake
    stores, intake, lifecycle, queue = _world()
    send_at = datetime.now(UTC) + timedelta(hours=1)
    blast = intake.handle(_alert("s1", send_at))
    # Then it is scheduled: no ledger rows, no send work
    assert blast.status == BlastStatus.SCHEDULED and blast.send_at == send_at
    assert stores.ledger.open_ids("s1", "sms", RowState.PENDING, 0, 100) == []
    assert queue.items == []
    # And a redelivery of the same alert changes nothing
    assert intake.handle(_alert("s1", send_at)).status == BlastStatus.SCHEDULED
    expanded: list[str] = []
    clock = Clock(send_at - timedelta(milliseconds=1))
    releases = ScheduledReleases(
        stores.blasts, lifecycle, lambda b: expanded.append(intake.expand(b).status), clock=clock
    )
    # When the scheduler looks a millisecond early, nothing is released
    assert releases.release_due() == [] and expanded == []
    # And it sleeps no longer than until send_at (or its poll)
    assert releases.seconds_until_due(5.0) == pytest.approx(0.001)
    # When the time comes, it is released and expanded: five recipients queued
    clock.now = send_at
    assert releases.release_due() == ["s1"]
    assert expanded == [BlastStatus.SENDING]
    assert sum(len(w.supporter_ids) for w in queue.items) == 5
    # And a second look releases nothing again
    assert releases.release_due() == []


def test_a_scheduled_blast_canceled_before_its_time_never_sends() -> None:
    stores, intake, lifecycle, queue = _world()
    send_at = datetime.now(UTC) + timedelta(hours=1)
    intake.handle(_alert("s2", send_at))
    # When it is canceled while scheduled
    assert lifecycle.cancel("s2", drain_s=0)
    releases = ScheduledReleases(
        stores.blasts, lifecycle, intake.expand, clock=Clock(send_at + timedelta(seconds=1))
    )
    # Then its time passes without a release, a row or any work
    assert releases.release_due() == []
    blast = stores.blasts.get("s2")
    assert blast is not None and blast.status == BlastStatus.CANCELED
    assert queue.items == [] and stores.ledger.has_open("s2") is False


def test_a_scheduled_blast_past_send_by_expires_instead_of_sending() -> None:
    stores, intake, lifecycle, _ = _world()
    now = datetime.now(UTC)
    intake.handle(
        _alert(
            "s3",
            now + timedelta(minutes=1),
            send_by=(now + timedelta(minutes=2)).isoformat(),
        )
    )
    # When the scheduler was down until after send_by
    late = Clock(now + timedelta(minutes=3))
    released = ScheduledReleases(stores.blasts, lifecycle, intake.expand, clock=late)
    # Then it is not released (the sweep expires it)
    assert released.release_due() == []
    assert lifecycle.expire("s3")


def test_send_at_must_come_before_send_by_and_dry_runs_report_now() -> None:
    _, intake, _, _ = _world()
    now = datetime.now(UTC)
    with pytest.raises(InputError, match="send_at must be before send_by"):
        intake.handle(
            _alert("bad", now + timedelta(hours=2), send_by=(now + timedelta(hours=1)).isoformat())
        )
    # A dry run of a scheduled alert reports at once (what it would do, asked now)
    dry = intake.handle(_alert("dry", now + timedelta(hours=1), dry_run=True))
    assert dry.status == BlastStatus.COMPLETED and dry.stats["would_send"]["sms"]["pending"] == 5


def test_an_expansion_orphaned_by_a_dead_scheduler_is_resumed() -> None:
    # Given a blast released by a scheduler that died before expanding it
    stores, intake, lifecycle, queue = _world()
    send_at = datetime.now(UTC) + timedelta(seconds=1)
    intake.handle(_alert("s4", send_at))
    dead = ScheduledReleases(stores.blasts, lifecycle, lambda b: None, clock=Clock(send_at))
    assert dead.release_due() == ["s4"]
    assert queue.items == []
    # When the next leader looks while the release is recent, it leaves it alone (the
    # expansion may still be running elsewhere) …
    later = Clock(send_at + timedelta(seconds=1))
    nxt = ScheduledReleases(stores.blasts, lifecycle, intake.expand, clock=later)
    assert nxt.release_due() == []
    # … and once it has not moved for ORPHAN_S, resumes it: every recipient queued once
    later.now = datetime.now(UTC) + timedelta(seconds=ORPHAN_S + 1)
    assert nxt.release_due() == ["s4"]
    assert sum(len(w.supporter_ids) for w in queue.items) == 5
    blast = stores.blasts.get("s4")
    assert blast is not None and blast.status == BlastStatus.SENDING
    # And a blast it is expanding right now is never started twice
    running = ScheduledReleases(
        stores.blasts, lifecycle, intake.expand, running=lambda: {"s4"}, clock=later
    )
    assert running.release_due() == []


def test_the_scheduler_polls_at_least_every_poll_interval() -> None:
    stores, _, lifecycle, _ = _world()
    releases = ScheduledReleases(stores.blasts, lifecycle, lambda b: None)
    assert releases.seconds_until_due(5.0) == POLL_S
    assert releases.seconds_until_due(0.1) == 0.1


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.integration
def test_scheduled_blast_sends_nothing_early_and_starts_on_time(
    pg_url: str,
    moto_url: str,
    prefix: str,
    emulators: tuple[Emulator, Emulator],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    twilio, sendgrid = emulators
    env = emulated_env(twilio, sendgrid, db_url=pg_url, moto_url=moto_url, prefix=prefix)
    phones = seed_people(env, tmp_path, 40, "town-hall")
    sns, _ = aws_clients(moto_url)
    arn = topic_arn(sns, prefix, "town-hall")
    fleet = start_pipeline(env, tmp_path)
    fleet.start("scheduler", "scheduler", "--interval", "5")
    engine = create_db_engine(pg_url)
    blasts = open_stores(engine).blasts

    def status(blast_id: str) -> str | None:
        blast = blasts.get(blast_id)
        return blast.status if blast else None

    try:
        # Given two alerts scheduled 20 s ahead, one of which is canceled before its time
        send_at = datetime.now(UTC) + timedelta(seconds=20)
        for alert_id in ("sched-1", "sched-2"):
            body = {"alert_id": alert_id, "sms": {"body": "Town hall now"}}
            sns.publish(TopicArn=arn, Message=json.dumps({**body, "send_at": send_at.isoformat()}))
        wait_until(
            lambda: status("sched-1") == status("sched-2") == "scheduled",
            "both blasts scheduled",
            timeout_s=15,
        )
        rapid(env, "blast", "cancel", "sched-2")
        # Then nothing is sent before send_at
        while datetime.now(UTC) < send_at - timedelta(milliseconds=300):
            assert twilio.recorder.messages() == [], "a scheduled blast sent early"
            assert status("sched-1") == "scheduled"
            time.sleep(0.05)
        # When the time comes, the scheduler releases it within a second (contract §6), and
        # its first text reaches Twilio within two (expansion and a sender's fetch follow)
        summary = wait_ended(env, "sched-1", timeout_s=60)
        record = blasts.get("sched-1")
        assert record is not None and record.expanded_at is not None
        released = record.expanded_at.timestamp()
        assert send_at.timestamp() <= released <= send_at.timestamp() + 1.0, (
            f"released {released - send_at.timestamp():+.2f} s from send_at"
        )
        received = twilio.recorder.messages()
        first = min(m["received_at"] for m in received)
        assert send_at.timestamp() <= first <= send_at.timestamp() + 2.0, (
            f"first send {first - send_at.timestamp():+.2f} s from send_at"
        )
        # And the blast reached everyone once; the canceled one reached nobody
        assert summary["status"] == "completed"
        assert sorted(m["to"] for m in received) == sorted(phones)
        canceled = wait_ended(env, "sched-2", timeout_s=10)
        assert canceled["status"] == "canceled"
        assert canceled["counts"]["sms"]["targeted"] == 0
    finally:
        codes = fleet.stop()
        engine.dispose()
    assert all(code == 0 for code, _ in codes.values()), fleet.logs()
