"""The whole pipeline as the Procfile runs it: moto SNS/SQS, `rapid intake` and `rapid sender`
as separate OS processes, PostgreSQL, Redis, and the Twilio/SendGrid emulators.

Given a few thousand imported supporters (households, no consent, suppressed), alerts
published with boto3 reach every consenting subscriber exactly once per channel, through
the official clients, and `rapid blast show --json` agrees with what the emulators received.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from emulators.server import Emulator, start_sendgrid, start_twilio
from tests.fleet import ACCOUNT_SID, AUTH_TOKEN, SENDGRID_KEY, Fleet, fleet_env, rapid, wait_ended
from tests.openapi_check import assert_conforms

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

N_PEOPLE = 1200


@pytest.fixture
def emulators() -> Iterator[tuple[Emulator, Emulator]]:
    with (
        start_twilio(auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as twilio,
        start_sendgrid(api_key=SENDGRID_KEY) as sendgrid,
    ):
        yield twilio, sendgrid


@pytest.fixture
def env(
    pg_url: str, moto_url: str, prefix: str, emulators: tuple[Emulator, Emulator]
) -> dict[str, str]:
    twilio, sendgrid = emulators
    return fleet_env(
        db_url=pg_url,
        moto_url=moto_url,
        prefix=prefix,
        twilio_url=twilio.url,
        sendgrid_url=sendgrid.url,
    )


def write_supporters(path: Path) -> dict[str, set[str]]:
    """A voter-file-like CSV; returns the destinations that must each get exactly one message."""
    expected: dict[str, set[str]] = {"sms": set(), "email": set()}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "external_id",
                "first_name",
                "phone",
                "email",
                "topics",
                "sms_opt_in",
                "email_opt_in",
                "postal_code",
            ]
        )
        for i in range(N_PEOPLE):
            household = i % 50 == 1  # shares the previous supporter's phone and email
            n = i - 1 if household else i
            phone = f"(412) 555-{n % 10000:04d}" if i % 97 else "555-0100"  # no area code: dropped
            email = f"Person{n}@Example.org"
            sms_ok = i % 10 != 3
            email_ok = i % 10 != 4
            w.writerow(
                [
                    f"v{i}",
                    f"Pat{i}",
                    phone,
                    email,
                    "debate-night",
                    "yes" if sms_ok else "no",
                    "1" if email_ok else "0",
                    "15213",
                ]
            )
            if sms_ok and i % 97:
                expected["sms"].add(f"+1412555{n % 10000:04d}")
            if email_ok:
                expected["email"].add(f"person{n}@example.org")
    return expected


def received(
    twilio: Emulator, sendgrid: Emulator, since: tuple[int, int]
) -> tuple[Counter[str], Counter[str]]:
    sms = Counter(m["to"] for m in twilio.recorder.messages(since[0]))
    email = Counter(m["to"].lower() for m in sendgrid.recorder.messages(since[1]))
    return sms, email


def marks(twilio: Emulator, sendgrid: Emulator) -> tuple[int, int]:
    return twilio.recorder.next_message_seq, sendgrid.recorder.next_message_seq


def test_alerts_reach_every_consenting_subscriber_exactly_once(
    env: dict[str, str],
    emulators: tuple[Emulator, Emulator],
    tmp_path: Path,
    prefix: str,
    moto_url: str,
) -> None:
    twilio, sendgrid = emulators
    rapid(env, "provision", "--topic", "debate-night")
    expected = write_supporters(tmp_path / "voters.csv")
    imported = json.loads(
        rapid(env, "supporters", "import", str(tmp_path / "voters.csv"), "--json").stdout
    )
    assert imported["inserted"] == N_PEOPLE
    # Two supporters said STOP before the blast
    stopped = sorted(expected["sms"])[:2]
    for phone in stopped:
        rapid(env, "optout", "add", phone)
        expected["sms"].discard(phone)

    kw: dict[str, Any] = {
        "endpoint_url": moto_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    sns, sqs = boto3.client("sns", **kw), boto3.client("sqs", **kw)
    topic_arn = next(
        t["TopicArn"]
        for t in sns.list_topics()["Topics"]
        if t["TopicArn"].endswith(f":{prefix}-alert-debate-night")
    )
    alert = {
        "alert_id": "e2e-1",
        "priority": "urgent",
        "sms": {"body": "Hi {{ first_name }}, watch this clip: https://ex.am/p1"},
        "email": {
            "subject": "Did you see that, {{ first_name }}?",
            "text": "Hi {{ first_name }}",
            "html": "<p>Hi {{ first_name }}</p>",
        },
    }

    fleet = Fleet(env, tmp_path)
    fleet.start("intake", "intake", "--wait-time", "1")
    fleet.start("sender", "sender", "--threads", "8")
    try:
        # When the team dry-runs first, it sees the audience and the cost, and nothing is sent
        dry = json.loads(
            rapid(
                env,
                "alert",
                "send",
                "--topic",
                "debate-night",
                "--dry-run",
                "--json",
                "--sms-body",
                "Hi {{ first_name }}, watch this clip: https://ex.am/p1",
            ).stdout
        )
        assert dry["would_send"]["sms"]["pending"] == len(expected["sms"])
        assert dry["estimate"]["sms"]["segments"] >= len(expected["sms"])
        assert dry["estimate"]["sms"]["estimated_cost"] > 0
        assert twilio.recorder.messages() == []
        # When an alert is published as an SNS envelope, and someone watches it
        start = marks(twilio, sendgrid)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "workers", "blast", "watch", "e2e-1", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        sns.publish(TopicArn=topic_arn, Message=json.dumps(alert))
        summary = wait_ended(env, "e2e-1")
        sms, email = received(twilio, sendgrid, start)
        # Then the watcher streamed progress and stopped at the final counts
        lines = [json.loads(line) for line in watcher.communicate(timeout=60)[0].splitlines()]
        assert lines[-1]["status"] == "completed"
        assert lines[-1]["channels"]["sms"]["sent"] == len(sms)
        # Then every consenting, unsuppressed destination got exactly one message per channel
        assert set(sms) == expected["sms"] and max(sms.values()) == 1
        assert set(email) == expected["email"] and max(email.values()) == 1
        # And blast show agrees with what the providers received
        c_sms, c_email = summary["counts"]["sms"], summary["counts"]["email"]
        assert summary["status"] == "completed"
        assert c_sms["sent"] == len(sms) and c_email["sent"] == len(email)
        assert c_sms["suppressed"] == 2 and c_sms["pending"] == 0 and c_email["pending"] == 0
        assert c_sms["duplicate"] > 0 and c_email["duplicate"] > 0  # households
        for c in (c_sms, c_email):
            assert c["targeted"] == sum(
                c[k]
                for k in (
                    "sent",
                    "failed",
                    "suppressed",
                    "duplicate",
                    "deferred",
                    "expired",
                    "canceled",
                    "pending",
                )
            )
        # And what the official clients sent is valid against the providers' OpenAPI files
        for recorded in [*twilio.recorder.requests()[-3:], *sendgrid.recorder.requests()[-2:]]:
            assert_conforms(recorded)
        first = twilio.recorder.messages(start[0])[0]
        assert first["body"].startswith("Acme Action: Hi Pat") and first["body"].endswith(
            "Reply STOP to opt out"
        )
        assert first["status_callback"] == "https://rr.acme.example/webhooks/twilio/status"
        # And each email, as SendGrid received it, carries one-click unsubscribe and the footer
        mail = sendgrid.recorder.messages(start[1])[0]
        assert mail["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        link = mail["headers"]["List-Unsubscribe"].strip("<>")
        assert link.startswith("https://rr.acme.example/unsubscribe/")
        text, html = mail["content"]["text/plain"], mail["content"]["text/html"]
        for part in (text, html):
            assert (
                "Acme Action" in part and "1 Main St, Pittsburgh PA 15213" in part and link in part
            )
        assert mail["custom_args"]["blast_id"] == "e2e-1"

        # When the same alert id is published again, nothing more is sent
        again = marks(twilio, sendgrid)
        sns.publish(TopicArn=topic_arn, Message=json.dumps(alert))
        # When a malformed alert follows, it lands in the DLQ with its reason ...
        sns.publish(TopicArn=topic_arn, Message="{not json")
        dlq_url = sqs.get_queue_url(QueueName=f"{prefix}-intake-dlq")["QueueUrl"]
        dead = []
        deadline = time.monotonic() + 30
        while not dead and time.monotonic() < deadline:
            dead = sqs.receive_message(
                QueueUrl=dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
            ).get("Messages", [])
        assert dead, "malformed alert never reached the DLQ"
        assert "not valid JSON" in dead[0]["MessageAttributes"]["reason"]["StringValue"]
        # ... and the next good alert, delivered raw, still goes out (first contact is over now)
        sub_arn = sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"][0][
            "SubscriptionArn"
        ]
        sns.set_subscription_attributes(
            SubscriptionArn=sub_arn, AttributeName="RawMessageDelivery", AttributeValue="true"
        )
        raw_alert = {
            "alert_id": "e2e-2",
            "topic": "debate-night",
            "sms": {"body": "Round two, {{ first_name }}"},
        }
        sns.publish(TopicArn=topic_arn, Message=json.dumps(raw_alert))
        sns.set_subscription_attributes(
            SubscriptionArn=sub_arn, AttributeName="RawMessageDelivery", AttributeValue="false"
        )
        wait_ended(env, "e2e-2")
        sms2, email2 = received(twilio, sendgrid, again)
        assert set(sms2) == expected["sms"] and max(sms2.values()) == 1  # e2e-2 only, once each
        assert not email2  # the duplicate e2e-1 added nothing
        assert all(
            not m["body"].startswith("Acme Action:") for m in twilio.recorder.messages(again[0])
        )

        # When the providers misbehave (20 % HTTP 500, 10 % 429 with Retry-After)
        for emulator in emulators:
            emulator.faults.update(error_500_rate=0.2, error_429_rate=0.1, retry_after_s=1, seed=7)
        faulty = marks(twilio, sendgrid)
        alert3 = {**alert, "alert_id": "e2e-3", "priority": "normal"}
        sns.publish(TopicArn=topic_arn, Message=json.dumps(alert3))
        summary3 = wait_ended(env, "e2e-3", timeout_s=180)
        sms3, email3 = received(twilio, sendgrid, faulty)
        # Then everyone is still served exactly once
        assert set(sms3) == expected["sms"] and max(sms3.values()) == 1
        assert set(email3) == expected["email"] and max(email3.values()) == 1
        assert summary3["counts"]["sms"]["sent"] == len(expected["sms"])
        assert (
            twilio.recorder.stats().get("500", 0) > 0 and twilio.recorder.stats().get("429", 0) > 0
        )
    finally:
        exits = fleet.stop()
    # And on SIGTERM both workers exit cleanly within 30 s
    for name, (code, seconds) in exits.items():
        assert code == 0, f"{name} exited {code}: {fleet.logs()}"
        assert seconds < 30
