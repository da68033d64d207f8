"""`rapid demo` runs end to end and its report agrees with the data it seeded."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REDIS_TEST_URL, free_port
from tests.fleet import unconfigured_environ

PEOPLE = 1200


@pytest.mark.e2e
@pytest.mark.parametrize(
    "redis_url",
    [REDIS_TEST_URL, f"redis://127.0.0.1:{free_port()}/0"],
    ids=["redis", "embedded-stand-in"],
)
def test_demo_report_is_consistent(redis_url: str) -> None:
    # Given a machine with nothing configured (only REDIS_URL, once pointing nowhere)
    env = unconfigured_environ()
    env["REDIS_URL"] = redis_url
    # When the demo runs
    result = subprocess.run(
        [sys.executable, "-m", "workers", "demo", "--people", str(PEOPLE), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    # Then nobody got two messages, the ledger matches the emulators, and nothing is left pending
    assert report["consistent"] is True
    assert report["duplicate_sends"] == {"sms": 0, "email": 0}
    sms, email = report["blast"]["counts"]["sms"], report["blast"]["counts"]["email"]
    assert report["received"] == {"sms": sms["sent"], "email": email["sent"]}
    for c in (sms, email):
        assert c["pending"] == 0
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
            )
        )
    # And the audience figures are those of the seeded data (no SMS consent: every 9th from 4)
    audience = report["blast"]["audience"]
    assert audience["audience"] == PEOPLE
    assert audience["sms"]["no_consent"] == len([i for i in range(PEOPLE) if i % 9 == 4])
    assert audience["email"]["no_consent"] == len([i for i in range(PEOPLE) if i % 8 == 3])
    assert sms["suppressed"] > 0 and sms["duplicate"] > 0
    assert sms["failed"] <= report["seeded"]["twilio_invalid"]
    assert email["sent"] == email["targeted"]
