"""Running the fleet as the Procfile does, for end-to-end tests: processes, env, waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import REDIS_TEST_URL

if TYPE_CHECKING:
    from emulators.server import Emulator
    from workers.app import App

ACCOUNT_SID = "AC" + "a" * 32
AUTH_TOKEN = "e2e-auth-token-0123456789"
SENDGRID_KEY = "SG.e2e-key.0123456789abcdef"
FROM_NUMBERS = ("+15005550001", "+15005550002", "+15005550003", "+15005550004")


def far_quiet_window() -> str:
    """A one-minute quiet window far from now in every US zone: quiet hours have their own
    tests; here they must not defer anyone, whatever the time of the run. The window's local
    time is the current UTC time + 12 h, which in zones at UTC-4 … UTC-10 lies 16-22 h ahead."""
    start = datetime.now(UTC) + timedelta(hours=12)
    return f"{start:%H:%M}-{start + timedelta(minutes=1):%H:%M}"


def unconfigured_environ() -> dict[str, str]:
    """This process's environment without any of the fleet's settings (``RAPID_``, ``AWS_``,
    ``TWILIO_``, ``SENDGRID_``): a `rapid` process started with it sees a bare machine."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAPID_", "AWS_", "TWILIO_", "SENDGRID_"))
    }


def fleet_env(
    *, db_url: str, moto_url: str, prefix: str, twilio_url: str, sendgrid_url: str, **extra: str
) -> dict[str, str]:
    """The environment of a `rapid` process wired to the test's services and emulators."""
    base = unconfigured_environ()
    base.update(
        RAPID_PREFIX=prefix,
        DATABASE_URL=db_url,
        REDIS_URL=REDIS_TEST_URL,
        AWS_ENDPOINT_URL=moto_url,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBERS=",".join(FROM_NUMBERS),
        TWILIO_API_BASE_URL=twilio_url,
        SENDGRID_API_KEY=SENDGRID_KEY,
        SENDGRID_API_BASE_URL=sendgrid_url,
        EMAIL_FROM="Acme Action <news@acme.example>",
        ORG_NAME="Acme Action",
        ORG_POSTAL_ADDRESS="1 Main St, Pittsburgh PA 15213",
        PUBLIC_BASE_URL="https://rr.acme.example",
        SMS_RATE_PER_SENDER="400",
        SMS_RATE_ACCOUNT="1600",
        EMAIL_RATE="5000",
        QUIET_HOURS=far_quiet_window(),
        RAPID_LOG_FORMAT="json",
        RAPID_LOG_LEVEL="WARNING",
        RAPID_ENV="test",
        # Blasts here measure the pipeline, not the two-person rule (tests/test_approval.py).
        RAPID_APPROVAL_THRESHOLD="off",
    )
    base.update(extra)
    return base


def rapid(
    env: dict[str, str], *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a `rapid` command to completion, as an operator would; fail the test with its
    stderr if it fails, unless ``check`` is off (a test of the failure itself)."""
    result = subprocess.run(
        [sys.executable, "-m", "workers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"rapid {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result


@contextmanager
def intake_worker(app: App) -> Iterator[tuple[str, str]]:
    """The intake worker of ``app`` in a thread, on its provisioned queue; yields the intake
    queue's and its dead-letter queue's URLs. Stopped (and joined) on exit."""
    import threading

    from queues.sqs_consumer import SqsConsumer

    intake_url = app.sqs.get_queue_url(QueueName=app.names.intake_queue)["QueueUrl"]
    dlq_url = app.sqs.get_queue_url(QueueName=app.names.intake_dlq)["QueueUrl"]
    stop = threading.Event()
    consumer = SqsConsumer(
        app.sqs, intake_url, dlq_url, app.intake.handle, wait_time_s=1, stop=stop
    )
    worker = threading.Thread(target=consumer.run, kwargs={"concurrency": 1})
    worker.start()
    try:
        yield intake_url, dlq_url
    finally:
        stop.set()
        worker.join(30)


class Fleet:
    """`rapid` worker processes, started and stopped like a process manager would."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._starts = 0

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``rapid ARGS`` as process ``name``."""
        self._starts += 1
        log = (self.log_dir / f"{name}.{self._starts}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL a process (a crash, an instance lost without warning)."""
        self.procs[name].kill()
        self.procs[name].wait(timeout=10)

    def stop(self) -> dict[str, tuple[int, float]]:
        """SIGTERM everyone; returns exit code and seconds to exit per process."""
        started = time.monotonic()
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        return {n: (p.wait(timeout=40), time.monotonic() - started) for n, p in self.procs.items()}

    def logs(self) -> str:
        """Every log written so far (for failure messages)."""
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.log_dir.glob("*.log")))


def blast_summary(env: dict[str, str], blast_id: str) -> dict[str, Any] | None:
    """`rapid blast show --json`, or None while the blast does not exist yet."""
    out = subprocess.run(
        [sys.executable, "-m", "workers", "blast", "show", blast_id, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return dict(json.loads(out.stdout)) if out.returncode == 0 else None


def wait_until(
    condition: Callable[[], bool], what: str, timeout_s: float = 60, every_s: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s`` (a stuck
    fleet fails the test in a minute with a reason, not at pytest's global timeout)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def wait_ended(env: dict[str, str], blast_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """Poll until the blast has ended; returns its final summary."""
    deadline = time.monotonic() + timeout_s
    summary = None
    while time.monotonic() < deadline:
        summary = blast_summary(env, blast_id)
        if summary and summary["status"] in ("completed", "canceled", "expired"):
            return summary
        time.sleep(0.5)
    raise AssertionError(f"blast {blast_id} did not end in {timeout_s}s: {summary}")


def moto_client(service: str, moto_url: str) -> Any:
    """A boto3 client of ``service`` on the moto server (us-east-1, dummy credentials)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def aws_clients(moto_url: str) -> tuple[Any, Any]:
    """(sns, sqs) boto3 clients on the moto server."""
    return moto_client("sns", moto_url), moto_client("sqs", moto_url)


def topic_arn(sns: Any, prefix: str, topic: str) -> str:
    """The SNS ARN of an alert topic."""
    return str(
        next(
            t["TopicArn"]
            for t in sns.list_topics()["Topics"]
            if t["TopicArn"].endswith(f":{prefix}-alert-{topic}")
        )
    )


def write_people(path: Path, n: int, topic: str, *, area: str = "412") -> list[str]:
    """A CSV of ``n`` opted-in supporters with distinct phones; returns the E.164 numbers."""
    import csv

    phones = []
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["external_id", "first_name", "phone", "email", "topics", "sms_opt_in", "email_opt_in"]
        )
        for i in range(n):
            phone = f"+1{area}{2000000 + i:07d}"
            phones.append(phone)
            w.writerow([f"p{i}", f"Pat{i}", phone, f"p{i}@example.org", topic, "yes", "yes"])
    return phones


def seed_people(
    env: dict[str, str], tmp_path: Path, n: int, topic: str, *, timeout: float = 120
) -> list[str]:
    """Provision ``topic`` and import ``n`` supporters subscribed to it; their phones."""
    rapid(env, "provision", "--topic", topic)
    phones = write_people(tmp_path / "people.csv", n, topic)
    rapid(env, "supporters", "import", str(tmp_path / "people.csv"), timeout=timeout)
    return phones


def start_pipeline(env: dict[str, str], log_dir: Path) -> Fleet:
    """An intake and a four-thread sender, started as processes."""
    fleet = Fleet(env, log_dir)
    fleet.start("intake", "intake", "--wait-time", "1")
    fleet.start("sender", "sender", "--threads", "4")
    return fleet


def emulated_env(
    twilio: Emulator, sendgrid: Emulator, *, db_url: str, moto_url: str, prefix: str, **extra: str
) -> dict[str, str]:
    """:func:`fleet_env` wired to Twilio and SendGrid emulators running in this process."""
    urls = {"twilio_url": twilio.url, "sendgrid_url": sendgrid.url}
    return fleet_env(db_url=db_url, moto_url=moto_url, prefix=prefix, **urls, **extra)


class EmulatedFleet:
    """``with EmulatedFleet(...) as (twilio, sendgrid, env)``: the Twilio and SendGrid
    emulators in this process, and the environment of a `rapid` process wired to them."""

    def __init__(self, *, db_url: str, moto_url: str, prefix: str, **extra: str) -> None:
        self._services = {"db_url": db_url, "moto_url": moto_url, "prefix": prefix}
        self._extra = extra
        self._stack = ExitStack()

    def __enter__(self) -> tuple[Emulator, Emulator, dict[str, str]]:
        from emulators.server import start_sendgrid, start_twilio

        twilio = self._stack.enter_context(
            start_twilio(auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
        )
        sendgrid = self._stack.enter_context(start_sendgrid(api_key=SENDGRID_KEY))
        return twilio, sendgrid, emulated_env(twilio, sendgrid, **self._services, **self._extra)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


class EmulatorProcess:
    """The Twilio and SendGrid emulators in a process of their own (as in production, the
    provider is not on our CPU), read through their HTTP control routes."""

    def __init__(self, **services: str) -> None:
        """``services``: ``db_url``, ``moto_url`` and ``prefix`` for :meth:`env`."""
        from emulators.client import EmulatorClient
        from emulators.server import EmulatorProcess as Process

        self._services = services

        self._process = Process(
            "--auth-token", AUTH_TOKEN, "--account-sid", ACCOUNT_SID, "--api-key", SENDGRID_KEY
        )
        self.twilio_url = self._process.urls["twilio"]
        self.sendgrid_url = self._process.urls["sendgrid"]
        self.twilio = EmulatorClient(self.twilio_url)

    def fleet_env(self, *, db_url: str, moto_url: str, prefix: str, **extra: str) -> dict[str, str]:
        """:func:`fleet_env` wired to these emulators."""
        urls = {"twilio_url": self.twilio_url, "sendgrid_url": self.sendgrid_url}
        return fleet_env(db_url=db_url, moto_url=moto_url, prefix=prefix, **urls, **extra)

    def env(self, **extra: str) -> dict[str, str]:
        """:meth:`fleet_env` on the services this process was made with (the
        :func:`emulators` fixture's: the test's database, moto and prefix)."""
        return self.fleet_env(**self._services, **extra)

    def sms(self) -> list[dict[str, Any]]:
        """Every SMS the Twilio emulator accepted."""
        return self.twilio.messages()[0]

    def close(self) -> None:
        self.twilio.close()
        self._process.stop()


# --- fixtures (a test module imports the ones it uses) -------------------------------------


@pytest.fixture
def emulated_fleet(pg_url: str, moto_url: str, prefix: str) -> Callable[..., EmulatedFleet]:
    """``with emulated_fleet(**env) as (twilio, sendgrid, env)``: :class:`EmulatedFleet` on this
    test's database, moto and prefix."""
    return partial(EmulatedFleet, db_url=pg_url, moto_url=moto_url, prefix=prefix)


@pytest.fixture
def emulators(pg_url: str, moto_url: str, prefix: str) -> Iterator[EmulatorProcess]:
    """The emulators in a process of their own for one test; ``emulators.env(**extra)`` wires
    a `rapid` process to them and to this test's database, moto and prefix."""
    process = EmulatorProcess(db_url=pg_url, moto_url=moto_url, prefix=prefix)
    yield process
    process.close()
