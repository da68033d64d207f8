"""Shared pieces of the benchmarks: throwaway databases, emulator processes, seeding."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, text

from messaging.store.db import create_db_engine, migrate
from messaging.store.schema import blasts

DEFAULT_PG_URL = "postgresql+psycopg://127.0.0.1:5432/postgres"
ACCOUNT_SID = "AC" + "b" * 32
AUTH_TOKEN = "bench-token"  # noqa: S105 - local emulator
SENDGRID_KEY = "SG.bench.key"
#: How often a benchmark looks whether its blast has completed, in seconds. The moment it
#: completed is read from the row, so this only bounds the wait, not the figure.
COMPLETION_POLL_S = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_pg(admin_url: str = DEFAULT_PG_URL) -> Iterator[str]:
    """A migrated PostgreSQL database that is dropped afterwards."""
    admin = create_db_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"rapid_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def emulator_process(latency_ms: int = 0) -> Iterator[dict[str, str]]:
    """Both emulators in their own process (so they are not our bottleneck); yields URLs."""
    from emulators.server import EmulatorProcess

    emulators = EmulatorProcess(
        "--auth-token", AUTH_TOKEN, "--account-sid", ACCOUNT_SID, "--api-key", SENDGRID_KEY,
        "--latency-ms", str(latency_ms), "--max-messages", "1000", "--max-requests", "100",
    )  # fmt: skip
    try:
        yield emulators.urls
    finally:
        emulators.stop()


@contextmanager
def moto_server() -> Iterator[str]:
    """A real moto server (SNS + SQS over HTTP) on a free loopback port, in its own process.

    Its own process, as the emulators have: SNS and SQS are not in our process in
    production, and a moto thread in the bench's process would share its interpreter lock
    with the publishing threads and the emulator's reader, timing them, not the fleet.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # werkzeug logs a line per request there
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1).close()  # noqa: S310
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the moto server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def far_quiet_window() -> str:
    """A quiet window nowhere near now in any US zone (benchmarks measure sending)."""
    start = datetime.now(UTC) + timedelta(hours=12)
    return f"{start:%H:%M}-{start + timedelta(minutes=1):%H:%M}"


def fleet_env(db_url: str, urls: dict[str, str], prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked `rapid` process."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RAPID_", "TWILIO_", "SENDGRID_"))
    }
    env.update(
        RAPID_PREFIX=prefix,
        DATABASE_URL=db_url,
        REDIS_URL=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBERS="+15005550001,+15005550002,+15005550003,+15005550004",
        TWILIO_API_BASE_URL=urls["twilio"],
        SENDGRID_API_KEY=SENDGRID_KEY,
        SENDGRID_API_BASE_URL=urls["sendgrid"],
        EMAIL_FROM="Bench <bench@example.org>",
        ORG_NAME="Bench",
        ORG_POSTAL_ADDRESS="1 Main St",
        QUIET_HOURS=far_quiet_window(),
        SMS_RATE_PER_SENDER="100000",
        SMS_RATE_ACCOUNT="100000",
        EMAIL_RATE="1000000",
        RAPID_LOG_FORMAT="json",
        RAPID_LOG_LEVEL="WARNING",
        RAPID_ENV="test",
        # Benchmarks measure sending; a second operator's approval is not part of it.
        RAPID_APPROVAL_THRESHOLD="off",
    )
    env.update(extra)
    return env


def seed_subscribers(db_url: str, topics: dict[str, int]) -> None:
    """Opted-in supporters with unique phones and emails; the first ``n`` follow each topic."""
    n = max(topics.values())
    engine = create_db_engine(db_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cur:
            with cur.copy(
                "COPY supporters (id, external_id, first_name, phone, email, timezone, sms_opt_in, "
                "email_opt_in, created_at, updated_at) FROM STDIN"
            ) as copy:
                for i in range(1, n + 1):
                    copy.write_row(
                        (
                            i,
                            f"b{i}",
                            f"Pat{i}",
                            f"+1412{2000000 + i:07d}",
                            f"p{i}@example.org",
                            "America/New_York",
                            True,
                            True,
                            now,
                            now,
                        )
                    )
            with cur.copy(
                "COPY subscriptions (topic, supporter_id, created_at) FROM STDIN"
            ) as copy:
                for topic, count in topics.items():
                    for i in range(1, count + 1):
                        copy.write_row((topic, i, now))
            cur.execute("SELECT setval(pg_get_serial_sequence('supporters', 'id'), %s)", (n,))
    engine.dispose()


def seconds_to_completion(
    engine: Engine, blast_id: str, started_at_s: float, timeout_s: float = 600
) -> float:
    """Wait for ``blast_id`` to complete; seconds from ``started_at_s`` (``time.time()``) to
    the moment the fleet marked it completed (the row's ``ended_at``, set by the process
    that settled its last recipient, on this host's clock).

    Polling every 10 ms to catch that moment cost a twentieth of a core on the host being
    measured (the query, and the database answering it): 9-12 µs a recipient, charged to
    the pipeline (2026-12-05). Reading the moment afterwards costs nothing and is exact.
    """
    query = select(blasts.c.status, blasts.c.ended_at).where(blasts.c.blast_id == blast_id)
    with engine.connect() as conn:
        while True:
            row = conn.execute(query).first()
            conn.rollback()
            if row is not None and row.status == "completed":
                return float(row.ended_at.timestamp()) - started_at_s
            if time.time() - started_at_s > timeout_s:
                raise RuntimeError(f"{blast_id} did not complete within {timeout_s:.0f} s")
            time.sleep(COMPLETION_POLL_S)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
