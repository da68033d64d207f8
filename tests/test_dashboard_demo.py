"""`rapid demo --serve`: the demo blast live in the war room, and SMS sent at any hour."""

from __future__ import annotations

import csv
import random
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from datetime import time as clock
from pathlib import Path

import httpx
import pytest

from config.settings import QuietHours
from messaging.compliance.quiet_hours import next_allowed
from tests.conftest import REDIS_TEST_URL, free_port
from tests.fleet import unconfigured_environ
from workers.demo import QUIET_EVERY, seed_csv

QUIET = QuietHours(clock(21, 0), clock(8, 0))


@pytest.mark.parametrize("hour_utc", range(0, 24, 3))
def test_most_demo_supporters_may_be_texted_at_any_hour(tmp_path: Path, hour_utc: int) -> None:
    # Given any hour of the day (07:00 UTC is 2 a.m. in New York: every US zone is quiet)
    now = datetime(2026, 12, 3, hour_utc, 0, tzinfo=UTC)
    # When the demo seeds its supporters
    seed_csv(tmp_path / "s.csv", 500, random.Random(1), now=now, quiet_hours=QUIET)
    with (tmp_path / "s.csv").open() as f:
        zones = [row["timezone"] for row in csv.DictReader(f)]
    # Then nine in ten live where texts may go now, and the rest where it is night
    quiet = [z for z in zones if next_allowed(now, z, QUIET) is not None]
    assert len(quiet) == len(zones) // QUIET_EVERY
    assert all(z for z in zones)


def _demo_serve(people: int, port: int) -> list[str]:
    """The command line of `rapid demo --serve` for ``people`` supporters on ``port``."""
    serve = ["demo", "--serve", "--people", str(people), "--port", str(port)]
    return [sys.executable, "-m", "workers", *serve]


@pytest.mark.e2e
def test_demo_serve_shows_the_blast_until_ctrl_c() -> None:
    # Given a machine with nothing configured but Redis
    env = unconfigured_environ()
    env.update(REDIS_URL=REDIS_TEST_URL, COLUMNS="200")
    port = free_port()
    # When `rapid demo --serve` runs
    proc = subprocess.Popen(
        _demo_serve(people=300, port=port),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        out = ""
        deadline = time.monotonic() + 120
        while "log in with the operator token" not in out or "rr_" not in out:
            assert time.monotonic() < deadline and proc.poll() is None, out
            out += proc.stdout.readline()
        out += proc.stdout.readline()
        # Then it prints the dashboard's URL and a token that logs in
        url = re.search(r"open (http://127\.0\.0\.1:\d+)/dashboard", out)
        token = re.search(r"(rr_[A-Za-z0-9_-]+)", out)
        assert url and token, out
        with httpx.Client(base_url=url.group(1), trust_env=False, timeout=30) as web:
            page = web.get("/dashboard/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf
            web.post("/dashboard/login", data={"csrf": csrf.group(1), "token": token.group(1)})
            # And the demo blast shows up there while it runs
            wait_until = time.monotonic() + 60
            while "debate-night-" not in (listing := web.get("/dashboard").text):
                assert time.monotonic() < wait_until, listing[:2000]
                time.sleep(0.5)
        # And after the report it keeps serving until Ctrl-C, then exits 0
        while "Ctrl-C to stop" not in out:
            assert time.monotonic() < deadline + 120 and proc.poll() is None, out
            out += proc.stdout.readline()
        assert "duplicate sends" in out
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.e2e
def test_demo_serve_on_a_busy_port_says_so_in_one_line() -> None:
    import socket

    env = unconfigured_environ()
    env["REDIS_URL"] = REDIS_TEST_URL
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            _demo_serve(people=50, port=port),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 1
    assert f"--port {port}: cannot serve the dashboard there" in result.stderr
    assert "Traceback" not in result.stderr
