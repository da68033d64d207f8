"""``rapid demo``: the whole pipeline on one machine with nothing to set up (contract §10).

Everything here is the production code, wired differently: an in-process SNS/SQS emulator
(moto), the project's Twilio and SendGrid emulators, SQLite, and the Redis at REDIS_URL or
an embedded stand-in. The intake, sender and scheduler loops run on threads of this process
instead of separate processes. The supporters it seeds are :mod:`workers.demo_seed`; its
closing report is :mod:`workers.demo_report`.
"""

from __future__ import annotations

import random
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from config.settings import Settings
from messaging.errors import ConfigError, ServiceUnavailableError
from workers.demo_report import print_report
from workers.demo_seed import AREA_CODES, QUIET_EVERY, seed_csv

# Still importable from here (callers written before the split).
__all__ = ["QUIET_EVERY", "run_demo", "seed_csv"]

ACCOUNT_SID = "AC" + "d" * 32
AUTH_TOKEN = "demo-auth-token"  # noqa: S105 - talks to the local emulator only
SENDGRID_KEY = "SG.demo.key"
FROM_NUMBERS = ("+15005550001", "+15005550002", "+15005550003", "+15005550004")
#: The intake records a published blast within a second or two; a stuck one fails the demo.
BLAST_RECORDED_WITHIN_S = 60.0


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
    from messaging.blasts.services import publish_alert
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
        code = print_report(
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
    from messaging.access.operators import Role
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
