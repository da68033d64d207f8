"""Expansion writes the ledger before anything is queued; it decides duplicates and suppressions."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select

from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.content.alert import parse_alert
from messaging.memory import InMemorySendQueue
from messaging.ports import ExpandedPage
from messaging.store.schema import deliveries
from messaging.store.sql.blasts import SqlBlastStore
from messaging.store.sql.ledger import SqlLedger
from messaging.store.sql.suppressions import SqlSuppressionList
from tests.factories import add_supporters


def _alert(**extra: object) -> str:
    import json

    return json.dumps(
        {
            "alert_id": "a-1",
            "sms": {"body": "Hi {{ first_name }}"},
            "email": {"subject": "S", "text": "T"},
            **extra,
        }
    )


def _ledger_states(engine: Engine, channel: str) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.supporter_id, deliveries.c.state).where(
                deliveries.c.channel == channel
            )
        )
        return {int(a): b for a, b in rows}


def test_expansion_pages_households_consent_and_suppression(engine: Engine) -> None:
    # Given subscribers: a household sharing one phone, one without SMS consent, one suppressed,
    # one without a phone, and many ordinary ones spread over several pages
    people = [
        {"phone": "+14155550100", "email": "a@example.org"},
        {"phone": "+14155550100", "email": "B@example.org"},  # same phone: duplicate
        {"phone": "+14155550102", "email": "b@example.org", "sms_opt_in": False},  # b@ dup
        {"phone": "+14155550103", "email": "c@example.org"},
        {"phone": None, "email": "d@example.org"},
    ]
    people += [
        {"phone": f"+1415555{1000 + i:04d}", "email": f"p{i}@example.org"} for i in range(23)
    ]
    ids = add_supporters(engine, people, topic="debate-night")
    add_supporters(engine, [{"phone": "+14155559999"}], topic="other-topic")
    SqlSuppressionList(engine).add("sms", "+14155550103", reason="stop", source="test")
    blasts, ledger, queue = SqlBlastStore(engine), SqlLedger(engine), InMemorySendQueue()
    blast, created = blasts.create(parse_alert(_alert(), fallback_id="x"), "debate-night", None)
    assert created

    # When it is expanded in pages of 7
    result = Expander(ledger, blasts, queue, page_size=7).expand(blast)

    # Then every eligible subscriber has exactly one ledger row with the right state
    sms = _ledger_states(engine, "sms")
    assert sms[ids[0]] == RowState.PENDING
    assert sms[ids[1]] == RowState.DUPLICATE
    assert ids[2] not in sms  # no consent: not targeted
    assert sms[ids[3]] == RowState.SUPPRESSED
    assert ids[4] not in sms  # no phone
    assert len(sms) == 3 + 23
    email = _ledger_states(engine, "email")
    assert email[ids[1]] == RowState.PENDING and email[ids[2]] == RowState.DUPLICATE
    assert len(email) == 28
    # And the queued work covers exactly the pending rows, once
    queued = {(w.channel, sid) for w in queue.items for sid in w.supporter_ids}
    assert len(queued) == sum(len(w.supporter_ids) for w in queue.items)
    pending = {("sms", s) for s, st in sms.items() if st == "pending"} | {
        ("email", s) for s, st in email.items() if st == "pending"
    }
    assert queued == pending
    assert result.pages == 4
    # And the blast moved on to sending with its audience figures
    after = blasts.get("a-1")
    assert after is not None and after.status == BlastStatus.SENDING
    assert after.stats["sms"] == {"eligible": 26, "no_consent": 1, "no_address": 1}

    # When the same blast is expanded again (a redelivered alert), nothing is added or queued
    queue.items.clear()
    again = Expander(ledger, blasts, queue, page_size=7).expand(blasts.get("a-1"))  # type: ignore[arg-type]
    assert again.pending == {"sms": 0, "email": 0} or not any(again.pending.values())
    assert queue.items == []
    assert _ledger_states(engine, "sms") == sms


def test_dry_run_estimates_segments_cost_quiet_hours_and_eta(engine: Engine) -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from config.settings import QuietHours
    from messaging.blasts.dry_run import DryRunConfig

    # Given two supporters in New York, where it is quiet hours now, one in Honolulu, and a
    # 150-character GSM text (with the first-contact wrapper: 2 segments each)
    local = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    window = QuietHours(
        (local - timedelta(hours=1)).time().replace(second=0, microsecond=0),
        (local + timedelta(hours=1)).time().replace(second=0, microsecond=0),
    )
    add_supporters(
        engine,
        [
            {"phone": "+12125550100", "email": "a@x.org", "timezone": "America/New_York"},
            {"phone": "+12125550101", "email": "b@x.org", "timezone": "America/New_York"},
            {"phone": "+18085550100", "email": "c@x.org", "timezone": "Pacific/Honolulu"},
        ],
        topic="t",
    )
    blasts, queue = SqlBlastStore(engine), InMemorySendQueue()
    alert = {
        "alert_id": "d-1",
        "sms": {"body": "x" * 150},
        "email": {"subject": "S", "text": "T"},
        "dry_run": True,
    }
    blast, _ = blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    config = DryRunConfig(
        org_name="Acme",
        sms_rate_per_s=2,
        email_rate_per_s=10,
        sms_price_per_segment=0.01,
        email_price=0.001,
        quiet_hours=window,
    )
    # When dry-run
    Expander(SqlLedger(engine), blasts, queue, dry_run=config).expand(blast)
    estimate = blasts.get("d-1").stats["estimate"]  # type: ignore[union-attr]
    # Then segments, cost, quiet-hours deferrals and ETA are reported, and nothing is queued
    assert estimate["sms"] == {
        "recipients": 3,
        "segments_per_message": 2.0,
        "segments": 6,
        "mms": False,
        "estimated_cost": 0.06,
        "deferred_for_quiet_hours": 2,
        "fallback_for_quiet_hours": 0,
        "expired_for_quiet_hours": 0,
        "template_failures_in_sample": 0,
        "eta_s": 0.5,
    }
    assert estimate["email"] == {"recipients": 3, "estimated_cost": 0.0, "eta_s": 0.3}
    assert queue.items == [] and _ledger_states(engine, "sms") == {}


def test_dry_run_counts_and_writes_nothing(engine: Engine) -> None:
    add_supporters(
        engine,
        [{"phone": "+14155550100"}, {"phone": "+14155550100"}, {"phone": "+14155550101"}],
        topic="t",
    )
    blasts, queue = SqlBlastStore(engine), InMemorySendQueue()
    blast, _ = blasts.create(parse_alert(_alert(dry_run=True), fallback_id="x"), "t", None)
    Expander(SqlLedger(engine), blasts, queue).expand(blast)
    done = blasts.get("a-1")
    assert done is not None and done.status == BlastStatus.COMPLETED
    assert done.stats["would_send"]["sms"] == {"pending": 2, "duplicate": 1}
    assert _ledger_states(engine, "sms") == {} and queue.items == []


def test_households_across_pages_and_a_rerun_page_write_each_destination_once(
    engine: Engine,
) -> None:
    # Given a household whose members fall on different pages, a household whose first
    # member is suppressed (its second is a duplicate, never pending), and a household of
    # three on one page
    people = [
        {"phone": "+14155550200"},  # page 1: the first of its household
        {"phone": "+14155550201"},  # page 1: suppressed, the first of its household
        {"phone": "+14155550201"},  # page 2: same phone as a suppressed row
        {"phone": "+14155550200"},  # page 2: same phone as page 1's first row
        {"phone": "+14155550203"},  # page 3: three at one phone
        {"phone": "+14155550203"},
        {"phone": "+14155550203"},
    ]
    ids = add_supporters(engine, people, topic="t")
    SqlSuppressionList(engine).add("sms", "+14155550201", reason="stop", source="test")
    blasts, ledger = SqlBlastStore(engine), SqlLedger(engine)
    alert = parse_alert(json.dumps({"alert_id": "h-1", "sms": {"body": "Hi"}}), fallback_id="x")
    blasts.create(alert, "t", None)
    written: dict[str, int] = {}

    def count(_channel: str, page: ExpandedPage) -> None:
        for state, n in page.by_state.items():
            written[state] = written.get(state, 0) + n

    # When it is expanded in pages of 2, 2 and 3
    first = ledger.expand_page("h-1", alert, "t", 0, 2, count)
    assert first is not None
    second = ledger.expand_page("h-1", alert, "t", first[0], 2, count)
    assert second is not None
    third = ledger.expand_page("h-1", alert, "t", second[0], 3, count)
    assert third is not None and third[1]["sms"].pending_ids == [ids[4]]

    # Then the lowest id of each destination holds it, every other member is a duplicate
    states = _ledger_states(engine, "sms")
    assert states == {
        ids[0]: RowState.PENDING,
        ids[1]: RowState.SUPPRESSED,
        ids[2]: RowState.DUPLICATE,
        ids[3]: RowState.DUPLICATE,
        ids[4]: RowState.PENDING,
        ids[5]: RowState.DUPLICATE,
        ids[6]: RowState.DUPLICATE,
    }
    assert written == {"pending": 2, "suppressed": 1, "duplicate": 4}
    assert second[1]["sms"].pending_ids == [] and second[1]["sms"].by_state == {"duplicate": 2}

    # When pages already written are written again (a second expander on the same cursor),
    # more times than psycopg and PostgreSQL take to settle on a generic, prepared plan
    for after in (0, first[0], second[0]) * 6:
        again = ledger.expand_page("h-1", alert, "t", after, 2, count)
        # Then each writes nothing and reports nothing to send
        assert again is not None and again[1]["sms"].pending_ids == []
        assert sum(again[1]["sms"].by_state.values()) == 0
    assert _ledger_states(engine, "sms") == states
