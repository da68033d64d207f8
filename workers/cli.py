"""The ``rapid`` console command (contract §6).

Exit codes: 0 success, 1 an expected failure (bad input, a service down: one line on
stderr, no traceback), 2 a usage error (click's own).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from messaging.errors import RapidError
from workers.app import App


class RapidGroup(click.Group):
    """Turns expected failures into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RapidError as exc:
            _fail(str(exc))
        except Exception as exc:
            message = _service_error_message(exc)
            if message is None:
                raise
            _fail(message)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _service_error_message(exc: Exception) -> str | None:
    """One readable line for a dependency that is down or refuses us, else None."""
    import botocore.exceptions as bce
    import redis.exceptions
    import sqlalchemy.exc

    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectTimeoutError):
        return f"AWS endpoint is not answering: {exc}"
    if isinstance(exc, bce.NoCredentialsError):
        return (
            "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, bce.ClientError):
        return f"AWS refused the request: {exc}"
    if isinstance(exc, redis.exceptions.ConnectionError):
        return f"Redis is not answering: {exc}"
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        first = str(exc.orig or exc).strip().splitlines()[0]
        return f"database error: {first}"
    return None


@click.group(cls=RapidGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rapid-response", prog_name="rapid")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Rapid Response: publish alerts and fan them out as SMS and email, fast and exactly once."""
    app = App.from_environ()
    from config.logging import configure_logging

    configure_logging(app.settings)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from workers.commands import (
        audit,
        blast,
        demo,
        dlq,
        doctor,
        ledger,
        operators,
        replies,
        run,
        setup,
        web,
    )

    for module in (setup, blast, run, demo, web, dlq, replies, operators, audit, doctor, ledger):
        for command in module.COMMANDS:
            cli.add_command(command)


def main() -> None:
    """Console entry point."""
    _register()
    try:
        cli.main(prog_name="rapid")
    except RapidError as exc:  # raised before a command runs, e.g. a bad setting
        _fail(str(exc))
