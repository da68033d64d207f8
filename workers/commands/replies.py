"""``rapid replies``: what supporters texted back, and a person's review of the unclear ones."""

from __future__ import annotations

import click

from messaging.access.audit import Actor, AuditAction, Source
from messaging.compliance.replies import VERDICTS, reply_document
from workers.app import App
from workers.output import echo_json, table

pass_app = click.make_pass_decorator(App)

#: Most replies one listing prints.
MAX_LIST_LIMIT = 1000


@click.group()
def replies() -> None:
    """Inbound SMS: opt-outs in the supporters' own words, and those awaiting review."""


@replies.command("list")
@click.option(
    "--needs-review", is_flag=True, help="Only replies a person must look at (suppressed until)."
)
@click.option("--limit", type=click.IntRange(1, MAX_LIST_LIMIT), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, newest first.")
@pass_app
def replies_list(app: App, needs_review: bool, limit: int, as_json: bool) -> None:
    """Stored replies, newest first."""
    found = app.replies.replies(needs_review=needs_review, limit=limit)
    if as_json:
        echo_json([reply_document(r) for r in found])
        return
    if not found:
        click.echo("no replies awaiting review" if needs_review else "no replies")
        return
    rows = [
        (
            r.id,
            f"{r.received_at:%Y-%m-%d %H:%M}",
            r.from_number,
            r.kind + (" (review)" if r.needs_review else ""),
            r.reason,
            r.blast_id,
            r.body[:60],
        )
        for r in found
    ]
    table(None, ("id", "received", "from", "kind", "reason", "blast", "text"), rows)


@replies.command("review")
@click.argument("reply_id", type=int)
@click.option(
    "--verdict",
    type=click.Choice(VERDICTS),
    required=True,
    help="opt_out keeps the number suppressed; not_opt_out lifts what the reply suppressed.",
)
@pass_app
def replies_review(app: App, reply_id: int, verdict: str) -> None:
    """Mark reply REPLY_ID reviewed."""
    operator = app.settings.operator
    done = app.replies.review(reply_id, verdict, operator)
    if done.lifted:
        app.audit.record(
            Actor(operator, Source.CLI),
            AuditAction.OPTOUT_REMOVED,
            value=done.reply.from_number,
            detail=f"reply {reply_id} reviewed: {verdict}",
        )
    lifted = "; suppression lifted" if done.lifted else ""
    click.echo(f"reply {reply_id}: reviewed as {verdict}{lifted}")


COMMANDS = [replies]
