"""Crashes mid-blast: sender processes are SIGKILLed every few seconds and restarted.

Given a 4,000-recipient blast paced to last about ten seconds, when senders die without warning again and again, then no
number gets two messages and every recipient ends in a terminal ledger state (those whose
worker died between claim and outcome end failed/lost_in_flight: at most once).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from messaging.store.db import create_db_engine
from messaging.store.schema import deliveries
from tests.fleet import (
    EmulatedFleet,
    Fleet,
    aws_clients,
    blast_summary,
    seed_people,
    topic_arn,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PEOPLE = 4_000
SENDERS = 3
#: Kills land while the blast sends: 4,000 at 300/s is fourteen seconds, so five or six kills
#: (a sender restarts in about a second); more recipients would only add CPU to `make test`.
#: (At 400/s, paced at 96 % and without claim churn, a loaded host saw only two kills
#: before 90 % was sent.)
KILL_EVERY_S = 2.0


def test_sigkilled_senders_never_duplicate_and_leave_nothing_open(
    pg_url: str, moto_url: str, prefix: str, tmp_path: Path
) -> None:
    with EmulatedFleet(
        db_url=pg_url,
        moto_url=moto_url,
        prefix=prefix,
        SMS_RATE_PER_SENDER="150",
        SMS_RATE_ACCOUNT="300",
    ) as (twilio, _, env):
        seed_people(env, tmp_path, PEOPLE, "debate-night", timeout=300)
        fleet = Fleet(env, tmp_path)
        fleet.start("intake", "intake", "--wait-time", "1")
        # Short sweep windows: with no emulator latency a batch lasts well under a second.
        fleet.start(
            "scheduler", "scheduler", "--interval", "1", "--stall-after", "5", "--stuck-after", "15"
        )
        for i in range(SENDERS):
            fleet.start(f"sender{i}", "sender", "--threads", "4", "--channels", "sms")
        sns, _ = aws_clients(moto_url)
        sns.publish(
            TopicArn=topic_arn(sns, prefix, "debate-night"),
            Message=json.dumps({"alert_id": "chaos-1", "sms": {"body": "Hi {{ first_name }}"}}),
        )
        rng = random.Random(5)
        kills = 0
        deadline = time.monotonic() + 240
        summary = None
        seen: list[dict[str, object]] = []
        try:
            while time.monotonic() < deadline:
                time.sleep(KILL_EVERY_S)
                summary = blast_summary(env, "chaos-1")
                if summary:
                    seen.append(summary)
                if summary and summary["status"] == "completed":
                    break
                if summary and summary["counts"]["sms"]["sent"] < PEOPLE * 0.9:
                    victim = f"sender{rng.randrange(SENDERS)}"
                    fleet.kill(victim)  # SIGKILL: no drain, no goodbye
                    kills += 1
                    fleet.start(victim, "sender", "--threads", "4", "--channels", "sms")
        finally:
            fleet.stop()
        assert summary is not None and summary["status"] == "completed", (summary, fleet.logs())
        assert kills >= 3
        # Mid-blast, `blast show` read the live counters, and they never claimed more than
        # the ledger could hold
        live = [s["counts"]["sms"] for s in seen if s["counts_source"] == "live"]  # type: ignore[index]
        assert live, seen
        assert all(c["targeted"] <= PEOPLE and c["sent"] <= PEOPLE for c in live)
        # Then no number got two messages
        received = Counter(m["to"] for m in twilio.recorder.messages())
        assert max(received.values()) == 1
        # And every recipient is terminal; whatever the ledger did not record as sent was lost
        # in flight by a killed worker, and is accounted for as such
        sms = summary["counts"]["sms"]
        assert sms["pending"] == 0 and sms["targeted"] == PEOPLE
        engine = create_db_engine(pg_url)
        with engine.connect() as conn:
            lost = conn.scalar(
                select(func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.blast_id == "chaos-1", deliveries.c.error_code == "lost_in_flight"
                )
            )
        engine.dispose()
        assert sms["sent"] + sms["failed"] == PEOPLE
        assert sms["failed"] == lost
        assert sms["sent"] <= len(received) <= sms["sent"] + lost
