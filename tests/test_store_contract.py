"""Every store backend keeps the same contract: memory, SQLite and PostgreSQL.

Each test runs once per backend (the ``stores`` fixture); the in-memory twins are what the
fast unit tests use, so these tests are what makes them trustworthy. Seeding goes through
the stores themselves (``supporters.write_batch``), never through SQL, so a test means the
same thing on every backend.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.content.alert import Alert, parse_alert
from messaging.ports import ExpandedPage, Outcome, PendingView, SupporterRow
from messaging.store import Stores, memory_stores, open_stores

TOPIC = "debate-night"
COLUMNS = frozenset(
    {"first_name", "phone", "email", "postal_code", "state", "tags", "sms_opt_in"}
    | {"email_opt_in", "topics", "timezone"}
)


@pytest.fixture
def stores(store_engine: Engine | None) -> Stores:
    """Empty stores on one backend (once each: memory, SQLite, PostgreSQL)."""
    return memory_stores() if store_engine is None else open_stores(store_engine)


def person(n: int, **values: Any) -> SupporterRow:
    """Supporter ``n``: opted in to both channels, subscribed to TOPIC, unless told otherwise."""
    defaults: dict[str, Any] = {
        "first_name": f"P{n}",
        "phone": f"+1415555{1000 + n:04d}",
        "email": f"p{n}@example.org",
        "sms_opt_in": True,
        "email_opt_in": True,
        "topics": (TOPIC,),
    }
    return SupporterRow(external_id=f"ext-{n:04d}", **{**defaults, **values})


def seed(stores: Stores, rows: list[SupporterRow]) -> None:
    stores.supporters.write_batch(rows, COLUMNS)


def alert(alert_id: str = "a-1", **extra: Any) -> Alert:
    document = {"alert_id": alert_id, "sms": {"body": "Hi {{ first_name }}"}, **extra}
    return parse_alert(json.dumps(document), fallback_id="x")


def expand_all(stores: Stores, the_alert: Alert, page_size: int = 1000) -> dict[str, int]:
    """Expand a blast to the end; rows written per state (all channels together)."""
    stores.blasts.create(the_alert, TOPIC, None)
    written: dict[str, int] = {}

    def count(_channel: str, page: ExpandedPage) -> None:
        for state, n in page.by_state.items():
            written[state] = written.get(state, 0) + n

    cursor = 0
    while (
        step := stores.ledger.expand_page(
            the_alert.alert_id, the_alert, TOPIC, cursor, page_size, count
        )
    ) is not None:
        cursor = step[0]
    return written


def ids_of(stores: Stores, blast_id: str, channel: str = "sms") -> list[int]:
    return stores.ledger.open_ids(blast_id, channel, RowState.PENDING, 0, 10_000)


def claimed_texts_and_emails(stores: Stores, emails: int = 2) -> tuple[list[int], list[int]]:
    """Blast a-1 to supporters 1 and 2 by SMS and email, both texts and the first ``emails``
    emails claimed; (the SMS row ids, the email row ids)."""
    seed(stores, [person(1), person(2)])
    expand_all(stores, alert(email={"subject": "S", "text": "T"}))
    sms, email = ids_of(stores, "a-1"), ids_of(stores, "a-1", "email")
    stores.ledger.claim("a-1", "sms", sms)
    stores.ledger.claim("a-1", "email", email[:emails])
    return sms, email


# --- audience --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "matches"),
    [
        ("no_sms", frozenset({"exact"})),  # "_" is a name character, not LIKE's "any one"
        ("%", frozenset()),  # "%" is a (bad) tag name, not "everyone"
        ("volunteer", frozenset({"exact", "both"})),
    ],
)
def test_audience_tags_match_whole_tags_only(
    stores: Stores, wanted: str, matches: frozenset[str]
) -> None:
    # Given supporters tagged "no_sms", "noxsms", "volunteer;no_sms" and nothing
    seed(
        stores,
        [
            person(1, first_name="exact", tags=";no_sms;volunteer;"),
            person(2, first_name="lookalike", tags=";noxsms;"),
            person(3, first_name="both", tags=";volunteer;"),
            person(4, first_name="untagged", tags=None),
        ],
    )
    # When a blast targets the tag
    the_alert = alert(audience={"tags": [wanted]})
    expand_all(stores, the_alert)
    # Then exactly the supporters holding that whole tag are targeted
    ids = ids_of(stores, the_alert.alert_id)
    names = {c.fields["first_name"] for c in stores.ledger.claim(the_alert.alert_id, "sms", ids)}
    assert names == matches


def test_expansion_households_consent_suppression_and_filters(stores: Stores) -> None:
    # Given a household sharing one phone, one supporter without SMS consent, one suppressed,
    # one without a phone and one on another topic
    seed(
        stores,
        [
            person(1),
            person(2, phone="+14155551001"),  # same phone as 1: duplicate
            person(3, sms_opt_in=False),
            person(4),
            person(5, phone=None),
            person(6, state="NY"),
            person(7, topics=("other",)),
            *[person(10 + i) for i in range(7)],
        ],
    )
    stores.suppressions.add("sms", "+14155551004", reason="stop", source="test")
    # When the topic is expanded in pages of 3
    the_alert = alert()
    written = expand_all(stores, the_alert, page_size=3)
    # Then each state is decided once, whatever the page boundaries
    assert written == {RowState.PENDING: 9, RowState.DUPLICATE: 1, RowState.SUPPRESSED: 1}
    counts = stores.blasts.state_counts([the_alert.alert_id])[the_alert.alert_id]
    assert counts == {"sms": written}
    # And expanding again writes nothing new
    assert expand_all(stores, the_alert) == {}
    stats = stores.ledger.audience_stats(the_alert, TOPIC)
    assert stats == {
        "audience": 13,
        "sms": {"eligible": 11, "no_consent": 1, "no_address": 1},
    }


def test_state_and_postal_filters_and_test_recipients(stores: Stores) -> None:
    seed(
        stores,
        [
            person(1, state="PA", postal_code="15213"),
            person(2, state="PA", postal_code="19104"),
            person(3, state="NY", postal_code="15213"),
            person(4, topics=()),
        ],
    )
    filtered = alert("f", audience={"states": ["PA"], "postal_codes": ["15213"]})
    expand_all(stores, filtered)
    assert len(ids_of(stores, "f")) == 1
    # A test send reaches the named supporter wherever they subscribe
    test = alert("t", test_recipients=["+14155551004", "P2@example.org"])
    expand_all(stores, test)
    assert len(ids_of(stores, "t")) == 2


@pytest.mark.parametrize(
    ("page_size", "expected"),
    [
        # Given 5 subscribers and a filtered-out one: pages of 2 end with a short page of 1
        (2, [(2, False), (2, False), (1, True)]),
        # Pages exactly as large as what is left cannot know it: one more ask finds nothing
        (5, [(5, False)]),
        (6, [(5, True)]),
        # A page larger than the whole audience is its first and last
        (10, [(5, True)]),
    ],
)
def test_a_page_says_when_the_audience_ended_in_it(
    stores: Stores, page_size: int, expected: list[tuple[int, bool]]
) -> None:
    seed(stores, [person(n) for n in range(1, 6)] + [person(6, topics=())])
    the_alert = alert("last")
    stores.blasts.create(the_alert, TOPIC, None)
    # When the blast is expanded page by page until the store says it ended, or has none
    pages: list[tuple[int, bool]] = []
    cursor = 0
    while (
        step := stores.ledger.expand_page("last", the_alert, TOPIC, cursor, page_size, no_op)
    ) is not None:
        pages.append((len(step.pages["sms"].pending_ids), step.last))
        cursor = step.upto
        if step.last:
            break
    # Then each page says whether it was the last, and the short one always is
    assert pages == expected
    # And nothing is left after a last page: asking again writes nothing
    assert stores.ledger.expand_page("last", the_alert, TOPIC, cursor, 10, no_op) is None
    assert len(ids_of(stores, "last")) == 5


def no_op(_channel: str, _page: ExpandedPage) -> None:
    pass


# --- claims and outcomes ---------------------------------------------------------------------


def test_a_row_is_claimed_once_and_outcomes_only_move_claimed_rows(stores: Stores) -> None:
    seed(stores, [person(i) for i in range(1, 5)])
    the_alert = alert()
    expand_all(stores, the_alert)
    ids = ids_of(stores, "a-1")
    # When two workers claim the same batch
    first = stores.ledger.claim("a-1", "sms", ids)
    second = stores.ledger.claim("a-1", "sms", ids)
    # Then only the first gets the rows, with their template fields, in key order
    assert [c.supporter_id for c in first] == sorted(ids)
    assert second == []
    assert first[0].fields["first_name"] == "P1" and first[0].attempts == 1
    # When outcomes are written, one for a row that is not claimed any more
    outcomes = [
        Outcome(ids[0], RowState.SENT, provider_message_id="SM1", segments=1),
        Outcome(ids[1], RowState.FAILED, error_code="21211", error="bad"),
        Outcome(ids[2], RowState.DEFERRED, deferred_until=datetime.now(UTC) - timedelta(seconds=1)),
    ]
    stores.ledger.record("a-1", "sms", outcomes)
    counts = stores.blasts.state_counts(["a-1"])["a-1"]["sms"]
    assert counts == {
        RowState.SENT: 1,
        RowState.FAILED: 1,
        RowState.DEFERRED: 1,
        RowState.SENDING: 1,
    }
    # And a second write of an outcome changes nothing (the row is no longer sending)
    stores.ledger.record("a-1", "sms", [Outcome(ids[0], RowState.FAILED)])
    assert stores.blasts.state_counts(["a-1"])["a-1"]["sms"][RowState.SENT] == 1


def test_a_claim_reads_only_the_fields_it_is_asked_for(stores: Stores) -> None:
    # Given supporters with names, a state and custom fields
    rows = [person(i, state="PA", fields={"ward": str(i)}) for i in (1, 2)]
    stores.supporters.write_batch(rows, COLUMNS | {"fields"})
    expand_all(stores, alert())
    ids = ids_of(stores, "a-1")
    # When a claim asks for the custom fields and the first name (and a name no column has)
    claimed = stores.ledger.claim("a-1", "sms", ids, ("fields", "first_name", "nickname"))
    # Then each claim carries exactly those known fields, custom ones whole
    assert [c.fields for c in claimed] == [
        {"first_name": "P1", "fields": {"ward": "1"}},
        {"first_name": "P2", "fields": {"ward": "2"}},
    ]
    # And a claim asking for no field still claims, with first contact and destination
    stores.ledger.record("a-1", "sms", [Outcome(i, RowState.PENDING) for i in ids])
    bare = stores.ledger.claim("a-1", "sms", ids, ())
    assert [(c.fields, c.destination, c.attempts) for c in bare] == [
        ({}, "+14155551001", 2),
        ({}, "+14155551002", 2),
    ]


def test_release_stuck_close_and_open_queries(stores: Stores) -> None:
    seed(stores, [person(i) for i in range(1, 5)])
    the_alert = alert()
    expand_all(stores, the_alert)
    stores.blasts.finish_expansion("a-1", {})
    ids = ids_of(stores, "a-1")
    stores.ledger.claim("a-1", "sms", ids[:2])
    past = datetime.now(UTC) - timedelta(seconds=1)
    stores.ledger.record("a-1", "sms", [Outcome(ids[0], RowState.DEFERRED, deferred_until=past)])
    # Deferred rows whose window ended go back to pending, once
    assert stores.ledger.release_due(datetime.now(UTC), 10) == [("a-1", "sms", ids[0])]
    assert stores.ledger.release_due(datetime.now(UTC), 10) == []
    # A row claimed long ago and never settled is failed, not re-sent
    assert stores.ledger.fail_stuck("a-1", datetime.now(UTC) - timedelta(hours=1)) == 0
    assert stores.ledger.fail_stuck("a-1", datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert stores.ledger.has_state("a-1", RowState.FAILED)
    # Closing pending rows (a batch of an ended blast, then the whole blast)
    assert stores.ledger.close_ids("a-1", "sms", ids[2:3], RowState.EXPIRED) == 1
    assert stores.ledger.has_open("a-1")
    assert stores.ledger.close_open("a-1", RowState.CANCELED, [RowState.PENDING]) == 2
    assert not stores.ledger.has_open("a-1")


def test_first_contact_is_taken_once(stores: Stores) -> None:
    seed(stores, [person(1), person(2)])
    the_alert = alert()
    expand_all(stores, the_alert)
    ids = ids_of(stores, "a-1")
    assert stores.ledger.claim_first_contact(ids) == set(ids)
    assert stores.ledger.claim_first_contact(ids) == set()
    stores.ledger.release_first_contact(ids[:1])
    assert stores.ledger.claim_first_contact(ids) == set(ids[:1])


def test_dry_run_counts_and_leaves_the_ledger_empty(stores: Stores) -> None:
    seed(stores, [person(1), person(2, phone="+14155551001"), person(3, timezone="America/Denver")])
    the_alert = alert("d", dry_run=True)
    stores.blasts.create(the_alert, TOPIC, None)
    seen: dict[str, Any] = {}

    def estimate(pending: PendingView) -> dict[str, Any]:
        seen["count"] = pending.pending_count("sms")
        seen["sample"] = sorted(f["first_name"] for f, _ in pending.sms_sample(10))
        seen["zones"] = pending.sms_by_timezone()
        return {"ok": True}

    found = stores.ledger.dry_run("d", the_alert, TOPIC, 2, estimate, lambda: None)
    assert found.would_send == {"sms": {RowState.PENDING: 2, RowState.DUPLICATE: 1}}
    assert found.estimate == {"ok": True} and found.pages == 2
    assert seen == {"count": 2, "sample": ["P1", "P3"], "zones": {None: 1, "America/Denver": 1}}
    assert stores.blasts.state_counts(["d"]) == {"d": {}}


# --- blasts, topics, suppressions, supporters ------------------------------------------------


def test_blasts_are_created_once_and_move_only_from_allowed_statuses(stores: Stores) -> None:
    the_alert = alert()
    record, created = stores.blasts.create(the_alert, TOPIC, "m-1")
    again, created_again = stores.blasts.create(the_alert, TOPIC, "m-2")
    assert created and not created_again and again.created_at == record.created_at
    assert record.status == BlastStatus.EXPANDING and record.alert == the_alert
    assert stores.blasts.status("a-1") == (BlastStatus.EXPANDING, False)
    assert not stores.blasts.set_status(
        "a-1", BlastStatus.COMPLETED, only_from=[BlastStatus.SENDING]
    )
    assert stores.blasts.finish_expansion("a-1", {"audience": 0})
    assert stores.blasts.status("a-1") == (BlastStatus.SENDING, True)
    assert stores.blasts.ids_with_status(BlastStatus.SENDING, expanded=True) == ["a-1"]
    assert stores.blasts.set_status("a-1", BlastStatus.COMPLETED, only_from=[BlastStatus.SENDING])
    done = stores.blasts.get("a-1")
    assert done is not None and done.ended and done.ended_at is not None
    assert [r.blast_id for r in stores.blasts.recent()] == ["a-1"]
    assert stores.blasts.get("missing") is None


def test_topics_register_idempotently_with_subscriber_counts(stores: Stores) -> None:
    assert stores.topics.register("news")
    assert not stores.topics.register("news", "arn:aws:sns:us-east-1:1:rapid-alert-news")
    seed(stores, [person(1, topics=("news",)), person(2, topics=("news", "x"))])
    listed = {t.name: (t.sns_topic_arn, t.subscribers) for t in stores.topics.list()}
    assert listed == {"news": ("arn:aws:sns:us-east-1:1:rapid-alert-news", 2), "x": (None, 1)}
    assert stores.topics.names() == ["news", "x"]


def test_suppressions_add_remove_lookup(stores: Stores) -> None:
    assert stores.suppressions.add("email", "Jane@Example.org", reason="bounce", source="sg")
    assert not stores.suppressions.add("email", "jane@example.org", reason="x", source="y")
    found = stores.suppressions.lookup("email", "JANE@example.org")
    assert found is not None and (found.reason, found.source) == ("bounce", "sg")
    among = stores.suppressions.suppressed_among("email", ["jane@example.org", "b@example.org"])
    assert among == {"jane@example.org"}
    assert stores.suppressions.remove("email", "jane@example.org", source="op")
    assert not stores.suppressions.remove("email", "jane@example.org", source="op")
    assert stores.suppressions.lookup("email", "jane@example.org") is None


def test_supporter_batches_insert_update_and_replace_topics(stores: Stores) -> None:
    first = stores.supporters.write_batch(
        [person(1, topics=("a", "b")), person(2)], frozenset({"phone", "topics", "first_name"})
    )
    assert (first.inserted, first.updated, first.new_topics) == (2, 0, {"a", "b", TOPIC})
    second = stores.supporters.write_batch(
        [person(1, first_name="Renamed", topics=("b",))], frozenset({"first_name", "topics"})
    )
    assert (second.inserted, second.updated, second.new_topics) == (0, 1, frozenset())
    assert {t.name: t.subscribers for t in stores.topics.list()} == {"a": 0, "b": 1, TOPIC: 1}


# --- provider events and reports -------------------------------------------------------------


def test_delivery_events_settle_park_and_dedupe(stores: Stores) -> None:
    sms, email = claimed_texts_and_emails(stores)
    now = datetime.now(UTC)
    events = stores.delivery_events
    # A status that overtakes its send is parked, a failure outranking a delivery, and applied
    # when the send is recorded
    events.park_sms_status("SM2", {"state": RowState.FAILED, "updated_at": now, "error": "x"})
    events.park_sms_status("SM2", {"state": RowState.DELIVERED, "updated_at": now})
    stores.ledger.record(
        "a-1",
        "sms",
        [
            Outcome(sms[0], RowState.SENT, provider_message_id="SM1"),
            Outcome(sms[1], RowState.SENT, provider_message_id="SM2"),
        ],
    )
    assert events.sms_destination("SM1") == "+14155551001"
    assert events.sms_destination("SM9") is None
    assert events.settle_sms("SM1", {"state": RowState.DELIVERED, "updated_at": now})
    assert not events.settle_sms("SM1", {"state": RowState.FAILED, "updated_at": now})
    sms_counts = stores.blasts.state_counts(["a-1"])["a-1"]["sms"]
    assert sms_counts == {RowState.DELIVERED: 1, RowState.FAILED: 1}
    # Inbound messages are stored once per MessageSid
    message = {"from_number": "+1", "body": "STOP", "message_sid": "IN1", "received_at": now}
    assert not events.inbound_seen("IN1")
    assert events.record_inbound(message) and not events.record_inbound(message)
    assert events.inbound_seen("IN1")
    # SendGrid outcomes refine sent emails; applied event ids are remembered
    stores.ledger.record("a-1", "email", [Outcome(i, RowState.SENT) for i in email])
    events.apply_email_outcomes(
        [("a-1", email[0], now)], [("a-1", email[1], "550", "bounce")], "sendgrid", ["e1"], now
    )
    assert events.seen_events("sendgrid", ["e1", "e2"]) == {"e1"}
    email_counts = stores.blasts.state_counts(["a-1"])["a-1"]["email"]
    assert email_counts == {RowState.DELIVERED: 1, RowState.FAILED: 1}


def test_reports_count_live_blasts(stores: Stores) -> None:
    seed(stores, [person(1), person(2), person(3)])
    expand_all(stores, alert(priority="urgent"))
    ids = ids_of(stores, "a-1")
    stores.ledger.claim("a-1", "sms", ids[:1])
    stores.ledger.record("a-1", "sms", [Outcome(ids[0], RowState.FAILED, error_code="30007")])
    reports = stores.reports
    reports.ping()
    backlog = reports.lane_backlog(
        [BlastStatus.EXPANDING, BlastStatus.SENDING], ["sms", "email"], [RowState.PENDING]
    )
    assert backlog == {("sms", "urgent"): 2}
    rows, filtered = reports.live_outcomes(
        [BlastStatus.EXPANDING], ["sms"], [RowState.FAILED], ["30007", "30034"]
    )
    assert (rows, filtered) == ({("sms", RowState.FAILED): 1}, 1)
    fleet = reports.fleet_counts()
    assert fleet.blasts == {BlastStatus.EXPANDING: 1}
    assert fleet.open_rows == {("sms", RowState.PENDING): 2, ("sms", RowState.FAILED): 1}


# --- the domain on any backend ---------------------------------------------------------------


def test_expander_runs_on_every_backend(stores: Stores) -> None:
    from messaging.blasts.expansion import Expander
    from messaging.memory import InMemorySendQueue

    # Given twelve subscribers, one of them a household duplicate
    seed(stores, [person(i) for i in range(1, 12)] + [person(20, phone="+14155551001")])
    record, _ = stores.blasts.create(alert(email={"subject": "S", "text": "T"}), TOPIC, None)
    queue = InMemorySendQueue()
    # When the blast is expanded in small pages
    result = Expander(stores.ledger, stores.blasts, queue, page_size=5).expand(record)
    # Then every pending row is queued once, and the blast moves on to sending
    queued = {(w.channel, sid) for w in queue.items for sid in w.supporter_ids}
    assert result.pending == {"sms": 11, "email": 12}
    assert len(queued) == 23
    assert stores.blasts.status(record.blast_id) == (BlastStatus.SENDING, True)


def test_provider_events_service_runs_on_every_backend(stores: Stores) -> None:
    from messaging.sending.delivery_events import DeliveryEvents, SmsStatus

    # Given two texts sent and one email sent
    sms, email = claimed_texts_and_emails(stores, emails=1)
    sent = [Outcome(sid, RowState.SENT, provider_message_id=f"SM{sid}") for sid in sms]
    stores.ledger.record("a-1", "sms", sent)
    stores.ledger.record("a-1", "email", [Outcome(email[0], RowState.SENT)])
    events = DeliveryEvents(stores.delivery_events, stores.suppressions)
    # When Twilio reports one delivered and one refused as opted out (21610)
    assert events.sms_status(SmsStatus(f"SM{sms[0]}", "delivered")) == RowState.DELIVERED
    assert events.sms_status(SmsStatus(f"SM{sms[1]}", "undelivered", "21610")) == RowState.FAILED
    # Then the second number is suppressed, and a repeated callback changes nothing
    assert stores.suppressions.lookup("sms", "+14155551002") is not None
    assert events.sms_status(SmsStatus(f"SM{sms[0]}", "delivered")) == "unchanged"
    # When SendGrid delivers the same bounce event twice
    bounce = {
        "event": "bounce",
        "sg_event_id": "ev-1",
        "email": "P1@example.org",
        "blast_id": "a-1",
        "supporter_id": str(email[0]),
        "status": "5.1.1",
    }
    first, again = events.email_events([bounce]), events.email_events([bounce])
    # Then it is applied once: the address is suppressed and the row failed
    assert (first.suppressed, first.failed, again.duplicates) == (1, 1, 1)
    assert stores.suppressions.lookup("email", "p1@example.org") is not None
    counts = stores.blasts.state_counts(["a-1"])["a-1"]
    assert counts["email"] == {RowState.FAILED: 1, RowState.PENDING: 1}


# --- quiet hours fallback, frequency caps, topic quiet windows (issue #15) -------------------


def test_capped_rows_are_written_capped_in_the_page(stores: Stores) -> None:
    # Given four subscribers, and a cap screen that finds supporters 2 and 4 over their cap
    seed(stores, [person(i) for i in range(1, 5)])
    the_alert = alert()
    stores.blasts.create(the_alert, TOPIC, None)
    asked: list[tuple[str, list[int]]] = []

    def capped(channel: str, pending: list[int]) -> set[int]:
        asked.append((channel, list(pending)))
        return set(pending[1::2])  # the second and fourth

    step = stores.ledger.expand_page(
        "a-1", the_alert, TOPIC, 0, 100, lambda *_: None, capped=capped
    )
    assert step is not None
    page = step[1]["sms"]
    # Then the screen saw the page's pending rows, and its answer is written capped
    assert [len(ids) for _, ids in asked] == [4]
    assert page.by_state == {RowState.PENDING: 2, RowState.CAPPED: 2}
    assert page.pending_ids == sorted(asked[0][1][0::2])
    assert stores.blasts.state_counts(["a-1"])["a-1"]["sms"] == page.by_state
    # And a dry run counts them the same way and writes nothing
    dry = alert("d", dry_run=True)
    stores.blasts.create(dry, TOPIC, None)
    found = stores.ledger.dry_run("d", dry, TOPIC, 100, lambda _: {}, lambda: None, capped=capped)
    assert found.would_send == {"sms": {RowState.PENDING: 2, RowState.CAPPED: 2}}
    assert stores.blasts.state_counts(["d"]) == {"d": {}}


def test_email_fallback_reaches_consenting_unsuppressed_addresses_once(stores: Stores) -> None:
    # Given a blast with both parts: 1 and 2 (a household sharing one address) consent to
    # email, 3 does not, 4's address is suppressed, 5 consents after the blast was expanded
    seed(
        stores,
        [
            person(1),
            person(2, email="p1@example.org"),
            person(3, email_opt_in=False),
            person(4),
            person(5, email_opt_in=False),
        ],
    )
    stores.suppressions.add("email", "p4@example.org", reason="bounce", source="sg")
    the_alert = alert(email={"subject": "S", "text": "T"}, quiet_hours_fallback="email")
    expand_all(stores, the_alert)
    sms = ids_of(stores, "a-1")
    email_before = ids_of(stores, "a-1", "email")
    assert len(sms) == 5 and len(email_before) == 1
    seed(stores, [person(5)])
    # When the SMS of all five would wait for quiet hours
    reached, added = stores.ledger.email_fallback("a-1", sms)
    # Then 1 and 2 are reached by the email the blast already holds, 5 by a new pending row,
    # and 3 (no consent) and 4 (suppressed) are not
    assert added == [sms[4]]
    assert reached == {sms[0], sms[1], sms[4]}
    assert sorted(ids_of(stores, "a-1", "email")) == sorted([*email_before, sms[4]])
    # And asking again writes nothing more
    assert stores.ledger.email_fallback("a-1", sms) == (reached, [])
    # And an email already sent still reaches them: no second row
    stores.ledger.claim("a-1", "email", email_before)
    stores.ledger.record("a-1", "email", [Outcome(email_before[0], RowState.SENT)])
    assert stores.ledger.email_fallback("a-1", sms[:2]) == ({sms[0], sms[1]}, [])


def test_dry_run_sees_who_would_fall_back_per_time_zone(stores: Stores) -> None:
    seed(
        stores,
        [
            person(1, timezone="America/New_York"),
            person(2, timezone="America/New_York", email_opt_in=False),
            person(3, timezone=None),
            person(4, timezone=None, email="p3@example.org"),  # household: p3's email goes
        ],
    )
    the_alert = alert("d", dry_run=True, email={"subject": "S", "text": "T"})
    stores.blasts.create(the_alert, TOPIC, None)
    seen: dict[str, Any] = {}

    def estimate(pending: PendingView) -> dict[str, Any]:
        seen["with_email"] = pending.sms_with_email_by_timezone()
        return {}

    stores.ledger.dry_run("d", the_alert, TOPIC, 10, estimate, lambda: None)
    assert seen["with_email"] == {"America/New_York": 1, None: 2}


def test_topics_keep_a_quiet_window_of_their_own(stores: Stores) -> None:
    from config.settings import QuietHours

    late = QuietHours(time(23, 0), time(8, 0))
    stores.topics.register("debate")
    stores.topics.register("news")
    # When one topic gets its own window
    assert stores.topics.set_quiet_hours("debate", late)
    assert not stores.topics.set_quiet_hours("missing", late)
    # Then it reads back, the other topic keeps the fleet's, and None restores the fleet's
    assert stores.topics.quiet_hours("debate") == late
    assert stores.topics.quiet_hours("news") is None
    assert {t.name: t.quiet_hours for t in stores.topics.list()} == {"debate": late, "news": None}
    assert stores.topics.set_quiet_hours("debate", None)
    assert stores.topics.quiet_hours("debate") is None
