"""What a blast would do, without sending: audience, segments, cost, quiet hours, ETA.

Runs inside the dry run's rolled-back expansion, so it sees exactly the ledger rows a real
send would write (consent, suppression and households already decided).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config.settings import QuietHours
from messaging.compliance.quiet_hours import next_allowed
from messaging.content.alert import Alert
from messaging.content.links import preview_links
from messaging.content.sms_encoding import normalize_for_gsm, segment_info
from messaging.content.templates import RenderError, render
from messaging.content.variants import sms_content
from messaging.ports import PendingView

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
    #: One MMS (``sms.media_url``): priced per message, not per segment.
    mms_price: float = 0.02
    quiet_hours: QuietHours | None = None
    #: Where tracked short links point: the sample's URLs are measured as short links
    #: (messaging/content/links.py); None: as written.
    short_link_base_url: str | None = None


def estimate(pending: PendingView, alert: Alert, config: DryRunConfig) -> dict[str, Any]:
    """The dry-run report of one blast from the rows a real send would leave ``pending``."""
    report: dict[str, Any] = {}
    if alert.sms is not None:
        report["sms"] = _sms(pending, alert, config)
    if alert.email is not None:
        n = pending.pending_count("email")
        report["email"] = {
            "recipients": n,
            "estimated_cost": round(n * config.email_price, 2),
            "eta_s": round(n / config.email_rate_per_s, 1),
        }
    return report


def _sms(pending: PendingView, alert: Alert, config: DryRunConfig) -> dict[str, Any]:
    assert alert.sms is not None
    recipients = pending.pending_count("sms")
    # Segments: render a sample as the sender would (first-contact text included).
    segments, rendered, failed = 0, 0, 0
    links = preview_links(alert, config.short_link_base_url)
    for i, (fields, first_sms_at) in enumerate(pending.sms_sample(SEGMENT_SAMPLE)):
        # Variants are split evenly: the sample takes them in turn.
        part = sms_content(alert, i) if alert.variants else alert.sms
        assert part is not None
        try:
            body = render(part.body, fields)
        except RenderError:
            failed += 1
            continue
        body = links.rewrite(body, 0) if links is not None else body
        if first_sms_at is None:
            body = f"{config.org_name}: {body}\nReply STOP to opt out"
        segments += segment_info(normalize_for_gsm(body)).segments
        rendered += 1
    per_message = segments / rendered if rendered else 0.0
    total_segments = round(per_message * recipients)
    quiet = _quiet_now(pending, alert, config)
    sendable_now = recipients - sum(quiet.values())
    return {
        "recipients": recipients,
        "segments_per_message": round(per_message, 2),
        "segments": total_segments,
        "mms": alert.sms.is_mms,
        "estimated_cost": round(
            recipients * config.mms_price
            if alert.sms.is_mms
            else total_segments * config.sms_price_per_segment,
            2,
        ),
        **quiet,
        "template_failures_in_sample": failed,
        "eta_s": round(sendable_now / config.sms_rate_per_s, 1),
    }


def _quiet_now(pending: PendingView, alert: Alert, config: DryRunConfig) -> dict[str, int]:
    """Recipients that quiet hours would stop now, per time zone (unknown zones get the
    conservative window), by what happens to them: they wait for the window's end, get the
    alert's email instead (``quiet_hours_fallback``), or expire (the window ends after
    ``send_by``)."""
    quiet = dict.fromkeys(
        ("deferred_for_quiet_hours", "fallback_for_quiet_hours", "expired_for_quiet_hours"), 0
    )
    if config.quiet_hours is None:
        return quiet
    now = datetime.now(UTC)
    with_email = pending.sms_with_email_by_timezone() if alert.falls_back_to_email else {}
    for tz, n in pending.sms_by_timezone().items():
        until = next_allowed(now, tz, config.quiet_hours)
        if until is None:
            continue
        email = with_email.get(tz, 0)
        quiet["fallback_for_quiet_hours"] += email
        late = alert.send_by is not None and until >= alert.send_by
        quiet["expired_for_quiet_hours" if late else "deferred_for_quiet_hours"] += n - email
    return quiet
