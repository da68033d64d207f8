"""Flow control across processes: fleet-wide rate limits, the kill switch, pause/resume,
STOP mid-blast, and crashes — all against real Redis, PostgreSQL and moto, with several
`rapid sender` processes sharing one emulator."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import (  # noqa: F401 - emulators: the fixture
    EmulatorProcess,
    Fleet,
    aws_clients,
    emulators,
    rapid,
    seed_people,
    topic_arn,
    wait_ended,
    wait_until,
)
from tests.test_ratelimit import max_in_any_window

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


class _Twilio:
    """What the tests read from the emulator process."""

    def __init__(self, process: EmulatorProcess) -> None:
        self._emulators = process
        self.recorder = self

    def messages(self) -> list[dict[str, Any]]:
        return self._emulators.sms()


@pytest.fixture
def twilio(emulators: EmulatorProcess) -> _Twilio:  # noqa: F811 - the fixture
    return _Twilio(emulators)


@pytest.fixture
def setup(moto_url: str, prefix: str, emulators: EmulatorProcess, tmp_path: Path):  # type: ignore[no-untyped-def]  # noqa: F811 - the fixture
    """A provisioned fleet environment; returns a function that imports N people and starts."""
    fleets: list[Fleet] = []

    def make(n: int, **env_extra: str) -> tuple[dict[str, str], Fleet, list[str], Any]:
        env = emulators.env(**env_extra)
        phones = seed_people(env, tmp_path, n, "debate-night")
        fleet = Fleet(env, tmp_path)
        fleets.append(fleet)
        sns, _ = aws_clients(moto_url)
        arn = topic_arn(sns, prefix, "debate-night")

        def publish(alert: dict[str, Any]) -> float:
            published = time.time()
            sns.publish(TopicArn=arn, Message=json.dumps(alert))
            return published

        return env, fleet, phones, publish

    yield make
    for fleet in fleets:
        fleet.stop()


def test_one_sender_number_holds_its_rate_across_four_processes(setup, twilio: _Twilio) -> None:  # type: ignore[no-untyped-def]
    # Given one sender number limited to 40 msg/s and four sender processes
    rate = 40
    env, fleet, _phones, publish = setup(
        480,
        TWILIO_FROM_NUMBERS="+15005550001",
        SMS_RATE_PER_SENDER=str(rate),
        SMS_RATE_ACCOUNT="1000",
    )
    fleet.start("intake", "intake", "--wait-time", "1")
    for i in range(4):
        fleet.start(f"sender{i}", "sender", "--threads", "4", "--channels", "sms")
    # When a 480-recipient alert goes out
    publish({"alert_id": "rate-1", "priority": "urgent", "sms": {"body": "Hi {{ first_name }}"}})
    wait_ended(env, "rate-1", timeout_s=90)
    # Then at the emulator no one-second window holds more than 40 messages from that number
    times = [m["received_at"] for m in twilio.recorder.messages() if m["from"] == "+15005550001"]
    assert len(times) == 480
    assert max_in_any_window(times) <= rate
    # And the fleet achieved at least 90 % of the configured rate
    achieved = (len(times) - 1) / (max(times) - min(times))
    assert achieved >= 0.9 * rate, achieved


def test_cancel_stops_every_process_within_a_second(setup, twilio: _Twilio) -> None:  # type: ignore[no-untyped-def]
    env, fleet, _phones, publish = setup(1500, SMS_RATE_PER_SENDER="50", SMS_RATE_ACCOUNT="150")
    fleet.start("intake", "intake", "--wait-time", "1")
    for i in range(3):
        fleet.start(f"sender{i}", "sender", "--threads", "4", "--channels", "sms")
    publish({"alert_id": "cancel-1", "priority": "urgent", "sms": {"body": "Hi {{ first_name }}"}})
    wait_until(lambda: len(twilio.recorder.messages()) >= 150, "150 SMS (well under way)")
    # When an operator cancels
    rapid(env, "blast", "cancel", "cancel-1")
    returned = time.time()
    time.sleep(3)
    # Then no provider request arrives later than one second after the command returned
    last = max(m["received_at"] for m in twilio.recorder.messages())
    assert last <= returned + 1.0, last - returned
    # And every recipient not sent ends canceled, nothing pending
    summary = wait_ended(env, "cancel-1", timeout_s=30)
    sms = summary["counts"]["sms"]
    assert summary["status"] == "canceled"
    assert sms["sent"] == len(twilio.recorder.messages())
    assert sms["canceled"] == 1500 - sms["sent"] and sms["pending"] == 0


def test_pause_resume_and_a_stop_mid_blast(setup, twilio: _Twilio) -> None:  # type: ignore[no-untyped-def]
    env, fleet, phones, publish = setup(1000, SMS_RATE_PER_SENDER="50", SMS_RATE_ACCOUNT="200")
    fleet.start("intake", "intake", "--wait-time", "1")
    for i in range(2):
        fleet.start(f"sender{i}", "sender", "--threads", "4", "--channels", "sms")
    publish({"alert_id": "pause-1", "sms": {"body": "Hi {{ first_name }}"}})
    wait_until(lambda: len(twilio.recorder.messages()) >= 200, "200 SMS")
    # When paused, sending stops within a second
    rapid(env, "blast", "pause", "pause-1")
    paused = time.time()
    time.sleep(2)
    before = twilio.recorder.messages()
    assert max(m["received_at"] for m in before) <= paused + 1.0
    # And a supporter not yet texted says STOP while the blast is paused
    texted = {m["to"] for m in before}
    stopper = next(p for p in reversed(phones) if p not in texted)
    rapid(env, "optout", "add", stopper)
    # When resumed, everyone else is served exactly once, and the STOP holds
    rapid(env, "blast", "resume", "pause-1")
    summary = wait_ended(env, "pause-1", timeout_s=60)
    got = Counter(m["to"] for m in twilio.recorder.messages())
    assert max(got.values()) == 1
    assert set(got) == set(phones) - {stopper}
    assert summary["counts"]["sms"]["suppressed"] == 1 and summary["counts"]["sms"]["pending"] == 0


def test_a_stop_that_lands_while_messages_wait_for_their_slot(setup, twilio: _Twilio) -> None:  # type: ignore[no-untyped-def]
    # Given a slow blast (one number at 5 msg/s), so each batch paces its sends over seconds
    env, fleet, phones, publish = setup(
        60, TWILIO_FROM_NUMBERS="+15005550001", SMS_RATE_PER_SENDER="5", SMS_RATE_ACCOUNT="5"
    )
    fleet.start("intake", "intake", "--wait-time", "1")
    fleet.start("sender0", "sender", "--threads", "4", "--channels", "sms")
    publish({"alert_id": "stop-1", "priority": "urgent", "sms": {"body": "Hi"}})
    wait_until(lambda: len(twilio.recorder.messages()) >= 3, "the first 3 SMS")
    # When the last number of the audience says STOP (its batch was checked long ago)
    stopped_at = time.time()
    rapid(env, "optout", "add", phones[-1])
    recorded = time.time()
    # Then after one second nothing more goes to it, and the rest still goes
    summary = wait_ended(env, "stop-1", timeout_s=60)
    late = [m for m in twilio.recorder.messages() if m["to"] == phones[-1]]
    assert all(m["received_at"] <= recorded + 1.0 for m in late), (stopped_at, late)
    assert not late or late[0]["received_at"] < recorded + 1.0
    assert summary["counts"]["sms"]["sent"] + summary["counts"]["sms"]["suppressed"] == 60
