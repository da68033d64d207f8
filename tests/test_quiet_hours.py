"""Quiet hours in the recipient's local time, and the conservative window for unknown zones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from config.settings import QuietHours
from messaging.blasts.blast_control import BlastActions
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.compliance.quiet_hours import US_TIME_ZONES, is_quiet, next_allowed
from messaging.content.alert import parse_alert
from messaging.memory import InMemoryBlastControl
from messaging.providers.memory import InMemorySms
from messaging.safety.sweep import Sweeper
from messaging.sending.sms import SmsConfig, SmsSender
from messaging.store.schema import deliveries
from tests.factories import add_supporters, send_context, sms_config

TCPA = QuietHours(time(21, 0), time(8, 0))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "tz", "expected"),
    [
        ("2026-11-27T03:00:00", "America/New_York", "2026-11-27T13:00:00"),  # 22:00 EST
        ("2026-11-27T03:00:00", "America/Los_Angeles", None),  # 19:00 PST
        ("2026-11-27T12:59:00", "America/New_York", "2026-11-27T13:00:00"),  # 07:59 EST
        ("2026-11-27T13:00:00", "America/New_York", None),  # 08:00 EST: allowed
        ("2026-11-27T01:59:00", "America/New_York", None),  # 20:59 EST
        ("2026-11-27T02:00:00", "America/New_York", "2026-11-27T13:00:00"),  # 21:00 EST: quiet
        # Unknown zone: allowed only when it is daytime from Hawaii to Maine (18:00-02:00 UTC)
        ("2026-11-27T15:00:00", None, "2026-11-27T18:00:00"),
        ("2026-11-27T19:00:00", None, None),
        ("2026-11-27T02:30:00", "Not/AZone", "2026-11-27T18:00:00"),
        # DST: on 2026-03-08 New York springs forward; the window still ends at 08:00 local
        ("2026-03-08T06:00:00", "America/New_York", "2026-03-08T12:00:00"),
    ],
)
def test_next_allowed(now: str, tz: str | None, expected: str | None) -> None:
    result = next_allowed(at(now), tz, TCPA)
    assert result == (at(expected) if expected else None)


def test_unknown_zone_is_never_quiet_time_anywhere_in_the_us() -> None:
    # For every minute of a day: if we would send to an unknown zone, it is daytime everywhere.
    start = at("2026-07-01T00:00:00")
    for minute in range(0, 24 * 60, 7):
        now = start + timedelta(minutes=minute)
        if next_allowed(now, None, TCPA) is None:
            for name in US_TIME_ZONES:
                assert not is_quiet(now.astimezone(ZoneInfo(name)).time(), TCPA), (now, name)


def test_window_that_does_not_wrap() -> None:
    lunch = QuietHours(time(12, 0), time(13, 0))
    assert next_allowed(at("2026-11-27T17:30:00"), "America/New_York", lunch) == at(
        "2026-11-27T18:00:00"
    )
    assert next_allowed(at("2026-11-27T18:00:00"), "America/New_York", lunch) is None


def _window_around_now(zone: str) -> QuietHours:
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    return QuietHours(
        (local - timedelta(hours=1)).time().replace(second=0, microsecond=0),
        (local + timedelta(hours=1)).time().replace(second=0, microsecond=0),
    )


def test_sms_in_quiet_hours_is_deferred_then_released_in_order(engine: Engine) -> None:
    # Given 03:00 UTC on a November night: 22:00 in New York (quiet), 17:00 in Honolulu
    night = at("2026-11-27T03:00:00")
    ids = add_supporters(
        engine,
        [
            {"phone": "+12125550100", "timezone": "America/New_York"},
            {"phone": "+18085550100", "timezone": "Pacific/Honolulu"},
            {"phone": "+12125550101", "timezone": None, "postal_code": "10001"},  # NYC by phone
            {"phone": "+13125550100", "timezone": "Not/AZone"},
        ],  # unknown: quiet somewhere in the US
        topic="t",
    )
    control = InMemoryBlastControl()
    ctx, queue = send_context(engine, control=control)
    blast, _ = ctx.blasts.create(
        parse_alert(json.dumps({"alert_id": "q1", "sms": {"body": "Hi"}}), fallback_id="x"),
        "t",
        None,
    )
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    sms = InMemorySms()
    config = sms_config(100, quiet_hours=TCPA)
    # When the batch is processed at that hour
    SmsSender(ctx, sms, config, clock=lambda: night).process(queue.items.pop(0))
    # Then only Honolulu was texted; the others are deferred to the end of their quiet hours
    assert [m.to for m in sms.sent] == ["+18085550100"]
    with engine.connect() as conn:
        rows = {r.supporter_id: r for r in conn.execute(select(deliveries))}
    assert rows[ids[0]].state == rows[ids[2]].state == rows[ids[3]].state == RowState.DEFERRED
    assert rows[ids[0]].deferred_until.replace(tzinfo=UTC) == at(
        "2026-11-27T13:00:00"
    )  # 8 a.m. EST
    assert rows[ids[3]].deferred_until.replace(tzinfo=UTC) == at(
        "2026-11-27T18:00:00"
    )  # 8 a.m. HST
    assert ctx.blasts.get("q1").status == BlastStatus.SENDING  # type: ignore[union-attr]
    sweeper = Sweeper(
        BlastActions(ctx.blasts, ctx.ledger, queue, control),
        clock=lambda: at("2026-11-27T12:59:59"),
    )
    # When the scheduler runs a second before New York's window ends, nothing is released
    assert sweeper.release_deferred() == 0
    # When it runs at the end of New York's quiet hours (twice, as two schedulers would)
    for _ in range(2):
        Sweeper(
            BlastActions(ctx.blasts, ctx.ledger, queue, control),
            clock=lambda: at("2026-11-27T13:00:00"),
        ).release_deferred()
    # Then the New York rows are queued once, in deferral order, and go out at that hour
    assert [w.supporter_ids for w in queue.items] == [(ids[0], ids[2])]
    morning = SmsSender(ctx, sms, config, clock=lambda: at("2026-11-27T13:00:05"))
    morning.process(queue.items.pop(0))
    assert sorted(m.to for m in sms.sent) == ["+12125550100", "+12125550101", "+18085550100"]
    # And the unknown zone waits for the window that is quiet nowhere in the US
    late_morning = Sweeper(
        BlastActions(ctx.blasts, ctx.ledger, queue, control),
        clock=lambda: at("2026-11-27T18:00:00"),
    )
    assert late_morning.release_deferred() == 1
    SmsSender(ctx, sms, config, clock=lambda: at("2026-11-27T18:00:01")).process(queue.items.pop(0))
    assert len(sms.sent) == 4
    assert ctx.blasts.get("q1").status == BlastStatus.COMPLETED  # type: ignore[union-attr]


def test_quiet_hours_past_send_by_expire(engine: Engine) -> None:
    window = _window_around_now("America/New_York")
    add_supporters(engine, [{"phone": "+12125550100", "timezone": "America/New_York"}], topic="t")
    ctx, queue = send_context(engine)
    send_by = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    alert = {"alert_id": "q2", "sms": {"body": "Hi"}, "send_by": send_by}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    sms = InMemorySms()
    config = SmsConfig(org_name="Acme", from_numbers=("+15005550006",), quiet_hours=window)
    SmsSender(ctx, sms, config).process(queue.items.pop(0))
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.state)).scalar_one() == RowState.EXPIRED
    assert sms.sent == []
