"""The demo's closing report: the ledger's counts beside what the provider emulators received.

Consistent means no destination received a message twice, every ``sent`` row reached an
emulator, and nothing is pending; the exit code says so.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from config.settings import QuietHours, Settings
from workers.demo_seed import Seeded


def waiting_lines(waiting: list[Any], quiet_hours: QuietHours) -> list[str]:
    """Why deferred texts wait, zone by zone, and when each zone's go out."""
    if not waiting:
        return []
    total = sum(z.rows for z in waiting)
    lines = [
        f"{total:,} texts wait because it is night where their recipients live "
        f"(no SMS inside QUIET_HOURS {quiet_hours} local time); the scheduler sends each "
        "zone's when its quiet hours end:"
    ]
    for z in waiting:
        when = f"{z.first_release:%H:%M} UTC" if z.first_release else "when the window ends"
        lines.append(f"  {z.timezone or 'unknown zone'}: {z.rows:,} from {when}")
    return lines


def print_report(
    console: Console,
    summary: dict[str, Any],
    twilio: Any,
    sendgrid: Any,
    seeded: Seeded,
    elapsed_s: float,
    as_json: bool,
    waiting: list[Any] | None = None,
    quiet_hours: QuietHours | None = None,
) -> int:
    """Print the report (a table, or one JSON object with ``as_json``); 0 when consistent."""
    sms_to = Counter(m["to"] for m in twilio.recorder.messages())
    email_to = Counter(m["to"].lower() for m in sendgrid.recorder.messages())
    dup_sends = {
        "sms": sum(n - 1 for n in sms_to.values()),
        "email": sum(n - 1 for n in email_to.values()),
    }
    received = {"sms": len(sms_to), "email": len(email_to)}
    audience = summary.get("audience", {})
    table = Table(title=f"Blast {summary['blast_id']}: {summary['status']} in {elapsed_s:.1f} s")
    table.add_column("")
    channels = list(summary["counts"])
    for channel in channels:
        table.add_column(channel, justify="right")
    rows = [
        ("targeted (consent + address)", "targeted"),
        ("sent", "sent"),
        ("suppressed (opted out)", "suppressed"),
        ("deferred for quiet hours", "deferred"),
        ("failed", "failed"),
        ("household duplicates merged", "duplicate"),
        ("pending", "pending"),
    ]
    for label, key in rows:
        table.add_row(label, *(f"{summary['counts'][c][key]:,}" for c in channels))
    table.add_row(
        "no consent (not targeted)",
        *(f"{audience.get(c, {}).get('no_consent', 0):,}" for c in channels),
    )
    table.add_row("received by the provider emulator", *(f"{received[c]:,}" for c in channels))
    table.add_row("[bold]duplicate sends", *(f"[bold]{dup_sends[c]}" for c in channels))
    console.print()
    console.print(table)
    consistent = all(
        dup_sends[c] == 0
        and summary["counts"][c]["sent"] == received[c]
        and summary["counts"][c]["pending"] == 0
        for c in channels
    )
    if as_json:
        document = {
            "blast": summary,
            "received": received,
            "duplicate_sends": dup_sends,
            "elapsed_s": round(elapsed_s, 2),
            "seeded": {
                "people": seeded.people,
                "invalid_phones": seeded.bad_numbers,
                "twilio_invalid": len(seeded.twilio_invalid),
                "opted_out": len(seeded.opted_out),
            },
            "consistent": consistent,
            "deferred_by_zone": [
                {
                    "timezone": z.timezone,
                    "rows": z.rows,
                    "first_release": z.first_release.isoformat() if z.first_release else None,
                }
                for z in waiting or []
            ],
        }
        Console(highlight=False, soft_wrap=True).print_json(json.dumps(document))
        return 0 if consistent else 1
    if consistent:
        console.print(
            "[green]Every consenting supporter was messaged at most once; the ledger matches "
            "what the providers received.[/]"
        )
        for line in waiting_lines(waiting or [], quiet_hours or Settings().quiet_hours):
            console.print(line)
        return 0
    console.print("[red]The ledger and the providers disagree: this is a bug, please report it.")
    return 1
