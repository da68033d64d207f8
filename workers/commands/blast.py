"""Publishing alerts and steering blasts: alert send, blast list|show|pause|resume|cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from messaging.blasts.lifecycle import COUNT_KEYS
from messaging.blasts.services import act_on_blast, publish_alert
from messaging.content.alert import new_alert_id, parse_alert
from messaging.errors import InputError
from workers.app import App
from workers.output import echo_json, table

pass_app = click.make_pass_decorator(App)


def build_alert(
    *,
    topic: str,
    alert_id: str | None,
    sms_body: str | None,
    email_subject: str | None,
    email_text: str | None,
    email_html: str | None,
    priority: str,
    send_by: str | None,
    audience_json: str | None,
    test_recipients: tuple[str, ...],
    dry_run: bool,
    requested_by: str | None = None,
    quiet_hours_fallback: str | None = None,
    send_at: str | None = None,
    media_url: str | None = None,
    variant_sms_bodies: tuple[str, ...] = (),
    track_email_links: bool = False,
    pick_winner_after: str | None = None,
    pick_winner_share: float | None = None,
) -> dict[str, Any]:
    """The alert document of ``rapid alert send`` (validated before anything is published)."""
    from messaging.compliance.suppression import classify

    document: dict[str, Any] = {
        "alert_id": alert_id or new_alert_id(topic),
        "priority": priority,
        "topic": topic,
    }
    if requested_by:
        document["requested_by"] = requested_by
        document["requested_via"] = "cli"
    if media_url and not (sms_body or variant_sms_bodies):
        raise InputError("--media-url needs --sms-body: an MMS is the SMS part with an image")
    if variant_sms_bodies:
        # A/B test: the variants carry the SMS; an --sms-body is not sent alongside them.
        document["variants"] = [
            {"sms": {"body": b, **({"media_url": media_url} if media_url else {})}}
            for b in variant_sms_bodies
        ]
        sms_body = None
    if pick_winner_after or pick_winner_share is not None:
        if not pick_winner_after:
            raise InputError("--pick-winner-share needs --pick-winner-after (e.g. PT10M)")
        pick: dict[str, Any] = {"after": pick_winner_after, "by": "clicks"}
        if pick_winner_share is not None:
            pick["share"] = pick_winner_share
        document["pick_winner"] = pick
    if sms_body:
        document["sms"] = {"body": sms_body}
        if media_url:
            document["sms"]["media_url"] = media_url
    if email_subject or email_text or email_html:
        document["email"] = {
            k: v
            for k, v in (("subject", email_subject), ("text", email_text), ("html", email_html))
            if v
        }
        if track_email_links:
            document["email"]["track_links"] = True
    if send_by:
        document["send_by"] = send_by
    if send_at:
        document["send_at"] = send_at
    if audience_json:
        try:
            document["audience"] = json.loads(audience_json)
        except ValueError as exc:
            raise InputError(f"--audience-json is not JSON: {exc}") from None
    if test_recipients:
        document["test_recipients"] = [classify(v)[1] for v in test_recipients]
    if dry_run:
        document["dry_run"] = True
    if quiet_hours_fallback:
        document["quiet_hours_fallback"] = quiet_hours_fallback
    parse_alert(json.dumps(document), fallback_id=document["alert_id"], topic=topic)
    return document


@click.group()
def alert() -> None:
    """Publish alerts."""


@alert.command("send")
@click.option("--topic", required=True, help="Alert topic to publish to.")
@click.option("--alert-id", help="Idempotency key (default: generated). Re-sending it is a no-op.")
@click.option("--sms-body", help="SMS template (Jinja2 over supporter fields).")
@click.option("--email-subject")
@click.option("--email-text")
@click.option("--email-html")
@click.option(
    "--priority",
    type=click.Choice(["urgent", "normal", "bulk"]),
    default="normal",
    show_default=True,
)
@click.option("--send-by", help="ISO 8601 deadline, e.g. 2026-11-27T03:00:00Z.")
@click.option("--audience-json", help='Filter, e.g. \'{"states": ["PA"], "tags": ["volunteer"]}\'.')
@click.option(
    "--test-recipient", "test_recipients", multiple=True, help="Send only to this phone/email."
)
@click.option(
    "--quiet-hours-fallback",
    type=click.Choice(["email"]),
    help="Whoever quiet hours would hold gets the email part now instead of a late text.",
)
@click.option(
    "--send-at", help="Schedule it: ISO 8601, e.g. 2026-11-27T02:00:00Z (cancelable until then)."
)
@click.option("--media-url", help="An https image: the SMS goes as an MMS.")
@click.option(
    "--variant-sms-body",
    "variant_sms_bodies",
    multiple=True,
    help="A/B test: one SMS body per variant (2-5); recipients are split evenly.",
)
@click.option(
    "--track-email-links", is_flag=True, help="The email's links become tracked short links too."
)
@click.option(
    "--pick-winner-after",
    help="A/B test on a share first; after this (ISO 8601, e.g. PT10M) the most clicked "
    "variant goes to the rest.",
)
@click.option("--pick-winner-share", type=float, help="The share tested first (default 0.2).")
@click.option("--dry-run", is_flag=True, help="Count the audience, send nothing.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def alert_send(
    app: App,
    topic: str,
    alert_id: str | None,
    sms_body: str | None,
    email_subject: str | None,
    email_text: str | None,
    email_html: str | None,
    priority: str,
    send_by: str | None,
    audience_json: str | None,
    test_recipients: tuple[str, ...],
    quiet_hours_fallback: str | None,
    send_at: str | None,
    media_url: str | None,
    variant_sms_bodies: tuple[str, ...],
    track_email_links: bool,
    pick_winner_after: str | None,
    pick_winner_share: float | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Publish an alert to TOPIC; prints the blast id."""
    document = build_alert(
        topic=topic,
        alert_id=alert_id,
        sms_body=sms_body,
        email_subject=email_subject,
        email_text=email_text,
        email_html=email_html,
        priority=priority,
        send_by=send_by,
        audience_json=audience_json,
        test_recipients=test_recipients,
        dry_run=dry_run,
        requested_by=app.settings.operator,
        quiet_hours_fallback=quiet_hours_fallback,
        send_at=send_at,
        media_url=media_url,
        variant_sms_bodies=variant_sms_bodies,
        track_email_links=track_email_links,
        pick_winner_after=pick_winner_after,
        pick_winner_share=pick_winner_share,
    )
    message_id = publish_alert(app.stores.topics, app.publisher, topic, document)
    blast_id = document["alert_id"]
    if dry_run:
        _print_dry_run(app, blast_id, as_json)
    elif as_json:
        echo_json({"blast_id": blast_id, "sns_message_id": message_id})
    else:
        click.echo(blast_id)


#: How long `blast watch` waits for a just-published blast to appear.
WATCH_WAIT_FOR_BLAST_S = 30.0
#: How long `alert send --dry-run` waits for the intake to count the audience.
DRY_RUN_WAIT_S = 60.0


def _print_dry_run(app: App, blast_id: str, as_json: bool) -> None:
    """Wait for the intake to evaluate the dry run, then print its report."""
    import time

    deadline = time.monotonic() + DRY_RUN_WAIT_S
    record = app.blasts.get(blast_id)
    while (record is None or record.expanded_at is None) and time.monotonic() < deadline:
        time.sleep(0.25)
        record = app.blasts.get(blast_id)
    if record is None or record.expanded_at is None:
        raise InputError(
            f"dry run {blast_id} published, but no intake worker evaluated it within "
            f"{DRY_RUN_WAIT_S:.0f} s (is `rapid intake` running?)"
        )
    if as_json:
        echo_json({"blast_id": blast_id, **record.stats})
        return
    click.echo(f"dry run {blast_id}: {record.stats.get('audience', 0)} subscribers in the audience")
    estimate = record.stats.get("estimate", {})
    rows = []
    for channel, would in record.stats.get("would_send", {}).items():
        e = estimate.get(channel, {})
        audience = record.stats.get(channel, {})
        rows.append(
            (
                channel,
                would.get("pending", 0),
                audience.get("no_consent", 0),
                would.get("suppressed", 0),
                would.get("duplicate", 0),
                would.get("capped", 0),
                e.get("deferred_for_quiet_hours", "-"),
                e.get("fallback_for_quiet_hours", "-"),
                e.get("expired_for_quiet_hours", "-"),
                e.get("segments", "-"),
                f"${e.get('estimated_cost', 0):,.2f}",
                f"{e.get('eta_s', 0):,.0f} s",
            )
        )
    table(
        None,
        [
            "channel",
            "would send",
            "no consent",
            "suppressed",
            "households",
            "capped",
            "quiet: wait",
            "quiet: email",
            "quiet: expire",
            "segments",
            "cost",
            "ETA",
        ],
        rows,
    )


@click.group()
def blast() -> None:
    """Inspect and steer blasts."""


def _show_one(app: App, blast_id: str) -> dict[str, Any]:
    record = app.blasts.get(blast_id)
    if record is None:
        raise InputError(f"no blast {blast_id!r}")
    return app.blasts.summaries([record], app.control.progress.read)[0]


@blast.command("list")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def blast_list(app: App, limit: int, as_json: bool) -> None:
    """Recent blasts, newest first."""
    items = app.blasts.summaries(app.blasts.recent(limit), app.control.progress.read)
    if as_json:
        echo_json(items)
        return
    rows = []
    for b in items:
        for channel, c in b["counts"].items():
            rows.append(
                (
                    b["blast_id"],
                    b["topic"],
                    b["status"],
                    channel,
                    c["targeted"],
                    c["sent"],
                    c["failed"],
                    c["pending"],
                    b["created_at"][:19],
                )
            )
    table(
        "Blasts",
        [
            "blast",
            "topic",
            "status",
            "channel",
            "targeted",
            "sent",
            "failed",
            "pending",
            "created (UTC)",
        ],
        rows,
    )


@blast.command("show")
@click.argument("blast_id")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def blast_show(app: App, blast_id: str, as_json: bool) -> None:
    """State and counts of one blast."""
    summary = _show_one(app, blast_id)
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"{summary['blast_id']}  topic={summary['topic']}  status={summary['status']}  "
        f"priority={summary['priority']}  created={summary['created_at'][:19]}"
    )
    keys = COUNT_KEYS
    table(
        None,
        ["channel", *keys],
        [(ch, *(c[k] for k in keys)) for ch, c in summary["counts"].items()],
    )
    if summary.get("variants"):  # an A/B test: the same counts per variant
        table(
            None,
            ["variant", "channel", *keys],
            [
                (v, ch, *(c[k] for k in keys))
                for v, by_channel in summary["variants"].items()
                for ch, c in by_channel.items()
            ],
        )
    approval = (summary.get("audience") or {}).get("approval")
    if summary["status"] == "awaiting_approval" and approval:
        _print_approval(summary, approval)


def _print_approval(summary: dict[str, Any], approval: dict[str, Any]) -> None:
    """What the second operator checks before `rapid blast approve`."""
    requester = summary.get("requested_by") or "sns"
    click.echo(
        f"awaiting approval: over RAPID_APPROVAL_THRESHOLD={approval.get('threshold')}; "
        f"requested by {requester}; another operator approves with "
        f"`rapid blast approve {summary['blast_id']}` or rejects with `rapid blast reject`"
    )
    for channel, e in approval.get("estimate", {}).items():
        segments = f", {e['segments']:,} segments" if "segments" in e else ""
        click.echo(
            f"  {channel}: {e.get('recipients', 0):,} recipients{segments}, "
            f"${e.get('estimated_cost', 0):,.2f}, ETA {e.get('eta_s', 0):,.0f} s"
        )
    for sample in approval.get("sample", []):
        text = sample.get("body") or sample.get("subject") or sample.get("error", "")
        click.echo(f"  sample {sample['channel']} to {sample['external_id']}: {text}")


@blast.command("watch")
@click.argument("blast_id")
@click.option("--json", "as_json", is_flag=True, help="Stream JSON progress lines instead.")
@click.option("--interval", default=0.5, show_default=True, help="Seconds between updates.")
@pass_app
def blast_watch(app: App, blast_id: str, as_json: bool, interval: float) -> None:
    """Live progress until the blast ends: per channel sent/targeted, rate, ETA."""
    import time

    from workers.watch import watch

    # Right after `rapid alert send` the intake may not have recorded the blast yet.
    deadline = time.monotonic() + WATCH_WAIT_FOR_BLAST_S
    while app.blasts.get(blast_id) is None:
        if time.monotonic() > deadline:
            raise InputError(f"no blast {blast_id!r}")
        time.sleep(0.25)
    final = watch(
        app.blasts,
        blast_id,
        as_json=as_json,
        interval_s=interval,
        emit=click.echo,
        live=app.control.progress.read,
    )
    if not as_json:
        click.echo(f"{blast_id}: {final['status']}")


def _action(name: str, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("blast_id")
    @click.option("--json", "as_json", is_flag=True)
    @pass_app
    def command(app: App, blast_id: str, as_json: bool) -> None:
        from messaging.access.audit import Actor, Source

        actor = Actor(app.settings.operator, Source.CLI)
        act_on_blast(
            name, blast_id, actor, actions=app.actions, approvals=app.approvals, audit=app.audit
        )
        summary = _show_one(app, blast_id)
        if as_json:
            echo_json(summary)
        else:
            click.echo(f"{blast_id}: {summary['status']}")

    return command


@blast.command("export")
@click.argument("blast_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the CSV here instead of standard output.",
)
@pass_app
def blast_export(app: App, blast_id: str, out: Path | None) -> None:
    """One CSV row per recipient and channel: external_id, channel, destination, state,
    error code, sent/delivered/clicked times, variant. Streams: any size, little memory."""
    import sys

    from messaging.blasts.export import write_csv

    if app.blasts.get(blast_id) is None:
        raise InputError(f"no blast {blast_id!r}")
    rows = app.stores.exports.export_rows(blast_id)
    if out is None:
        write_csv(rows, sys.stdout)
        return
    with out.open("w", encoding="utf-8", newline="") as stream:
        n = write_csv(rows, stream)
    click.echo(f"{blast_id}: {n} rows to {out}", err=True)


for _name, _help in (
    ("pause", "Pause a blast fleet-wide (within a second); pending recipients wait."),
    ("resume", "Resume a paused blast; nothing already sent is sent again."),
    ("cancel", "Cancel a blast fleet-wide; everyone not yet sent ends canceled."),
    ("approve", "Approve a blast awaiting approval (not your own); it starts sending at once."),
    ("reject", "Reject a blast awaiting approval; it is canceled."),
):
    blast.add_command(_action(_name, _help))

COMMANDS = [alert, blast]
