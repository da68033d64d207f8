"""Who may use the fleet: ``rapid operators add NAME --role R`` / ``list`` / ``revoke NAME``."""

from __future__ import annotations

import click

from messaging.access.audit import Actor, AuditAction, Source
from messaging.access.operators import Role, parse_role
from workers.app import App
from workers.output import echo_json, table

pass_app = click.make_pass_decorator(App)


def cli_actor(app: App) -> Actor:
    """Who a CLI command acts as: ``RAPID_OPERATOR`` (default: the OS user)."""
    return Actor(app.settings.operator, Source.CLI)


@click.group()
def operators() -> None:
    """Manage operators and their personal API tokens."""


@operators.command("add")
@click.argument("name")
@click.option(
    "--role", required=True, type=click.Choice([r.value for r in Role]), help="What they may do."
)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def operators_add(app: App, name: str, role: str, as_json: bool) -> None:
    """Add operator NAME and print their token (shown this once; only a hash is kept)."""
    actor = cli_actor(app)
    operator, token = app.operators.add(name, parse_role(role), created_by=actor.name)
    app.audit.record(actor, AuditAction.OPERATOR_ADDED, value=operator.name, detail=role)
    if as_json:
        echo_json({"name": operator.name, "role": operator.role.value, "token": token})
        return
    click.echo(f"operator {operator.name} ({operator.role}) added; their token, shown once:")
    click.echo(token)


@operators.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def operators_list(app: App, as_json: bool) -> None:
    """Every operator with their role; revoked ones too."""
    items = app.operators.list()
    if as_json:
        echo_json(
            [
                {
                    "name": o.name,
                    "role": o.role.value,
                    "created_at": o.created_at,
                    "created_by": o.created_by,
                    "revoked_at": o.revoked_at,
                }
                for o in items
            ]
        )
        return
    table(
        "Operators",
        ["name", "role", "added (UTC)", "by", "revoked (UTC)"],
        [
            (
                o.name,
                o.role,
                f"{o.created_at:%Y-%m-%d %H:%M}",
                o.created_by,
                f"{o.revoked_at:%Y-%m-%d %H:%M}" if o.revoked_at else "",
            )
            for o in items
        ],
    )


@operators.command("revoke")
@click.argument("name")
@pass_app
def operators_revoke(app: App, name: str) -> None:
    """Revoke NAME's token at once (the audit log keeps their name)."""
    app.operators.revoke(name)
    app.audit.record(cli_actor(app), AuditAction.OPERATOR_REVOKED, value=name.strip().lower())
    click.echo(f"operator {name.strip().lower()} revoked")


COMMANDS = [operators]
