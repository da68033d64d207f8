"""``rapid sender --processes N``: N sender processes under one supervisor (issue #21)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.fleet import (  # noqa: F401 - emulators: the fixture
    EmulatorProcess,
    Fleet,
    aws_clients,
    emulators,
    seed_people,
    topic_arn,
    wait_ended,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def _children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def test_sender_processes_share_the_work_restart_and_stop_together(
    emulators: EmulatorProcess,  # noqa: F811 - the fixture
    moto_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    env = emulators.env(SMS_RATE_ACCOUNT="400", SMS_RATE_PER_SENDER="200")
    phones = seed_people(env, tmp_path, 600, "procs")
    fleet = Fleet(env, tmp_path)
    fleet.start("intake", "intake", "--wait-time", "1")
    beat = tmp_path / "sender.beat"
    supervisor = fleet.start(
        "sender",
        *("sender", "--processes", "2", "--threads", "2", "--channels", "sms"),
        *("--heartbeat-file", str(beat)),
    )
    sns, _ = aws_clients(moto_url)
    try:
        # Given a sender started with two processes
        wait_until(lambda: len(_children(supervisor.pid)) == 2, "two sender processes", 30)
        # Then the supervisor's heartbeat follows its children's
        wait_until(beat.exists, "the supervisor's heartbeat", 30)
        # When one child dies, it is replaced
        victim = min(_children(supervisor.pid))
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(_children(supervisor.pid) - {victim}) == 2, "a replacement process", 30
        )
        # And a blast is sent by them, each recipient once
        sns.publish(
            TopicArn=topic_arn(sns, prefix, "procs"),
            Message=json.dumps({"alert_id": "procs-1", "sms": {"body": "Hi"}}),
        )
        summary = wait_ended(env, "procs-1", timeout_s=120)
        assert summary["counts"]["sms"]["sent"] == 600
        assert Counter(m["to"] for m in emulators.sms()) == dict.fromkeys(phones, 1)
        # When the supervisor gets SIGTERM, it and its children are gone within 30 s
        children = _children(supervisor.pid)
        started = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=35) == 0
        assert time.monotonic() - started < 30
        assert not any(Path(f"/proc/{c}").exists() for c in children)
    finally:
        fleet.stop()
