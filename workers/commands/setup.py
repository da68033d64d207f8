"""Commands that set the fleet up: provision, topics, supporters, optout."""

from __future__ import annotations

from pathlib import Path

import click

from config.settings import QuietHours, parse_quiet_hours
from messaging.access.audit import Actor, AuditAction, Source
from messaging.compliance.suppression import classify
from workers.app import App
from workers.output import echo_json, table

pass_app = click.make_pass_decorator(App)


def _actor(app: App) -> Actor:
    return Actor(app.settings.operator, Source.CLI)


def provision_all(app: App, extra_topics: tuple[str, ...] = ()) -> dict[str, object]:
    """Migrate the database, then create or update every AWS resource; returns the report."""
    from messaging.blasts.services import provision as provision_fleet
    from messaging.store.db import migrate
    from queues.provision import AwsResources, Provisioner

    resources = AwsResources(Provisioner(app.names, app.sns, app.sqs))
    provision_fleet(lambda: migrate(app.engine), app.stores.topics, resources, extra_topics)
    return resources.report.to_dict()


@click.command()
@click.option("--topic", "topics", multiple=True, help="Also create this alert topic.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def provision(app: App, topics: tuple[str, ...], as_json: bool) -> None:
    """Create or update queues, topics, subscriptions and the database schema (idempotent)."""
    report = provision_all(app, topics)
    if as_json:
        echo_json(report)
        return
    created, updated = report["created"], report["updated"]
    assert isinstance(created, list) and isinstance(updated, list)
    click.echo(f"intake queue: {report['intake_queue_url']}")
    click.echo(f"dead-letter queue: {report['intake_dlq_url']}")
    for line in created:
        click.echo(f"created {line}")
    for line in updated:
        click.echo(f"updated {line}")
    if not created and not updated:
        click.echo("everything was already provisioned; nothing changed")


@click.group()
def topics() -> None:
    """Manage alert topics."""


#: ``--quiet-hours default``: the topic goes back to the fleet's ``QUIET_HOURS``.
FLEET_WINDOW = "default"


def _quiet_window(
    _ctx: click.Context, _param: click.Parameter, raw: str | None
) -> QuietHours | str | None:
    """``--quiet-hours``: a window, :data:`FLEET_WINDOW`, or None when not given."""
    if raw is None:
        return None
    if raw.strip().lower() == FLEET_WINDOW:
        return FLEET_WINDOW
    try:
        return parse_quiet_hours(raw)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@topics.command("create")
@click.argument("name")
@click.option(
    "--quiet-hours",
    callback=_quiet_window,
    metavar="HH:MM-HH:MM",
    help="This topic's own SMS quiet window, in each subscriber's local time (e.g. "
    "23:00-08:00 for live alerts on debate night); 'default' goes back to QUIET_HOURS. "
    "Unset: the topic keeps the window it has.",
)
@pass_app
def topics_create(app: App, name: str, quiet_hours: QuietHours | str | None) -> None:
    """Create alert topic NAME (SNS topic subscribed to the intake queue)."""
    from messaging.content.topics import validate_topic_name

    validate_topic_name(name)
    report = provision_all(app, (name,))
    arns = report["topics"]
    assert isinstance(arns, dict)
    if quiet_hours is not None:
        own = quiet_hours if isinstance(quiet_hours, QuietHours) else None
        app.stores.topics.set_quiet_hours(name, own)
    window = app.stores.topics.quiet_hours(name)
    click.echo(f"{name}\t{arns[name]}\tquiet hours {window or app.settings.quiet_hours}")


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_app
def topics_list(app: App, as_json: bool) -> None:
    """List alert topics with their subscriber counts."""

    items = app.stores.topics.list()
    if as_json:
        echo_json(
            [
                {
                    "name": t.name,
                    "sns_topic_arn": t.sns_topic_arn,
                    "subscribers": t.subscribers,
                    "quiet_hours": str(t.quiet_hours or app.settings.quiet_hours),
                }
                for t in items
            ]
        )
        return
    table(
        "Alert topics",
        ["topic", "subscribers", "quiet hours", "SNS topic"],
        [
            (
                t.name,
                t.subscribers,
                str(t.quiet_hours or app.settings.quiet_hours),
                t.sns_topic_arn or "(not provisioned: run rapid provision)",
            )
            for t in items
        ],
    )


@click.group()
def supporters() -> None:
    """Manage supporters."""


@supporters.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_app
def supporters_import(app: App, file: Path, as_json: bool) -> None:
    """Upsert supporters from FILE (CSV, by external_id); rejects go to FILE.rejects.csv."""
    from messaging.errors import InputError
    from messaging.store.db import check_connection
    from messaging.supporters.csv_import import import_csv

    if not file.exists():
        raise InputError(f"{file}: no such file")
    check_connection(app.engine)
    report = import_csv(file, app.stores.supporters)
    app.audit.record(
        _actor(app),
        AuditAction.SUPPORTERS_IMPORTED,
        value=file.name,
        detail={"inserted": report.inserted, "updated": report.updated},
    )
    if as_json:
        echo_json(report.to_dict())
        return
    click.echo(
        f"{report.rows_read} rows read: {report.inserted} inserted, {report.updated} updated, "
        f"{report.rows_rejected} rows rejected, {report.fields_rejected} fields rejected "
        f"({report.elapsed_s:.1f} s)"
    )
    if report.rejects_path:
        click.echo(f"rejects with reasons: {report.rejects_path}")
    if report.new_topics:
        click.echo(
            f"new topics {', '.join(sorted(report.new_topics))}: "
            "run `rapid provision` to create them"
        )


@click.group()
def optout() -> None:
    """Manage the suppression list (phone or email)."""


@optout.command("add")
@click.argument("value")
@click.option("--reason", default="operator", show_default=True)
@pass_app
def optout_add(app: App, value: str, reason: str) -> None:
    """Suppress VALUE (a phone number or an email address)."""
    channel, key = classify(value)
    added = app.suppressions.add(channel, key, reason=reason, source="cli")
    if added:
        app.audit.record(_actor(app), AuditAction.OPTOUT_ADDED, value=key, detail=reason)
    click.echo(f"{channel} {key}: {'suppressed' if added else 'was already suppressed'}")


@optout.command("remove")
@click.argument("value")
@pass_app
def optout_remove(app: App, value: str) -> None:
    """Lift the suppression of VALUE."""
    channel, key = classify(value)
    removed = app.suppressions.remove(channel, key, source="cli")
    if removed:
        app.audit.record(_actor(app), AuditAction.OPTOUT_REMOVED, value=key)
    click.echo(f"{channel} {key}: {'no longer suppressed' if removed else 'was not suppressed'}")


@optout.command("check")
@click.argument("value")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_app
def optout_check(app: App, value: str, as_json: bool) -> None:
    """Tell whether VALUE is suppressed."""
    channel, key = classify(value)
    found = app.suppressions.lookup(channel, key)
    if as_json:
        echo_json(
            {
                "channel": channel,
                "value": key,
                "suppressed": found is not None,
                "reason": found.reason if found else None,
                "source": found.source if found else None,
                "since": found.created_at if found else None,
            }
        )
        return
    if found is None:
        click.echo(f"{channel} {key}: not suppressed")
    else:
        click.echo(
            f"{channel} {key}: suppressed since {found.created_at:%Y-%m-%d %H:%M} "
            f"({found.reason}, via {found.source})"
        )


COMMANDS = [provision, topics, supporters, optout]
