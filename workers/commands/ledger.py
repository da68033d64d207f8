"""``rapid ledger``: upkeep of the delivery ledger (issue #21).

``prune`` deletes the ledger rows of blasts that ended long ago, a few thousand rows per
transaction, so senders and webhooks writing the same table never wait behind it. The
blasts and their counts (``blast_counts``) stay: ``rapid blast show`` reports a pruned blast
as before; only its per-recipient rows (``blast export``) are gone.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import click

from workers.app import App
from workers.output import echo_json

pass_app = click.make_pass_decorator(App)

#: Ledger rows deleted per transaction: small enough that each holds its locks for
#: milliseconds, large enough that a million rows take a few hundred round trips.
PRUNE_BATCH_ROWS = 5_000

_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
_DURATION = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")


def parse_age(text: str) -> timedelta:
    """``90d``, ``36h`` or ``30m`` as a timedelta; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an age such as 90d, 36h or 30m")
    return int(match.group(1)) * _UNITS[match.group(2)]


class _Age(click.ParamType):
    name = "age"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_age(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group()
def ledger() -> None:
    """The delivery ledger's upkeep."""


@ledger.command("prune")
@click.option(
    "--older-than",
    "age",
    type=_Age(),
    required=True,
    help="Prune blasts that ended longer ago than this (90d, 36h, 30m).",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(1, 100_000),
    default=PRUNE_BATCH_ROWS,
    show_default=True,
    help="Rows deleted per transaction.",
)
@click.option(
    "--pause-ms",
    type=click.IntRange(0, 60_000),
    default=0,
    show_default=True,
    help="Sleep between batches, to leave the database room under load.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_app
def prune(app: App, age: timedelta, batch_rows: int, pause_ms: int, as_json: bool) -> None:
    """Delete the ledger rows of blasts that ended before now minus --older-than.

    Their blast summaries and counts stay."""
    cutoff = datetime.now(UTC) - age
    started = time.monotonic()
    deleted = batches = 0
    while (n := app.stores.retention.prune_batch(cutoff, batch_rows)) > 0:
        deleted += n
        batches += 1
        if pause_ms:
            time.sleep(pause_ms / 1000)
    seconds = round(time.monotonic() - started, 3)
    if as_json:
        echo_json(
            {
                "ended_before": cutoff,
                "rows_deleted": deleted,
                "batches": batches,
                "seconds": seconds,
            }
        )
        return
    click.echo(
        f"pruned {deleted} ledger rows of blasts ended before {cutoff:%Y-%m-%d %H:%M} UTC "
        f"in {batches} batches ({seconds} s)"
    )


COMMANDS = [ledger]
