"""``rapid demo``: the whole pipeline on one machine with nothing to set up (contract §10).

Everything here is the production code, wired differently: an in-process SNS/SQS emulator
(moto), the project's Twilio and SendGrid emulators, SQLite, and the Redis at REDIS_URL or
an embedded stand-in. The intake, sender and scheduler loops run on threads of this process
instead of separate processes.
"""

from __future__ import annotations

import csv
import random
import secrets
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from config.settings import QuietHours, Settings
from messaging.errors import ConfigError, ServiceUnavailableError

#: Synthetic supporters, spread over US area codes (and so time zones).
AREA_CODES = {
    "212": "New York",
    "412": "Pittsburgh",
    "305": "Miami",
    "312": "Chicago",
    "214": "Dallas",
    "303": "Denver",
    "602": "Phoenix",
    "206": "Seattle",
    "415": "San Francisco",
    "907": "Anchorage",
    "808": "Honolulu",
}
ACCOUNT_SID = "AC" + "d" * 32
AUTH_TOKEN = "demo-auth-token"  # noqa: S105 - talks to the local emulator only
SENDGRID_KEY = "SG.demo.key"
FROM_NUMBERS = ("+15005550001", "+15005550002", "+15005550003", "+15005550004")
#: The intake records a published blast within a second or two; a stuck one fails the demo.
BLAST_RECORDED_WITHIN_S = 60.0
#: Zones the demo's supporters live in: the US ones, and enough others that it is daytime
#: in some of them at any hour (UTC-10 to UTC+10, no gap wider than ~4 h).
DEMO_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Africa/Lagos",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
)
#: Every n-th supporter lives where it is quiet now, so the report shows deferral at work.
QUIET_EVERY = 10
#: A zone counts as awake when texts may go now and for this long (the demo's whole run).
AWAKE_FOR = timedelta(hours=1)


@dataclass
class Seeded:
    """What the demo data should produce, to check the report against."""

    people: int
    bad_numbers: int
    twilio_invalid: set[str]
    opted_out: set[str]


def _redis(console: Console, url: str) -> tuple[Any, str]:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
        return client, f"Redis at {url}"
    except redis.exceptions.RedisError:
        import fakeredis

        console.print(f"[yellow]No Redis answers at {url}: using an embedded stand-in (fakeredis).")
        return fakeredis.FakeRedis(
            server=fakeredis.FakeServer()
        ), "embedded Redis stand-in (fakeredis)"


def zones_now(now: datetime, quiet_hours: QuietHours) -> tuple[list[str], list[str]]:
    """``(awake, asleep)``: the demo zones where texts may go now (and for the next
    :data:`AWAKE_FOR`), and those inside their quiet hours."""
    from messaging.quiet_hours import next_allowed

    awake = [
        z
        for z in DEMO_ZONES
        if next_allowed(now, z, quiet_hours) is None
        and next_allowed(now + AWAKE_FOR, z, quiet_hours) is None
    ]
    asleep = [z for z in DEMO_ZONES if next_allowed(now, z, quiet_hours) is not None]
    return awake, asleep


def seed_zone(i: int, awake: list[str], asleep: list[str]) -> str:
    """Supporter ``i``'s time zone: mostly where it is day now, every
    :data:`QUIET_EVERY`-th where it is night (when it is night somewhere)."""
    if asleep and i % QUIET_EVERY == QUIET_EVERY - 1:
        return asleep[i % len(asleep)]
    pool = awake or asleep
    return pool[i % len(pool)]


def seed_csv(
    path: Path,
    people: int,
    rng: random.Random,
    *,
    now: datetime | None = None,
    quiet_hours: QuietHours | None = None,
) -> Seeded:
    """A voter-file-like CSV: consent gaps, households, typos, bad numbers.

    Time zones are chosen relative to ``now``: most supporters live where texts may go now,
    a tenth where it is night, so the demo sends SMS at any hour of the day (with zones
    derived from US phone numbers, every text waited at US night).
    """
    codes = list(AREA_CODES)
    awake, asleep = zones_now(now or datetime.now(UTC), quiet_hours or Settings().quiet_hours)
    invalid, twilio_invalid = 0, set()
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "external_id",
                "first_name",
                "last_name",
                "phone",
                "email",
                "topics",
                "sms_opt_in",
                "email_opt_in",
                "tags",
                "timezone",
            ]
        )
        for i in range(people):
            code = codes[i % len(codes)]
            phone = f"({code}) 555-{i:04d}"
            if i % 211 == 5:
                phone, invalid = "555-01", invalid + 1  # too short: the import drops it
            if i % 97 == 11:
                twilio_invalid.add(f"+1{code}555{i:04d}")  # Twilio will answer 21211
            if i % 40 == 7 and i > 0:  # a household member sharing the previous phone
                phone = f"({codes[(i - 1) % len(codes)]}) 555-{i - 1:04d}"
            w.writerow(
                [
                    f"demo-{i}",
                    rng.choice(["Ana", "Ben", "Chloé", "Dev", "Eli", "Fatima"]),
                    rng.choice(["Nguyen", "Smith", "García", "Okafor"]),
                    phone,
                    f"supporter{i}@example.org",
                    "debate-night",
                    "no" if i % 9 == 4 else "yes",
                    "no" if i % 8 == 3 else "yes",
                    "volunteer" if i % 3 else "donor",
                    seed_zone(i, awake, asleep),
                ]
            )
    return Seeded(people, invalid, twilio_invalid, set())


def run_demo(
    console: Console,
    redis_url: str,
    people: int = 3000,
    sms_rate: float = 600.0,
    as_json: bool = False,
    serve_port: int | None = None,
) -> int:
    """Run one blast end to end; returns the process exit code.

    With ``as_json`` the narration and the progress bar are left out and the final report
    is one JSON object on stdout (for CI and scripts). With ``serve_port`` the dashboard is
    served on that port from before the blast starts (its URL and a login token printed)
    and stays up after the report, the scheduler still releasing deferred texts, until
    Ctrl-C.
    """
    if as_json:
        console = Console(quiet=True)
    try:
        import fakeredis  # noqa: F401 - only imported here to say early that it is missing
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise ConfigError(
            f"rapid demo needs the demo extra ({exc.name} is missing): "
            "pip install 'rapid-response[demo]'"
        ) from exc

    from emulators.server import start_sendgrid, start_twilio
    from messaging.services import publish_alert
    from messaging.supporters.csv_import import import_csv
    from workers.app import App
    from workers.commands.blast import build_alert
    from workers.commands.run import run_intake, run_scheduler, run_sender
    from workers.commands.setup import provision_all
    from workers.watch import watch

    started = time.monotonic()
    rng = random.Random(2026)
    workdir = Path(tempfile.mkdtemp(prefix="rapid-demo-"))
    client, redis_desc = _redis(console, redis_url)
    port = _free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    twilio = start_twilio(auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
    sendgrid = start_sendgrid(api_key=SENDGRID_KEY)
    console.print(f"[bold]Rapid Response demo[/] in {workdir}")
    console.print(f"  system of record: SQLite · queues: moto SNS/SQS on :{port} · {redis_desc}")
    console.print(f"  Twilio emulator {twilio.url} · SendGrid emulator {sendgrid.url}")

    settings = Settings(
        prefix=f"demo-{secrets.token_hex(3)}",
        database_url=f"sqlite:///{workdir / 'rapid.db'}",
        redis_url=redis_url,
        aws_endpoint_url=f"http://127.0.0.1:{port}",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_numbers=FROM_NUMBERS,
        twilio_api_base_url=twilio.url,
        sendgrid_api_key=SENDGRID_KEY,
        sendgrid_api_base_url=sendgrid.url,
        email_from="Rapid Response Demo <alerts@example.org>",
        org_name="Demo Campaign",
        org_postal_address="1 Main St, Pittsburgh PA 15213",
        sms_rate_per_sender=sms_rate / len(FROM_NUMBERS),
        sms_rate_account=sms_rate,
        email_rate=5000,
        log_format="console",
        log_level="WARNING",
        # Throwaway unsubscribe key and http links on 127.0.0.1: fine for a demo only.
        environment="demo",
    )
    from config.logging import configure_logging

    configure_logging(settings)  # warnings only: the progress bar is the show
    app = App(settings, redis_client=client)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    dashboard: Any = None
    try:
        provision_all(app, ("debate-night",))
        seeded = seed_csv(workdir / "supporters.csv", people, rng, quiet_hours=settings.quiet_hours)
        report = import_csv(workdir / "supporters.csv", app.stores.supporters)
        console.print(
            f"  imported {report.inserted} supporters "
            f"({report.fields_rejected} fields rejected, see {report.rejects_path})"
        )
        for i in range(0, people, 150):  # some supporters texted STOP earlier
            phone = f"+1{list(AREA_CODES)[i % len(AREA_CODES)]}555{i:04d}"
            app.suppressions.add("sms", phone, reason="stop", source="demo")
            seeded.opted_out.add(phone)
        twilio.faults.update(
            latency_ms=40, number_errors=dict.fromkeys(seeded.twilio_invalid, 21211)
        )

        for name, target, kwargs in (
            ("intake", run_intake, {"wait_time_s": 1}),
            ("sender", run_sender, {"threads": 8, "channels": ("sms", "email")}),
            ("scheduler", run_scheduler, {"interval_s": 1.0}),
        ):
            thread = threading.Thread(
                target=target, args=(app, stop), kwargs=kwargs, name=name, daemon=True
            )
            thread.start()
            threads.append(thread)

        if serve_port is not None:
            dashboard = _serve(app, serve_port, console)

        document = build_alert(
            topic="debate-night",
            alert_id=None,
            priority="urgent",
            sms_body="Hi {{ first_name }}! Did you catch that answer on debate night? Watch: https://ex.am/p1",
            email_subject="{{ first_name }}, did you see that?",
            email_text="Hi {{ first_name }},\n\nWatch the clip: https://ex.am/p1",
            email_html=(
                "<p>Hi {{ first_name }},</p><p><a href='https://ex.am/p1'>Watch the clip</a></p>"
            ),
            send_by=None,
            audience_json=None,
            test_recipients=(),
            dry_run=False,
        )
        publish_alert(app.stores.topics, app.publisher, "debate-night", document)
        blast_id = document["alert_id"]
        console.print(f"  published alert [bold]{blast_id}[/] to debate-night\n")
        recorded_by = time.monotonic() + BLAST_RECORDED_WITHIN_S
        while app.blasts.get(blast_id) is None:
            if time.monotonic() > recorded_by:
                raise ServiceUnavailableError(
                    f"the intake did not record blast {blast_id} within "
                    f"{BLAST_RECORDED_WITHIN_S:.0f} s"
                )
            time.sleep(0.1)
        final = watch(
            app.blasts,
            blast_id,
            until_idle=True,
            # Room for the slow rate of a served demo: people / rate, twice over.
            timeout_s=120 + 2 * people / sms_rate,
            console=console,
            live=app.control.progress.read,
        )
        from messaging.store.sql.breakdown import SqlBreakdown

        waiting = SqlBreakdown(app.engine).breakdown(blast_id).deferred
        code = _report(
            console,
            final,
            twilio,
            sendgrid,
            seeded,
            time.monotonic() - started,
            as_json,
            waiting,
            settings.quiet_hours,
        )
        if dashboard is not None:
            url = f"{dashboard.url}/dashboard"
            _until_interrupted(
                lambda: console.print(
                    f"\nThe dashboard stays up at [bold]{url}[/] (the scheduler sends deferred "
                    "texts as their quiet hours end). Ctrl-C to stop."
                )
            )
        return code
    finally:
        stop.set()
        if dashboard is not None:
            dashboard.stop()
        for thread in threads:
            thread.join(timeout=30)
        app.close()
        twilio.stop()
        sendgrid.stop()
        moto.stop()


def _serve(app: Any, port: int, console: Console) -> Any:
    """``rapid web`` on ``port`` in this process, and an admin operator to log in with."""
    from emulators.server import start_in_thread
    from messaging.operators import Role
    from workers.web.app import create_app

    try:
        server = start_in_thread(create_app(app), port=port)
    except OSError as exc:
        raise ConfigError(
            f"--port {port}: cannot serve the dashboard there ({exc.strerror or exc}); "
            "pick another with --port"
        ) from None
    _, token = app.operators.add(f"demo-{secrets.token_hex(2)}", Role.ADMIN, created_by="demo")
    console.print(
        f"\n  [bold]War room:[/] open {server.url}/dashboard and log in with the operator token"
        f"\n  [bold]{token}[/]\n"
    )
    return server


def _until_interrupted(announce: Callable[[], None]) -> None:
    """Announce, then block until Ctrl-C (SIGINT) or SIGTERM, which end the demo normally.

    The handlers go in before the announcement: a Ctrl-C right after it must not land
    between the two as a KeyboardInterrupt.
    """
    stopped = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda _signum, _frame: stopped.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        announce()
        while not stopped.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _waiting_lines(waiting: list[Any], quiet_hours: QuietHours) -> list[str]:
    """Why deferred texts wait, zone by zone, and when each zone's go out."""
    if not waiting:
        return []
    total = sum(z.rows for z in waiting)
    lines = [
        f"{total:,} texts wait because it is night where their recipients live "
        f"(no SMS inside QUIET_HOURS {quiet_hours} local time); the scheduler sends each "
        "zone's when its quiet hours end:"
    ]
    for z in waiting:
        when = f"{z.first_release:%H:%M} UTC" if z.first_release else "when the window ends"
        lines.append(f"  {z.timezone or 'unknown zone'}: {z.rows:,} from {when}")
    return lines


def _report(
    console: Console,
    summary: dict[str, Any],
    twilio: Any,
    sendgrid: Any,
    seeded: Seeded,
    elapsed_s: float,
    as_json: bool,
    waiting: list[Any] | None = None,
    quiet_hours: QuietHours | None = None,
) -> int:
    sms_to = Counter(m["to"] for m in twilio.recorder.messages())
    email_to = Counter(m["to"].lower() for m in sendgrid.recorder.messages())
    dup_sends = {
        "sms": sum(n - 1 for n in sms_to.values()),
        "email": sum(n - 1 for n in email_to.values()),
    }
    received = {"sms": len(sms_to), "email": len(email_to)}
    audience = summary.get("audience", {})
    table = Table(title=f"Blast {summary['blast_id']}: {summary['status']} in {elapsed_s:.1f} s")
    table.add_column("")
    channels = list(summary["counts"])
    for channel in channels:
        table.add_column(channel, justify="right")
    rows = [
        ("targeted (consent + address)", "targeted"),
        ("sent", "sent"),
        ("suppressed (opted out)", "suppressed"),
        ("deferred for quiet hours", "deferred"),
        ("failed", "failed"),
        ("household duplicates merged", "duplicate"),
        ("pending", "pending"),
    ]
    for label, key in rows:
        table.add_row(label, *(f"{summary['counts'][c][key]:,}" for c in channels))
    table.add_row(
        "no consent (not targeted)",
        *(f"{audience.get(c, {}).get('no_consent', 0):,}" for c in channels),
    )
    table.add_row("received by the provider emulator", *(f"{received[c]:,}" for c in channels))
    table.add_row("[bold]duplicate sends", *(f"[bold]{dup_sends[c]}" for c in channels))
    console.print()
    console.print(table)
    consistent = all(
        dup_sends[c] == 0
        and summary["counts"][c]["sent"] == received[c]
        and summary["counts"][c]["pending"] == 0
        for c in channels
    )
    if as_json:
        import json

        report = {
            "blast": summary,
            "received": received,
            "duplicate_sends": dup_sends,
            "elapsed_s": round(elapsed_s, 2),
            "seeded": {
                "people": seeded.people,
                "invalid_phones": seeded.bad_numbers,
                "twilio_invalid": len(seeded.twilio_invalid),
                "opted_out": len(seeded.opted_out),
            },
            "consistent": consistent,
            "deferred_by_zone": [
                {
                    "timezone": z.timezone,
                    "rows": z.rows,
                    "first_release": z.first_release.isoformat() if z.first_release else None,
                }
                for z in waiting or []
            ],
        }
        Console(highlight=False, soft_wrap=True).print_json(json.dumps(report))
        return 0 if consistent else 1
    if consistent:
        console.print(
            "[green]Every consenting supporter was messaged at most once; the ledger matches "
            "what the providers received.[/]"
        )
        for line in _waiting_lines(waiting or [], quiet_hours or Settings().quiet_hours):
            console.print(line)
        return 0
    console.print("[red]The ledger and the providers disagree: this is a bug, please report it.")
    return 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
