"""``rapid dlq list|replay``: dead letters of the intake queue and the send lanes."""

from __future__ import annotations

import click

from messaging.errors import InputError
from queues.dead_letters import DeadLetter, IntakeDeadLetters, LaneDeadLetters
from workers.app import App
from workers.output import echo_json, table

pass_app = click.make_pass_decorator(App)


def _sources(app: App) -> tuple[IntakeDeadLetters, LaneDeadLetters]:
    from workers.commands.run import queue_urls

    intake_url, dlq_url = queue_urls(app)
    return IntakeDeadLetters(app.sqs, dlq_url, intake_url), LaneDeadLetters(
        app.redis, app.names, app.lanes
    )


@click.group()
def dlq() -> None:
    """Inspect and replay dead letters (malformed alerts, send work that kept failing)."""


@dlq.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def dlq_list(app: App, limit: int, as_json: bool) -> None:
    """Dead letters with their reason, age and a masked preview."""
    intake, lanes = _sources(app)
    items: list[DeadLetter] = [*intake.list(limit), *lanes.list(limit)]
    if as_json:
        echo_json([d.to_dict() for d in items])
        return
    if not items:
        click.echo("no dead letters")
        return
    table(
        "Dead letters",
        ["id", "source", "age", "reason", "preview"],
        [(d.id, d.source, f"{d.age_s / 60:.0f} min", d.reason, d.preview) for d in items],
    )


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@pass_app
def dlq_replay(app: App, ids: tuple[str, ...], replay_all: bool) -> None:
    """Put dead letters back where they came from (the intake queue, or their send lane)."""
    if not ids and not replay_all:
        raise click.UsageError("give dead-letter IDs (see `rapid dlq list`) or --all")
    wanted = None if replay_all else set(ids)
    intake, lanes = _sources(app)
    moved = intake.replay(wanted) + lanes.replay(wanted)
    click.echo(f"replayed {moved} dead letter{'s' if moved != 1 else ''}")
    if wanted is not None and moved < len(wanted):
        raise InputError(f"{len(wanted) - moved} of the given IDs were not found")


COMMANDS = [dlq]
