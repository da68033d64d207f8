"""Priority lanes, first contact under concurrency, and a STOP through the real webhook,
with the fleet as separate processes (emulators in their own process)."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import free_port
from tests.fleet import (  # noqa: F401 - emulators: the fixture
    AUTH_TOKEN,
    EmulatorProcess,
    Fleet,
    aws_clients,
    emulators,
    rapid,
    topic_arn,
    wait_ended,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def people_csv(path: Path, n: int, topics_of: Any) -> list[str]:
    phones = []
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["external_id", "first_name", "phone", "topics", "sms_opt_in"])
        for i in range(n):
            phone = f"+1412{3000000 + i:07d}"
            phones.append(phone)
            w.writerow([f"q{i}", f"Pat{i}", phone, topics_of(i), "yes"])
    return phones


def test_an_urgent_alert_overtakes_a_bulk_blast_in_flight(
    moto_url: str,
    prefix: str,
    emulators: EmulatorProcess,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    env = emulators.env(
        SMS_RATE_ACCOUNT="300",
        SMS_RATE_PER_SENDER="100",
    )
    rapid(env, "provision", "--topic", "debate-night", "--topic", "breaking")
    phones = people_csv(
        tmp_path / "p.csv", 20_000, lambda i: "debate-night;breaking" if i < 5 else "debate-night"
    )
    rapid(env, "supporters", "import", str(tmp_path / "p.csv"), timeout=300)
    fleet = Fleet(env, tmp_path)
    fleet.start("intake", "intake", "--wait-time", "1")
    fleet.start("sender", "sender", "--threads", "8", "--channels", "sms")
    sns, _ = aws_clients(moto_url)
    try:
        # Given a 20,000-recipient bulk blast well under way
        sns.publish(
            TopicArn=topic_arn(sns, prefix, "debate-night"),
            Message=json.dumps({"alert_id": "bulk-1", "priority": "bulk", "sms": {"body": "Bulk"}}),
        )
        wait_until(lambda: len(emulators.sms()) >= 600, "600 bulk SMS")
        # When an urgent alert is published
        published = time.time()
        sns.publish(
            TopicArn=topic_arn(sns, prefix, "breaking"),
            Message=json.dumps(
                {"alert_id": "urgent-1", "priority": "urgent", "sms": {"body": "URGENT"}}
            ),
        )
        deadline = published + 10
        first = None
        while first is None and time.time() < deadline:
            urgent = [m for m in emulators.sms() if "URGENT" in m["body"]]
            first = min((m["received_at"] for m in urgent), default=None)
            time.sleep(0.05)
        # Then its first message reaches the provider within a second, bulk still in flight
        assert first is not None, "urgent alert never arrived"
        assert first - published <= 1.0, first - published
        assert len(emulators.sms()) < 20_000
        rapid(env, "blast", "cancel", "bulk-1")
        wait_ended(env, "urgent-1", timeout_s=30)
        assert sorted(m["to"] for m in emulators.sms() if "URGENT" in m["body"]) == phones[:5]
    finally:
        fleet.stop()


def test_first_contact_text_once_per_supporter_under_concurrent_blasts(
    moto_url: str,
    prefix: str,
    emulators: EmulatorProcess,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    env = emulators.env()
    rapid(env, "provision", "--topic", "debate-night")
    phones = people_csv(tmp_path / "p.csv", 300, lambda i: "debate-night")
    rapid(env, "supporters", "import", str(tmp_path / "p.csv"))
    fleet = Fleet(env, tmp_path)
    fleet.start("intake", "intake", "--wait-time", "1")
    for i in range(2):
        fleet.start(f"sender{i}", "sender", "--threads", "8", "--channels", "sms")
    sns, _ = aws_clients(moto_url)
    arn = topic_arn(sns, prefix, "debate-night")
    try:
        # When two alerts go to the same new supporters at once, on two sender processes
        for n in (1, 2):
            sns.publish(
                TopicArn=arn,
                Message=json.dumps(
                    {"alert_id": f"fc-{n}", "priority": "urgent", "sms": {"body": f"Alert {n}"}}
                ),
            )
        wait_ended(env, "fc-1")
        wait_ended(env, "fc-2")
        # Then everyone got both, and exactly one of the two carried the first-contact text
        messages = emulators.sms()
        assert Counter(m["to"] for m in messages) == dict.fromkeys(phones, 2)
        firsts = Counter(m["to"] for m in messages if m["body"].startswith("Acme Action: "))
        assert firsts == dict.fromkeys(phones, 1)
        assert all(
            m["body"].endswith("Reply STOP to opt out")
            for m in messages
            if m["body"].startswith("Acme Action: ")
        )
    finally:
        fleet.stop()


def test_a_stop_through_the_signed_webhook_stops_that_number_mid_blast(
    moto_url: str,
    prefix: str,
    emulators: EmulatorProcess,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    port = free_port()
    public = "https://rr.acme.example"
    env = emulators.env(
        TWILIO_FROM_NUMBERS="+15005550001",
        SMS_RATE_PER_SENDER="10",
        SMS_RATE_ACCOUNT="10",
        PORT=str(port),
        PUBLIC_BASE_URL=public,
    )
    rapid(env, "provision", "--topic", "debate-night")
    phones = people_csv(tmp_path / "p.csv", 80, lambda i: "debate-night")
    rapid(env, "supporters", "import", str(tmp_path / "p.csv"))
    fleet = Fleet(env, tmp_path)
    fleet.start("web", "web", "--host", "127.0.0.1")
    fleet.start("intake", "intake", "--wait-time", "1")
    fleet.start("sender", "sender", "--threads", "4", "--channels", "sms")
    sns, _ = aws_clients(moto_url)
    try:
        sns.publish(
            TopicArn=topic_arn(sns, prefix, "debate-night"),
            Message=json.dumps({"alert_id": "hook-1", "priority": "urgent", "sms": {"body": "Hi"}}),
        )
        wait_until(lambda: len(emulators.sms()) >= 5, "the first 5 SMS")
        # When the last supporter of the audience texts STOP, signed by Twilio
        stopper = phones[-1]
        params = {
            "MessageSid": "SM" + "f" * 32,
            "From": stopper,
            "To": "+15005550001",
            "Body": " Stop ",
        }
        url = f"{public}/webhooks/twilio/inbound"
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
        response = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/twilio/inbound",
            data=params,
            headers={"X-Twilio-Signature": signature},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        stopped = time.time()
        # Then that number gets nothing afterwards, and everyone else is served
        summary = wait_ended(env, "hook-1", timeout_s=60)
        late = [
            m for m in emulators.sms() if m["to"] == stopper and m["received_at"] > stopped + 1.0
        ]
        assert late == []
        assert summary["counts"]["sms"]["suppressed"] == 1
        assert {m["to"] for m in emulators.sms()} == set(phones[:-1])
    finally:
        fleet.stop()
