"""Provider events applied to the system of record, and the fleet metrics, without HTTP.

The delivery-event tests run on both databases (the ``engine`` fixture); the metric tests
use the real Redis under a fresh prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select

from config.names import Names
from messaging.content.alert import Alert, EmailContent, SmsContent
from messaging.sending.delivery_events import (
    HELP,
    START,
    STOP,
    DeliveryEvents,
    InboundSms,
    SmsStatus,
    keyword_of,
    sendgrid_event_id,
    suppresses_address,
)
from messaging.store.schema import deliveries, inbound_messages, webhook_events
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.delivery_events import SqlDeliveryEventStore
from messaging.store.sql.reports import SqlReportStore
from messaging.store.sql.suppressions import SqlSuppressionList
from queues.metrics import build_registry, record_outcomes
from tests.conftest import REDIS_TEST_URL, free_port
from tests.factories import add_delivery

pytestmark = pytest.mark.integration

PHONE = "+14155550100"
EMAIL = "jane@example.org"


# --- helpers -----------------------------------------------------------------------------------


def make_blast(engine: Engine, blast_id: str = "b1", status: str | None = None) -> None:
    """A blast on both channels (its ledger rows are added by :func:`add_row`)."""
    alert = Alert(
        alert_id=blast_id,
        sms=SmsContent(body="Hi"),
        email=EmailContent(subject="Hi", text="Hi"),
    )
    store = SqlBlastStore(engine)
    store.create(alert, "news", None)
    if status:
        store.set_status(blast_id, status)


def add_row(
    engine: Engine,
    *,
    blast_id: str = "b1",
    channel: str = "sms",
    supporter_id: int = 1,
    destination: str = PHONE,
    state: str = "sent",
    provider_message_id: str | None = None,
) -> None:
    """One ledger row, as a sender would have left it."""
    add_delivery(
        engine,
        blast_id,
        supporter_id,
        destination,
        state=state,
        channel=channel,
        provider_message_id=provider_message_id,
    )


def row(engine: Engine, channel: str = "sms", supporter_id: int = 1) -> Any:
    """The ledger row of supporter ``supporter_id`` in blast b1."""
    with engine.connect() as conn:
        return conn.execute(
            select(deliveries).where(
                deliveries.c.blast_id == "b1",
                deliveries.c.channel == channel,
                deliveries.c.supporter_id == supporter_id,
            )
        ).one()


def count(engine: Engine, table: Any) -> int:
    """Rows in ``table``."""
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
def events(engine: Engine) -> DeliveryEvents:
    """The service under test, on the real suppression list."""
    return DeliveryEvents(SqlDeliveryEventStore(engine), SqlSuppressionList(engine))


@pytest.fixture
def suppressions(engine: Engine) -> SqlSuppressionList:
    """The suppression list the service writes."""
    return SqlSuppressionList(engine)


# --- Twilio status callbacks ---------------------------------------------------------------


def test_delivered_then_late_sent_leaves_delivered(engine: Engine, events: DeliveryEvents) -> None:
    # Given an SMS the sender recorded as sent with Twilio's SID
    make_blast(engine)
    add_row(engine, provider_message_id="SM1")
    # When Twilio's callbacks arrive out of order: delivered, then sent
    assert events.sms_status(SmsStatus("SM1", "delivered")) == "delivered"
    first = row(engine)
    assert events.sms_status(SmsStatus("SM1", "sent")) == "ignored"
    # Then the row is delivered, with the time it was confirmed
    assert first.state == "delivered" and first.delivered_at is not None
    assert row(engine).state == "delivered"
    # And when the same delivered callback is repeated, nothing changes
    assert events.sms_status(SmsStatus("SM1", "delivered")) == "unchanged"
    assert row(engine).delivered_at == first.delivered_at


def test_undelivered_fails_the_row_with_the_error_code(
    engine: Engine, events: DeliveryEvents, suppressions: SqlSuppressionList
) -> None:
    # Given a sent SMS
    make_blast(engine)
    add_row(engine, provider_message_id="SM2")
    # When Twilio reports it undelivered with 30003 (unreachable handset)
    assert events.sms_status(SmsStatus("SM2", "undelivered", "30003")) == "failed"
    # Then the row failed with that code, and the number is not suppressed (30003 is transient)
    failed = row(engine)
    assert (failed.state, failed.error_code) == ("failed", "30003")
    assert suppressions.lookup("sms", PHONE) is None
    # And a later delivered callback cannot resurrect it
    assert events.sms_status(SmsStatus("SM2", "delivered")) == "unchanged"
    assert row(engine).state == "failed"


def test_error_21610_suppresses_the_number(
    engine: Engine, events: DeliveryEvents, suppressions: SqlSuppressionList
) -> None:
    # Given a sent SMS
    make_blast(engine)
    add_row(engine, provider_message_id="SM3")
    # When Twilio says the recipient had opted out (21610)
    events.sms_status(SmsStatus("SM3", "failed", "21610", to=PHONE))
    # Then the row failed and the number is suppressed for every future blast
    assert row(engine).state == "failed"
    found = suppressions.lookup("sms", PHONE)
    assert found is not None and found.reason == "twilio-21610"


def test_a_callback_for_a_row_still_sending_changes_nothing(
    engine: Engine, events: DeliveryEvents
) -> None:
    # Given a row in flight that somehow carries the SID already
    make_blast(engine)
    add_row(engine, state="sending", provider_message_id="SM4")
    # When a callback arrives for it
    assert events.sms_status(SmsStatus("SM4", "delivered")) == "unchanged"
    # Then the row is untouched (only rows in `sent` move)
    assert row(engine).state == "sending"


def test_a_callback_that_overtakes_the_sender_is_applied_when_the_sid_is_recorded(
    engine: Engine, events: DeliveryEvents
) -> None:
    from messaging.ports import Outcome
    from messaging.store.schema import early_statuses
    from messaging.store.sql.ledger import SqlLedger

    # Given a row claimed by a sender whose batch has not recorded Twilio's SID yet
    make_blast(engine)
    add_row(engine, state="sending", provider_message_id=None)
    sid = row(engine).supporter_id
    # When Twilio's delivered callback for that SID arrives first, it is parked
    assert events.sms_status(SmsStatus("SMearly", "delivered")) == "parked"
    # And when the sender records the send, the parked status is applied and cleared
    SqlLedger(engine).record(
        row(engine).blast_id, "sms", [Outcome(sid, "sent", provider_message_id="SMearly")]
    )
    settled = row(engine)
    assert settled.state == "delivered" and settled.delivered_at is not None
    with engine.connect() as conn:
        assert conn.execute(select(early_statuses)).first() is None


# --- inbound SMS ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ("STOP", STOP),
        ("  stop  ", STOP),
        ("Stop", STOP),
        ("stopall", STOP),
        ("Unsubscribe", STOP),
        ("END", STOP),
        ("quit", STOP),
        ("CANCEL", STOP),
        ("revoke", STOP),
        ("OPTOUT", STOP),
        ("START", START),
        ("yes", START),
        ("Unstop", START),
        ("HELP", HELP),
        ("stop please", None),
        ("please stop", None),
        ("", None),
    ],
)
def test_keywords_are_the_whole_trimmed_body_in_any_case(body: str, action: str | None) -> None:
    # Given an inbound body, when classified, then only a whole-body keyword counts
    keyword = keyword_of(body)
    assert (keyword.action if keyword else None) == action


def test_stop_suppresses_start_lifts_and_replays_do_not_act_again(
    engine: Engine, events: DeliveryEvents, suppressions: SqlSuppressionList
) -> None:
    # When a supporter texts STOP
    result = events.inbound_sms(InboundSms(PHONE, " Stop ", "+15005550006", "SMa"))
    # Then the number is suppressed with the keyword as reason
    assert result.keyword is not None and not result.duplicate
    found = suppressions.lookup("sms", PHONE)
    assert found is not None and (found.reason, found.source) == ("stop", "inbound-sms")
    # When they text START, then the suppression is lifted
    events.inbound_sms(InboundSms(PHONE, "START", "+15005550006", "SMb"))
    assert suppressions.lookup("sms", PHONE) is None
    # When Twilio replays the first STOP, then it is recognised and not acted on again
    replay = events.inbound_sms(InboundSms(PHONE, " Stop ", "+15005550006", "SMa"))
    assert replay.duplicate
    assert suppressions.lookup("sms", PHONE) is None
    assert count(engine, inbound_messages) == 2


def test_other_text_is_recorded_once_and_not_acted_on(
    engine: Engine, events: DeliveryEvents, suppressions: SqlSuppressionList
) -> None:
    # When a supporter writes "stop please" (not a keyword), twice with one MessageSid
    events.inbound_sms(InboundSms(PHONE, "stop please", "+15005550006", "SMc"))
    second = events.inbound_sms(InboundSms(PHONE, "stop please", "+15005550006", "SMc"))
    # Then it is recorded once, with no action, and nothing is suppressed
    assert second.duplicate and second.keyword is None
    with engine.connect() as conn:
        rows = conn.execute(select(inbound_messages)).all()
    assert [(r.body, r.action, r.message_sid) for r in rows] == [("stop please", None, "SMc")]
    assert suppressions.lookup("sms", PHONE) is None


# --- SendGrid events -----------------------------------------------------------------------


def sg(kind: str, event_id: str, supporter_id: int = 1, **extra: Any) -> dict[str, Any]:
    """A SendGrid event for supporter ``supporter_id`` of blast b1."""
    return {
        "email": EMAIL,
        "timestamp": 1764230400,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "msg.filter0001",
        "blast_id": "b1",
        "supporter_id": str(supporter_id),
        **extra,
    }


def test_delivered_refines_the_row_and_a_replayed_batch_changes_nothing(
    engine: Engine, events: DeliveryEvents
) -> None:
    # Given a sent email
    make_blast(engine)
    add_row(engine, channel="email", destination=EMAIL)
    batch = [sg("processed", "e0"), sg("delivered", "e1")]
    # When SendGrid reports it delivered
    report = events.email_events(batch)
    # Then the row is delivered, at the event's time
    delivered = row(engine, "email")
    assert delivered.state == "delivered"
    assert delivered.delivered_at.replace(tzinfo=UTC) == datetime.fromtimestamp(1764230400, UTC)
    assert (report.delivered, report.duplicates) == (1, 0)
    # When the same batch is replayed, then every event is a duplicate and nothing changes
    again = events.email_events(batch)
    assert (again.duplicates, again.delivered) == (2, 0)
    assert count(engine, webhook_events) == 2


def test_bounce_suppresses_and_fails_the_row(
    engine: Engine, events: DeliveryEvents, suppressions: SqlSuppressionList
) -> None:
    # Given a sent email
    make_blast(engine)
    add_row(engine, channel="email", destination=EMAIL)
    # When it bounces (mixed-case address in the event)
    event = sg("bounce", "e2", reason="550 5.1.1 no such user", status="5.1.1", type="bounce")
    event["email"] = "Jane@Example.org"
    report = events.email_events([event])
    # Then the address is suppressed and the row failed with the SMTP status
    found = suppressions.lookup("email", EMAIL)
    assert found is not None and (found.reason, found.source) == ("bounce", "sendgrid")
    failed = row(engine, "email")
    assert (failed.state, failed.error_code) == ("failed", "5.1.1")
    assert "no such user" in failed.error
    assert (report.suppressed, report.failed) == (1, 1)


@pytest.mark.parametrize(
    ("event", "suppresses"),
    [
        ({"event": "dropped", "reason": "Invalid"}, True),
        ({"event": "dropped", "reason": "Bounced Address"}, True),
        ({"event": "dropped", "reason": "Unsubscribed Address"}, True),
        ({"event": "dropped", "reason": "Spam Reporting Address"}, True),
        ({"event": "dropped", "reason": "Invalid SMTPAPI header"}, False),
        ({"event": "dropped", "reason": "Spam Content (if spam checker app enabled)"}, False),
        ({"event": "dropped", "reason": "Recipient List over Package Quota"}, False),
        ({"event": "bounce", "type": "bounce"}, True),
        ({"event": "bounce", "type": "blocked"}, False),
        ({"event": "spamreport"}, True),
        ({"event": "unsubscribe"}, True),
        ({"event": "group_unsubscribe", "asm_group_id": 1}, True),
        ({"event": "delivered"}, False),
        ({"event": "open"}, False),
    ],
)
def test_which_events_suppress_the_address(event: dict[str, Any], suppresses: bool) -> None:
    # Given a SendGrid event, when classified, then only address problems suppress
    assert suppresses_address(event) is suppresses


def test_dropped_for_our_content_fails_the_row_but_keeps_the_address(
    engine: Engine, events: DeliveryEvents, suppressions: SqlSuppressionList
) -> None:
    # Given a sent email
    make_blast(engine)
    add_row(engine, channel="email", destination=EMAIL)
    # When SendGrid drops it for spam content (our message, not the address)
    events.email_events([sg("dropped", "e3", reason="Spam Content (if spam checker app enabled)")])
    # Then the row failed but the address may be mailed again
    assert row(engine, "email").state == "failed"
    assert suppressions.lookup("email", EMAIL) is None


def test_unsubscribe_and_spamreport_suppress_without_touching_the_ledger(
    engine: Engine, events: DeliveryEvents, suppressions: SqlSuppressionList
) -> None:
    # Given a delivered email
    make_blast(engine)
    add_row(engine, channel="email", destination=EMAIL, state="delivered")
    # When the reader reports spam and later unsubscribes via a group
    events.email_events([sg("spamreport", "e4"), sg("group_unsubscribe", "e5")])
    # Then the address is suppressed (first reason wins) and the row stays delivered
    found = suppressions.lookup("email", EMAIL)
    assert found is not None and found.reason == "spamreport"
    assert row(engine, "email").state == "delivered"


def test_events_without_an_id_are_deduplicated_by_content(events: DeliveryEvents) -> None:
    # Given an old-style event without sg_event_id
    event = {"email": EMAIL, "event": "dropped", "reason": "Invalid", "timestamp": 1}
    # When it arrives twice, then the second time it is a duplicate
    assert sendgrid_event_id(event).startswith("sha256:")
    assert events.email_events([event]).suppressed == 1
    assert events.email_events([dict(event)]).duplicates == 1


def test_malformed_events_are_ignored(events: DeliveryEvents) -> None:
    # Given a batch with junk in it, when applied, then the junk is counted and skipped
    report = events.email_events(["junk", 7, {"event": "delivered", "sg_event_id": "x"}])
    assert (report.received, report.ignored, report.delivered) == (3, 3, 0)


# --- metrics ---------------------------------------------------------------------------------


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """The real Redis; the test's keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_TEST_URL)
    yield client
    client.close()


@pytest.fixture
def names(prefix: str, redis_client: redis.Redis) -> Iterator[Names]:
    """Names under a fresh prefix, cleaned up after the test."""
    yield Names(prefix)
    keys = list(redis_client.scan_iter(f"{prefix}*"))
    if keys:
        redis_client.delete(*keys)


def scrape(engine: Engine, client: Any, names: Names) -> dict[str, dict[tuple[Any, ...], float]]:
    """``{sample name: {label items: value}}`` of one scrape, parsed like Prometheus would."""
    text = generate_latest(build_registry(SqlReportStore(engine), client, names)).decode()
    samples: dict[str, dict[tuple[Any, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_sender_counters_are_exported_as_prometheus_counters(
    engine: Engine, redis_client: redis.Redis, names: Names
) -> None:
    # Given senders that recorded their batches' outcomes
    record_outcomes(redis_client, names, "sms", {"sent": 98, "failed": 2, "suppressed": 0})
    record_outcomes(redis_client, names, "sms", {"sent": 2})
    # When the web process is scraped
    samples = scrape(engine, redis_client, names)
    # Then each family carries the fleet-wide sums
    messages = samples["rapid_messages_total"]
    assert messages[(("channel", "sms"), ("outcome", "sent"))] == 100
    assert messages[(("channel", "sms"), ("outcome", "failed"))] == 2
    assert (("channel", "sms"), ("outcome", "suppressed")) not in messages
    assert samples["rapid_metrics_source_up"][(("source", "redis"),)] == 1


def test_gauges_show_open_blasts_ledger_and_queue_depths(
    engine: Engine, redis_client: redis.Redis, names: Names
) -> None:
    # Given a sending blast with two rows, a completed one, and two queued send batches
    make_blast(engine, "b1", status="sending")
    add_row(engine, state="pending")
    add_row(engine, supporter_id=2, destination="+14155550101", state="sent")
    make_blast(engine, "b2", status="completed")
    add_row(engine, blast_id="b2", state="sent")
    lane = f"{names.prefix}-dramatiq:sms-urgent"
    redis_client.rpush(lane, "m1", "m2")
    redis_client.rpush(f"{lane}.DQ", "m3")
    # When scraped
    samples = scrape(engine, redis_client, names)
    # Then the ledger gauge counts only the blast not yet ended, per channel and state
    ledger = samples["rapid_deliveries"]
    assert ledger[(("channel", "sms"), ("state", "pending"))] == 1
    assert ledger[(("channel", "sms"), ("state", "sent"))] == 1
    assert ledger[(("channel", "email"), ("state", "sent"))] == 0
    blasts = samples["rapid_blasts"]
    assert blasts[(("status", "sending"),)] == 1 and blasts[(("status", "completed"),)] == 1
    depth = samples["rapid_send_queue_depth"]
    assert depth[(("lane", "sms-urgent"),)] == 2
    assert depth[(("lane", "sms-urgent.DQ"),)] == 1
    assert depth[(("lane", "email-bulk"),)] == 0


def test_recording_and_scraping_survive_redis_being_down(engine: Engine, names: Names) -> None:
    # Given a Redis that does not answer
    down = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    # When a sender records a metric, then the send is not failed by it
    record_outcomes(down, names, "email", {"sent": 1})
    # And a scrape still answers with the database's families, saying Redis is down
    samples = scrape(engine, down, names)
    assert samples["rapid_metrics_source_up"][(("source", "redis"),)] == 0
    assert samples["rapid_metrics_source_up"][(("source", "database"),)] == 1
    assert "rapid_blasts" in samples
    down.close()
