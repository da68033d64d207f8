"""``rapid audit list [--since …] [--json]``: who changed what, newest first."""

from __future__ import annotations

import click

from messaging.access.audit import parse_since
from workers.app import App
from workers.output import echo_json, table

pass_app = click.make_pass_decorator(App)


@click.group()
def audit() -> None:
    """Read the audit log (it cannot be edited)."""


@audit.command("list")
@click.option("--since", help="ISO 8601 time (UTC if no offset) or an age: 30m, 12h, 7d.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--json", "as_json", is_flag=True, help="A JSON array, newest first.")
@pass_app
def audit_list(app: App, since: str | None, limit: int, as_json: bool) -> None:
    """Audit entries, newest first."""
    entries = app.audit.entries(since=parse_since(since), limit=limit)
    if as_json:
        echo_json([e.to_dict() for e in entries])
        return
    table(
        "Audit log",
        ["at (UTC)", "who", "from", "what", "blast", "value", "detail"],
        [
            (
                f"{e.at:%Y-%m-%d %H:%M:%S}",
                e.actor,
                e.source,
                e.action,
                e.blast_id,
                e.value,
                e.detail,
            )
            for e in entries
        ],
    )


COMMANDS = [audit]
