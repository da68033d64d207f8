"""``rapid doctor``: passes on a healthy deployment and names each failure (contract §13).

Run as the operator would, a `rapid` process against real PostgreSQL, Redis, a moto server
and the provider emulators; the provider checks make the same authenticated reads the real
APIs answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from config.settings import load_settings
from tests.fleet import EmulatedFleet, emulated_fleet, rapid  # noqa: F401 - the fixture
from workers.app import App
from workers.commands.doctor import check_public_url, check_secret_key, check_webhook_keys

pytestmark = [pytest.mark.integration]

SECRET = "doctor-secret-key-0123456789abcdef"
WEBHOOK_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOXjta9C0386Y0oPxMPQR+ap10J5KJXkpLu7++RdWJGjuNc3U"
    "csdX6bFzuTgv/uVDdv3L3znP5knidK/wA9BTAw=="
)


def _doctor(env: dict[str, str]) -> tuple[int, dict[str, object], str]:
    out = subprocess.run(
        [sys.executable, "-m", "workers", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return out.returncode, json.loads(out.stdout) if out.stdout else {}, out.stderr


def test_doctor_passes_when_healthy_and_names_refused_credentials(
    emulated_fleet: Callable[..., EmulatedFleet],  # noqa: F811 - the fixture
    prefix: str,
    tmp_path: Path,
) -> None:
    with emulated_fleet(
        RAPID_SECRET_KEY=SECRET,
        SENDGRID_WEBHOOK_PUBLIC_KEY=WEBHOOK_KEY,
    ) as (_, _, env):
        rapid(env, "provision", "--topic", "debate-night")
        # Given a provisioned deployment with good credentials: every check passes
        code, report, stderr = _doctor(env)
        assert code == 0, (report, stderr)
        checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
        assert set(checks) == {
            "database",
            "redis",
            "sqs",
            "sns",
            "twilio",
            "sendgrid",
            "public_base_url",
            "secret_key",
            "webhook_keys",
        }
        assert all(c["ok"] for c in checks.values()), checks
        assert "migrations current" in checks["database"]["detail"]
        assert "1 alert topic" in checks["sns"]["detail"]
        # When a new user has the wrong Twilio auth token and the wrong SendGrid key
        bad = {**env, "TWILIO_AUTH_TOKEN": "wrong-token", "SENDGRID_API_KEY": "SG.wrong"}
        code, report, _ = _doctor(bad)
        # Then doctor exits 1 and names exactly those two, with the providers' reason
        assert code == 1
        failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}  # type: ignore[attr-defined]
        assert set(failed) == {"twilio", "sendgrid"}, failed
        assert "HTTP 401" in failed["twilio"] and "HTTP 401" in failed["sendgrid"]
        # And the plain output is one line per check, FAIL first on the failed ones
        plain = subprocess.run(
            [sys.executable, "-m", "workers", "doctor"],
            env=bad,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        lines = plain.stdout.splitlines()
        assert plain.returncode == 1 and len(lines) == 9
        assert sorted(line.split()[1] for line in lines if line.startswith("FAIL")) == [
            "sendgrid",
            "twilio",
        ]
        assert "Traceback" not in plain.stderr
        # And a database without the schema, Redis down and no queues are each named
        empty = {
            **env,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
            "REDIS_URL": "redis://127.0.0.1:1/0",
            "RAPID_PREFIX": prefix + "x",
        }
        code, report, _ = _doctor(empty)
        failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}  # type: ignore[attr-defined]
        assert code == 1 and {"database", "redis", "sqs"} <= set(failed), failed
        assert "rapid provision" in failed["database"] and "rapid provision" in failed["sqs"]


def _app(**environ: str) -> App:
    return App(load_settings(environ))


def test_public_url_secret_and_webhook_checks() -> None:
    # In production: http or loopback fails; a demo or test run may use either
    assert not check_public_url(_app(PUBLIC_BASE_URL="http://rr.acme.example")).ok
    assert not check_public_url(_app(PUBLIC_BASE_URL="https://127.0.0.1:8000")).ok
    assert check_public_url(_app(PUBLIC_BASE_URL="https://rr.acme.example")).ok
    assert check_public_url(_app(PUBLIC_BASE_URL="http://127.0.0.1:8000", RAPID_ENV="demo")).ok
    # The secret key: unset (outside demo/test) or another secret fail (settings refuse a
    # short one at start)
    assert not check_secret_key(_app()).ok
    assert check_secret_key(_app(RAPID_ENV="test")).ok
    reused = "SG.the-sendgrid-key-is-not-a-secret-key-0123"
    assert not check_secret_key(
        _app(RAPID_SECRET_KEY=reused, SENDGRID_API_KEY=reused, RAPID_ENV="test")
    ).ok
    assert check_secret_key(_app(RAPID_SECRET_KEY=SECRET)).ok
    # SendGrid without its webhook key: events would be refused
    https = {"PUBLIC_BASE_URL": "https://rr.acme.example", "SENDGRID_API_KEY": "SG.k"}
    assert not check_webhook_keys(_app(**https)).ok
    assert check_webhook_keys(_app(**https, SENDGRID_WEBHOOK_PUBLIC_KEY=WEBHOOK_KEY)).ok
