"""What a blast would do, without sending: audience, segments, cost, quiet hours, ETA.

Runs inside the dry run's rolled-back expansion, so it sees exactly the ledger rows a real
send would write (consent, suppression and households already decided).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from config.settings import QuietHours
from messaging import states
from messaging.alert import Alert
from messaging.quiet_hours import next_allowed
from messaging.sms_encoding import normalize_for_gsm, segment_info
from messaging.store.ledger import TEMPLATE_FIELDS
from messaging.store.schema import deliveries, supporters
from messaging.templates import RenderError, render

#: Recipients whose SMS is rendered to measure segments; the average is extrapolated.
SEGMENT_SAMPLE = 1000


@dataclass(frozen=True, slots=True)
class DryRunConfig:
    """Prices and rates the estimate uses (from the settings)."""

    org_name: str = ""
    sms_rate_per_s: float = 100.0
    email_rate_per_s: float = 1000.0
    sms_price_per_segment: float = 0.0079
    email_price: float = 0.0006
    quiet_hours: QuietHours | None = None


def estimate(conn: Connection, blast_id: str, alert: Alert, config: DryRunConfig) -> dict[str, Any]:
    """The dry-run report of one blast whose ledger rows are visible on ``conn``."""
    report: dict[str, Any] = {}
    if alert.sms is not None:
        report["sms"] = _sms(conn, blast_id, alert, config)
    if alert.email is not None:
        n = _pending(conn, blast_id, "email")
        report["email"] = {
            "recipients": n,
            "estimated_cost": round(n * config.email_price, 2),
            "eta_s": round(n / config.email_rate_per_s, 1),
        }
    return report


def _pending(conn: Connection, blast_id: str, channel: str) -> int:
    return int(
        conn.scalar(
            select(func.count())
            .select_from(deliveries)
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel == channel,
                deliveries.c.state == states.PENDING,
            )
        )
        or 0
    )


def _sms(conn: Connection, blast_id: str, alert: Alert, config: DryRunConfig) -> dict[str, Any]:
    assert alert.sms is not None
    rows = (
        select(
            supporters.c.timezone,
            supporters.c.first_sms_at,
            *(supporters.c[f] for f in TEMPLATE_FIELDS),
        )
        .select_from(deliveries.join(supporters, supporters.c.id == deliveries.c.supporter_id))
        .where(
            deliveries.c.blast_id == blast_id,
            deliveries.c.channel == "sms",
            deliveries.c.state == states.PENDING,
        )
    )
    recipients = _pending(conn, blast_id, "sms")
    # Segments: render a sample as the sender would (first-contact text included).
    segments, rendered, failed = 0, 0, 0
    for row in conn.execute(rows.limit(SEGMENT_SAMPLE)):
        fields = {f: getattr(row, f) or "" for f in TEMPLATE_FIELDS}
        try:
            body = render(alert.sms.body, fields)
        except RenderError:
            failed += 1
            continue
        if row.first_sms_at is None:
            body = f"{config.org_name}: {body}\nReply STOP to opt out"
        segments += segment_info(normalize_for_gsm(body)).segments
        rendered += 1
    per_message = segments / rendered if rendered else 0.0
    total_segments = round(per_message * recipients)
    # Quiet hours now, per time zone (unknown zones get the conservative window).
    quiet_now = 0
    if config.quiet_hours is not None:
        now = datetime.now(UTC)
        by_zone = conn.execute(
            select(supporters.c.timezone, func.count())
            .select_from(deliveries.join(supporters, supporters.c.id == deliveries.c.supporter_id))
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel == "sms",
                deliveries.c.state == states.PENDING,
            )
            .group_by(supporters.c.timezone)
        ).all()
        quiet_now = sum(int(n) for tz, n in by_zone if next_allowed(now, tz, config.quiet_hours))
    sendable_now = recipients - quiet_now
    return {
        "recipients": recipients,
        "segments_per_message": round(per_message, 2),
        "segments": total_segments,
        "estimated_cost": round(total_segments * config.sms_price_per_segment, 2),
        "deferred_for_quiet_hours": quiet_now,
        "template_failures_in_sample": failed,
        "eta_s": round(sendable_now / config.sms_rate_per_s, 1),
    }
