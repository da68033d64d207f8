"""``rapid demo``."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from workers.app import App

pass_app = click.make_pass_decorator(App)

#: The demo's SMS rate when it is served: slow enough to watch the bars move for minutes.
SERVE_SMS_RATE = 25.0


@click.command()
@click.option("--people", default=3000, show_default=True, help="Synthetic supporters to seed.")
@click.option(
    "--sms-rate",
    type=float,
    help="Fleet SMS rate (msg/s) for the demo [default: 600, or 25 with --serve].",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the final report, as JSON.")
@click.option(
    "--serve",
    is_flag=True,
    help="Also serve the dashboard (URL and login token printed) and keep it up until Ctrl-C.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port of the dashboard with --serve.",
)
@pass_app
def demo(
    app: App, people: int, sms_rate: float | None, as_json: bool, serve: bool, port: int
) -> None:
    """The whole pipeline on this machine with nothing to set up: seed, publish, watch, report."""
    from workers.demo import run_demo

    if serve and as_json:
        raise click.UsageError("--serve shows the dashboard; --json is for scripts: pick one")
    rate = sms_rate if sms_rate is not None else (SERVE_SMS_RATE if serve else 600.0)
    code = run_demo(
        Console(),
        app.settings.redis_url,
        people=people,
        sms_rate=rate,
        as_json=as_json,
        serve_port=port if serve else None,
    )
    sys.exit(code)


COMMANDS = [demo]
