"""Rows in doubt are settled within a minute, never by a duplicate (issue #14, item 4).

A sender that dies between claim and outcome leaves its rows ``sending``. Senders announce
the rows they hold and beat (``RedisInFlight``); the sweep settles what no live sender holds:
SMS by asking Twilio's message log (found: ``sent`` with its SID; absent: sent once now),
email as ``failed``/``lost_in_flight``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, select

from config.names import Names
from emulators.server import Emulator
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.memory import InMemoryInFlight
from messaging.providers.base import SmsMessage, SmsReceipt
from messaging.providers.twilio_sms import TwilioSms
from messaging.safety.in_doubt import InDoubtReport, InDoubtSettler
from messaging.sending.sms import SmsSender, first_contact_text
from messaging.store.db import create_db_engine
from messaging.store.schema import deliveries
from queues.flow.inflight import InFlightUnknown, RedisInFlight
from tests import fleet
from tests.conftest import REDIS_TEST_URL
from tests.factories import add_supporters, emulated_twilio_fixture, send_context, sms_config
from tests.fleet import emulated_fleet  # noqa: F401 - the fixture

ACCOUNT_SID = "AC" + "1234567890abcdef" * 2
AUTH_TOKEN = "in-doubt-auth-token"
CONFIG = sms_config()


twilio = emulated_twilio_fixture(ACCOUNT_SID, AUTH_TOKEN)


def _states(engine: Engine) -> dict[tuple[str, int], tuple[str, str | None, str | None]]:
    with engine.connect() as conn:
        return {
            (c, int(s)): (st, pid, code)
            for c, s, st, pid, code in conn.execute(
                select(
                    deliveries.c.channel,
                    deliveries.c.supporter_id,
                    deliveries.c.state,
                    deliveries.c.provider_message_id,
                    deliveries.c.error_code,
                )
            )
        }


def test_a_dead_senders_rows_are_settled_by_asking_twilio_and_nothing_twice(
    engine: Engine, twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    # Given a blast to three phones and two addresses, expanded
    people = [{"phone": f"+1415555{i:04d}", "email": None} for i in range(3)]
    people += [{"phone": None, "email": f"p{i}@example.org"} for i in range(2)]
    ids = add_supporters(engine, people, topic="t")
    ctx, queue = send_context(engine)
    alert = {
        "alert_id": "d1",
        "sms": {"body": "Hi {{ first_name }}"},
        "email": {"subject": "s", "text": "t"},
    }
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    queue.items.clear()
    # And a sender that claimed every row, texted the first phone (as its first contact,
    # so the body carries the org's name and STOP), then was SIGKILLed before writing anything
    dead = InMemoryInFlight()
    for channel, sids in (("sms", ids[:3]), ("email", ids[3:])):
        dead.hold("d1", channel, sids)
        assert len(ctx.ledger.claim("d1", channel, sids)) == len(sids)
    ctx.ledger.claim_first_contact(ids[:3])
    body = first_contact_text("Acme", "Hi Supporter0")
    [receipt] = twilio.send_many(
        [SmsMessage(to="+14155550000", body=body, from_number=CONFIG.from_numbers[0])]
    )
    assert isinstance(receipt, SmsReceipt)
    blast = ctx.blasts.get("d1")
    assert blast is not None
    settler = InDoubtSettler(
        ctx.ledger, queue, ctx.control.progress, sms_log=twilio, sms_config=CONFIG, grace_s=0
    )
    # When the sweep looks while the sender still beats: nothing is touched
    report = InDoubtReport()
    assert settler.settle(blast, dead.owned(), report) == 0
    # And once its beats stopped, everything is settled in one pass
    dead.die()
    assert settler.settle(blast, dead.owned(), report) == 5
    got = _states(engine)
    # Then the text Twilio has is sent, with Twilio's SID; the other two wait to be sent once
    assert got[("sms", ids[0])] == (RowState.SENT, receipt.sid, None)
    assert got[("sms", ids[1])][0] == got[("sms", ids[2])][0] == RowState.PENDING
    assert (report.sms_found, report.sms_resent, report.email_lost) == (1, 2, 2)
    # And the emails, which SendGrid cannot be asked about, failed as lost in flight
    assert got[("email", ids[3])] == (RowState.FAILED, None, "lost_in_flight")
    # When the re-queued work is sent by a live sender
    sender = SmsSender(ctx, twilio, CONFIG)
    while queue.items:
        sender.process(queue.items.pop(0))
    # Then every phone got exactly one text, each as its first contact
    received = twilio_emulator.recorder.messages()
    assert Counter(m["to"] for m in received) == {
        "+14155550000": 1,
        "+14155550001": 1,
        "+14155550002": 1,
    }
    assert all(m["body"].startswith("Acme: Hi ") for m in received), received
    assert all(_states(engine)[("sms", sid)][0] == RowState.SENT for sid in ids[:3])


def test_rows_claimed_moments_ago_or_held_by_the_living_are_left_alone(
    engine: Engine, twilio: TwilioSms
) -> None:
    ids = add_supporters(engine, [{"phone": "+14155550100"}], topic="t")
    ctx, queue = send_context(engine)
    alert = {"alert_id": "d2", "sms": {"body": "Hi"}}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    ctx.ledger.claim("d2", "sms", ids)
    settler = InDoubtSettler(
        ctx.ledger, queue, ctx.control.progress, sms_log=twilio, sms_config=CONFIG
    )
    blast = ctx.blasts.get("d2")
    assert blast is not None
    # Held by nobody, but claimed less than the grace ago: a live sender may be mid-announce
    assert settler.settle(blast, set(), InDoubtReport()) == 0
    assert _states(engine)[("sms", ids[0])][0] == RowState.SENDING


_HOLDER = """
import sys, time, redis
from config.names import Names
from queues.flow.inflight import RedisInFlight
r = redis.Redis.from_url(sys.argv[1])
RedisInFlight(r, Names(sys.argv[2])).hold("b1", "email", [7, 8])
print("held", flush=True)
time.sleep(60)
"""


def test_redis_in_flight_owned_by_the_living_forgotten_when_beats_stop(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    names = Names(prefix)
    mine = RedisInFlight(client, names, alive_s=3.0)
    view = RedisInFlight(client, names, alive_s=3.0)
    # Given this process holding three rows and another process holding two
    mine.hold("b1", "sms", [1, 2, 3])
    other = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, REDIS_TEST_URL, prefix],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        mine.release("b1", "sms", [2])
        # Then, until every live sender could have beaten, nobody's rows may look orphaned
        with pytest.raises(InFlightUnknown):
            view.owned()
        time.sleep(3.2)
        # And then both processes' rows are owned
        assert view.owned() == {
            ("b1", "sms", 1),
            ("b1", "sms", 3),
            ("b1", "email", 7),
            ("b1", "email", 8),
        }
        # When the other process is SIGKILLed, and Redis loses this process's set meanwhile
        os.kill(other.pid, signal.SIGKILL)
        other.wait(timeout=10)
        client.delete(names.redis_key("inflight") + ":" + mine.proc)
        time.sleep(4.5)  # > alive_s, and > one beat of the living
        # Then only the living process's rows are owned (its beat put them back), and the dead
        # one is forgotten
        assert view.owned() == {("b1", "sms", 1), ("b1", "sms", 3)}
        assert set(client.hkeys(names.redis_key("senders"))) == {b"_since", mine.proc.encode()}
        # When Redis loses everything (a restart without persistence), nothing is judged
        # until the living have had their beat window again
        client.delete(names.redis_key("senders"), names.redis_key("inflight") + ":" + mine.proc)
        with pytest.raises(InFlightUnknown):
            view.owned()
        time.sleep(5.5)  # the next beat (<= 2 s) re-creates the registry, then alive_s
        assert view.owned() == {("b1", "sms", 1), ("b1", "sms", 3)}
    finally:
        if other.poll() is None:
            other.kill()
        mine.close()
    assert view.owned() == set()


PEOPLE = 3_000
KILL_EVERY_S = 2.0


@pytest.mark.e2e
def test_sigkilled_senders_every_2s_lose_nothing_and_duplicate_nothing(
    emulated_fleet: Callable[..., fleet.EmulatedFleet],  # noqa: F811 - the fixture
    pg_url: str,
    moto_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    """Given a 3,000-recipient SMS blast and three senders, when one sender is SIGKILLed every
    2 s (its requests to Twilio in flight), then every number gets exactly one text and the
    ledger records each as sent with the SID Twilio has: 0 duplicates, 0 lost."""
    # 3,000 at 200/s is fifteen seconds of sending: room for several kills before 90 % is
    # sent, even when each look at the blast (a `rapid blast show`) takes a second
    with emulated_fleet(
        SMS_RATE_PER_SENDER="80",
        SMS_RATE_ACCOUNT="200",
    ) as (twilio_emu, _, env):
        # 40-80 ms per call: a kill always finds requests in flight
        twilio_emu.faults.update(latency_ms=40, latency_jitter_ms=40)
        phones = fleet.seed_people(env, tmp_path, PEOPLE, "kills", timeout=300)
        procs = fleet.Fleet(env, tmp_path)
        procs.start("intake", "intake", "--wait-time", "1")
        # Lost queue work is re-driven after 5 s; rows are never failed for being stuck (the
        # in-doubt settlement must do it all)
        procs.start(
            "scheduler",
            "scheduler",
            "--interval",
            "1",
            "--stall-after",
            "5",
            "--stuck-after",
            "900",
        )
        for i in range(3):
            procs.start(f"sender{i}", "sender", "--threads", "4", "--channels", "sms")
        sns, _ = fleet.aws_clients(moto_url)
        sns.publish(
            TopicArn=fleet.topic_arn(sns, prefix, "kills"),
            Message=json.dumps({"alert_id": "kills-1", "sms": {"body": "Hi {{ first_name }}"}}),
        )
        kills, summary = 0, None
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline:
                time.sleep(KILL_EVERY_S)
                summary = fleet.blast_summary(env, "kills-1")
                if summary and summary["status"] == "completed":
                    break
                if summary and summary["counts"]["sms"]["sent"] < PEOPLE * 0.9:
                    victim = f"sender{kills % 3}"
                    procs.kill(victim)  # SIGKILL: requests in flight, rows claimed, no goodbye
                    kills += 1
                    procs.start(victim, "sender", "--threads", "4", "--channels", "sms")
        finally:
            procs.stop()
        assert summary is not None and summary["status"] == "completed", (summary, procs.logs())
        assert kills >= 3
        # The kills did leave rows in doubt, and the sweep settled them
        swept = "".join(p.read_text() for p in tmp_path.glob("scheduler.*.log"))
        assert "sweep.sms_in_doubt_settled" in swept, procs.logs()
        # Then no number got two texts, and none got none
        received = Counter(m["to"] for m in twilio_emu.recorder.messages())
        duplicates = sum(n - 1 for n in received.values() if n > 1)
        lost = len(set(phones) - set(received))
        assert (duplicates, lost) == (0, 0), (duplicates, lost, kills)
        # And the ledger says so too: every row sent, with the SID Twilio gave that number
        sids = {m["to"]: m["sid"] for m in twilio_emu.recorder.messages()}
        engine = create_db_engine(pg_url)
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    deliveries.c.destination, deliveries.c.state, deliveries.c.provider_message_id
                ).where(deliveries.c.blast_id == "kills-1")
            ).all()
        engine.dispose()
        assert len(rows) == PEOPLE
        assert Counter(r.state for r in rows) == {RowState.SENT: PEOPLE}
        assert all(sids[r.destination] == r.provider_message_id for r in rows)
