"""``rapid demo``."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from workers.app import App

pass_app = click.make_pass_decorator(App)


@click.command()
@click.option("--people", default=3000, show_default=True, help="Synthetic supporters to seed.")
@click.option(
    "--sms-rate", default=600.0, show_default=True, help="Fleet SMS rate (msg/s) for the demo."
)
@click.option("--json", "as_json", is_flag=True, help="Print only the final report, as JSON.")
@pass_app
def demo(app: App, people: int, sms_rate: float, as_json: bool) -> None:
    """The whole pipeline on this machine with nothing to set up: seed, publish, watch, report."""
    from workers.demo import run_demo

    code = run_demo(
        Console(), app.settings.redis_url, people=people, sms_rate=sms_rate, as_json=as_json
    )
    sys.exit(code)


COMMANDS = [demo]
