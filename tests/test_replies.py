"""Replies (contract §12): stored with their supporter and blast, acted on, reviewed.

The store is tested against its memory twin, SQLite and PostgreSQL; the handler's policy
(suppress, confirm once, START's scope, HELP, review) on the memory twins; the whole path
from a signed Twilio webhook to the suppression list, the TwiML answer, ``rapid replies
list`` and ``GET /api/replies`` against real PostgreSQL and Redis in ``test_replies_web.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import Engine

from messaging.compliance.replies import (
    SOURCE,
    InboundReply,
    ReplyHandler,
    ReplyTexts,
    reply_document,
)
from messaging.errors import InputError
from messaging.ports import NewReply, ReplyStore
from messaging.store.db import create_db_engine, migrate
from messaging.store.memory.replies import MemoryReplyStore
from messaging.store.memory.suppressions import MemorySuppressionList
from messaging.store.memory.tables import MemoryTables
from messaging.store.schema import blasts, supporters
from messaging.store.sql.replies import SqlReplyStore
from tests.factories import add_delivery
from tests.fleet import rapid
from tests.test_web import ORG as WEB_ORG
from tests.test_web import Web, inbound_params, make_web  # noqa: F401 - the fixture

PHONE = "+14155550100"
OTHER_PHONE = "+14155550199"
T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TEXTS = ReplyTexts("Acme Action", "acme.example.org/help")


def new_reply(sid: str | None, kind: str = "other", **kw: object) -> NewReply:
    values: dict[str, object] = {
        "message_sid": sid,
        "from_number": PHONE,
        "to_number": "+15005550006",
        "body": "hello",
        "kind": kind,
        "reason": "",
        "supporter_id": None,
        "blast_id": None,
        "received_at": T0,
    }
    values.update(kw)
    return NewReply(**values)  # type: ignore[arg-type]


# --- the store, on every backend --------------------------------------------------------------


@pytest.fixture(
    params=[
        "memory",
        pytest.param("sqlite", marks=pytest.mark.integration),
        pytest.param("postgresql", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReplyStore]:
    """The reply store: the memory twin, then SQL on SQLite and PostgreSQL."""
    if request.param == "memory":
        yield MemoryReplyStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rapid.db'}"
        engine = create_db_engine(url)
        migrate(engine)
    else:
        engine = create_db_engine(request.getfixturevalue("pg_url"))
    yield SqlReplyStore(engine)
    engine.dispose()


def test_a_message_sid_is_stored_once(store: ReplyStore) -> None:
    # Given a reply stored with its MessageSid
    first = store.add(new_reply("SM1", body="STOP", kind="opt_out", reason="stop"))
    assert first is not None and first.id > 0 and first.body == "STOP"
    # When the same MessageSid comes again, then it is not stored twice
    assert store.seen("SM1") and not store.seen("SM2")
    assert store.add(new_reply("SM1")) is None
    assert [r.body for r in store.replies()] == ["STOP"]


def test_listing_is_newest_first_and_filters_what_awaits_review(store: ReplyStore) -> None:
    # Given three replies, one needing review
    store.add(new_reply("SMa", received_at=T0))
    review = store.add(new_reply("SMb", "needs_review", received_at=T0 + timedelta(minutes=1)))
    store.add(new_reply("SMc", from_number=OTHER_PHONE, received_at=T0 + timedelta(minutes=2)))
    assert review is not None and review.needs_review
    # Then the list is newest first, and --needs-review shows only that one
    assert [r.message_sid for r in store.replies()] == ["SMc", "SMb", "SMa"]
    assert [r.message_sid for r in store.replies(needs_review=True)] == ["SMb"]
    assert [r.message_sid for r in store.replies(from_number=PHONE)] == ["SMb", "SMa"]
    assert [r.message_sid for r in store.replies(limit=1)] == ["SMc"]
    # When a person reviews it, then it is no longer awaiting review
    done = store.review(review.id, "not_opt_out", "alice", T0 + timedelta(hours=1))
    assert done is not None and not done.needs_review
    assert (done.review_verdict, done.reviewed_by) == ("not_opt_out", "alice")
    assert store.replies(needs_review=True) == []
    assert store.review(99_999, "opt_out", "alice", T0) is None


def test_replies_are_counted_per_blast_and_kind(store: ReplyStore) -> None:
    # Given replies answering two blasts
    for i, (blast, kind) in enumerate(
        [("b1", "opt_out"), ("b1", "opt_out"), ("b1", "other"), ("b2", "opt_out"), (None, "help")]
    ):
        store.add(new_reply(f"SM{i}", kind, blast_id=blast))
    # Then each blast's replies are counted by kind (what the opt-out-rate breaker reads)
    assert store.counts("b1") == {"opt_out": 2, "other": 1}
    assert store.counts("b2") == {"opt_out": 1}
    assert store.counts("b3") == {}


def _supporter(engine: Engine, sid: int, phone: str) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            supporters.insert().values(
                id=sid, external_id=f"x{sid}", phone=phone, created_at=now, updated_at=now
            )
        )


def _sms(engine: Engine, blast_id: str, sid: int, state: str, sent_at: datetime | None) -> None:
    with engine.begin() as conn:
        if conn.execute(blasts.select().where(blasts.c.blast_id == blast_id)).first() is None:
            conn.execute(
                blasts.insert().values(
                    blast_id=blast_id,
                    topic="news",
                    status="sending",
                    priority="normal",
                    alert="{}",
                    created_at=sent_at or T0,
                    updated_at=sent_at or T0,
                )
            )
    add_delivery(
        engine, blast_id, sid, PHONE, state=state, created_at=T0, updated_at=T0, sent_at=sent_at
    )


def test_a_reply_answers_the_last_blast_sent_to_that_phone(engine: Engine) -> None:
    store = SqlReplyStore(engine)
    # Given nobody with the phone, then nothing is found
    assert store.last_sms_to(PHONE) == (None, None)
    # Given a household of two sharing the phone, and nothing sent yet
    _supporter(engine, 1, PHONE)
    _supporter(engine, 2, PHONE)
    assert store.last_sms_to(PHONE) == (1, None)
    # Given blast b1 texted supporter 2 (1 was the household duplicate), then b2 texted 1,
    # and b3 has only a pending row for them
    _sms(engine, "b1", 2, "delivered", T0)
    _sms(engine, "b1", 1, "duplicate", None)
    _sms(engine, "b2", 1, "sent", T0 + timedelta(hours=1))
    _sms(engine, "b3", 1, "pending", None)
    # Then a reply answers b2, from supporter 1
    assert store.last_sms_to(PHONE) == (1, "b2")
    assert store.last_sms_to(OTHER_PHONE) == (None, None)


# --- the handler's policy, on the memory twins -------------------------------------------------


@pytest.fixture
def suppressions() -> MemorySuppressionList:
    return MemorySuppressionList(MemoryTables())


@pytest.fixture
def handler(suppressions: MemorySuppressionList) -> ReplyHandler:
    return ReplyHandler(MemoryReplyStore(), suppressions, TEXTS, clock=lambda: T0)


def test_an_opt_out_suppresses_at_once_and_is_confirmed_once(
    handler: ReplyHandler, suppressions: MemorySuppressionList
) -> None:
    # When a supporter writes "Stop."
    first = handler.receive(InboundReply(PHONE, "Stop.", message_sid="SM1"))
    # Then the number is suppressed as their own keyword opt-out, and confirmed once
    found = suppressions.lookup("sms", PHONE)
    assert found is not None and (found.reason, found.source) == ("stop", SOURCE)
    assert first.answer == (
        "Acme Action: You're unsubscribed and will get no more messages. "
        "Reply START to resubscribe. Help: acme.example.org/help"
    )
    # When they write "stop texting me" too, then no second confirmation
    second = handler.receive(InboundReply(PHONE, "stop texting me", message_sid="SM2"))
    assert second.suppressed and second.answer is None
    # When Twilio redelivers the first, then nothing is done or answered again
    again = handler.receive(InboundReply(PHONE, "Stop.", message_sid="SM1"))
    assert again.duplicate and again.answer is None
    assert len(handler.replies()) == 2


def test_no_confirmation_when_twilio_advanced_opt_out_answered(
    handler: ReplyHandler, suppressions: MemorySuppressionList
) -> None:
    # When Twilio recognised the keyword itself (OptOutType=STOP) and answered it
    outcome = handler.receive(InboundReply(PHONE, "Stop", message_sid="SM1", opt_out_type="STOP"))
    # Then the number is suppressed and we send nothing more
    assert suppressions.lookup("sms", PHONE) is not None and outcome.answer is None


def test_an_unclear_reply_is_suppressed_listed_and_a_later_stop_is_confirmed(
    handler: ReplyHandler,
    suppressions: MemorySuppressionList,
) -> None:
    # When a supporter writes "stop lying!"
    outcome = handler.receive(InboundReply(PHONE, "stop lying!", message_sid="SM1"))
    # Then they are suppressed until reviewed, listed for a person, and not answered
    found = suppressions.lookup("sms", PHONE)
    assert found is not None and found.reason == "review: stop" and outcome.answer is None
    assert [r.body for r in handler.replies(needs_review=True)] == ["stop lying!"]
    # When they then write STOP, then that opt-out is confirmed
    assert handler.receive(InboundReply(PHONE, "STOP", message_sid="SM2")).answer is not None


def test_review_not_opt_out_lifts_what_the_unclear_reply_suppressed(
    handler: ReplyHandler,
    suppressions: MemorySuppressionList,
) -> None:
    handler.receive(InboundReply(PHONE, "stop lying!", message_sid="SM1"))
    (reply,) = handler.replies(needs_review=True)
    # When a person decides it was not an opt-out
    done = handler.review(reply.id, "not_opt_out", "alice")
    # Then the suppression is lifted and the reply leaves the review list
    assert done.lifted and suppressions.lookup("sms", PHONE) is None
    assert handler.replies(needs_review=True) == []
    with pytest.raises(InputError):
        handler.review(reply.id, "maybe", "alice")
    with pytest.raises(InputError):
        handler.review(12345, "opt_out", "alice")


def test_review_keeps_the_suppression_when_the_phone_opted_out_clearly_since(
    handler: ReplyHandler,
    suppressions: MemorySuppressionList,
) -> None:
    # Given an unclear reply, then a clear STOP from the same phone
    handler.receive(InboundReply(PHONE, "cancel student debt", message_sid="SM1"))
    handler.receive(InboundReply(PHONE, "STOP", message_sid="SM2"))
    (unclear,) = handler.replies(needs_review=True)
    # When a person marks the unclear one "not an opt-out", then the STOP still holds
    assert not handler.review(unclear.id, "not_opt_out", "alice").lifted
    assert suppressions.lookup("sms", PHONE) is not None
    # And "opt_out" verdicts never lift
    handler.receive(InboundReply(OTHER_PHONE, "end the filibuster", message_sid="SM3"))
    (other,) = handler.replies(needs_review=True)
    assert not handler.review(other.id, "opt_out", "bob").lifted
    assert suppressions.lookup("sms", OTHER_PHONE) is not None


@pytest.mark.parametrize("body", ["START", "yes", "UNSTOP", "Start please"])
def test_start_lifts_the_phones_own_opt_out(
    handler: ReplyHandler, suppressions: MemorySuppressionList, body: str
) -> None:
    handler.receive(InboundReply(PHONE, "opt out", message_sid="SM1"))
    # When the same phone writes START (or YES, UNSTOP)
    outcome = handler.receive(InboundReply(PHONE, body, message_sid="SM2"))
    # Then its own opt-out is lifted
    assert outcome.lifted and suppressions.lookup("sms", PHONE) is None


@pytest.mark.parametrize(
    ("reason", "source"),
    [
        ("operator", "cli"),  # an operator's `rapid optout add`
        ("twilio-21610", "provider"),  # the carrier/Twilio refused the number
        ("twilio-21610", "twilio-callback"),
        ("spamreport", "sendgrid"),  # a complaint
    ],
)
def test_start_never_lifts_someone_elses_suppression(
    handler: ReplyHandler, suppressions: MemorySuppressionList, reason: str, source: str
) -> None:
    # Given a suppression an operator, the carrier or a complaint made
    suppressions.add("sms", PHONE, reason=reason, source=source)
    # When the phone writes START
    outcome = handler.receive(InboundReply(PHONE, "START", message_sid="SM1"))
    # Then it stays
    found = suppressions.lookup("sms", PHONE)
    assert not outcome.lifted and found is not None and found.source == source


def test_help_answers_with_org_contact_and_how_to_stop(
    handler: ReplyHandler, suppressions: MemorySuppressionList
) -> None:
    outcome = handler.receive(InboundReply(PHONE, "Help?", message_sid="SM1"))
    assert outcome.answer is not None
    for part in ("Acme Action", "acme.example.org/help", "Reply STOP to opt out"):
        assert part in outcome.answer
    # Twilio's Advanced Opt-Out answers HELP itself when it recognised it
    twilio = handler.receive(InboundReply(PHONE, "help", message_sid="SM2", opt_out_type="HELP"))
    assert twilio.answer is None
    # Nothing is suppressed by asking for help
    assert suppressions.lookup("sms", PHONE) is None


def test_other_text_is_kept_with_its_blast_and_does_nothing() -> None:
    store = MemoryReplyStore()
    store.last_sent[PHONE] = (7, "debate-1")
    handler = ReplyHandler(store, MemorySuppressionList(MemoryTables()), TEXTS, clock=lambda: T0)
    # When a supporter answers a blast with a question
    outcome = handler.receive(InboundReply(PHONE, "Where is the rally?", message_sid="SM1"))
    # Then it is stored with the supporter and the blast, and nothing else happens
    assert outcome.reply is not None and outcome.answer is None and not outcome.suppressed
    doc = reply_document(outcome.reply)
    assert (doc["supporter_id"], doc["blast_id"], doc["kind"]) == (7, "debate-1", "other")
    assert handler.counts("debate-1") == {"other": 1}


# --- from the outside: signed Twilio webhooks, real PostgreSQL and Redis, the CLI --------------

#: The issue's wordings: each once got a 200 and no suppression.
ISSUE_WORDINGS = [
    "Stop.",
    "STOP!",
    "opt out",
    "Opt-out",
    "stop texting me",
    "please stop",
    "ＳＴＯＰ",
    "ST\u200bOP",
    "No me envíen más",
]


@pytest.fixture
def web(request: pytest.FixtureRequest) -> Web:
    """``rapid web`` on real PostgreSQL and Redis, with ORG_HELP_CONTACT set."""
    server: Web = request.getfixturevalue("make_web")(org_help_contact="acme.example.org/help")
    return server


def _answer(response: httpx.Response) -> str | None:
    """The text of the TwiML reply's one <Message>, if any."""
    assert response.status_code == 200 and "xml" in response.headers["content-type"]
    messages = ElementTree.fromstring(response.text).findall("Message")  # noqa: S314 - ours
    assert len(messages) <= 1
    return messages[0].text if messages else None


@pytest.mark.integration
@pytest.mark.parametrize("body", ISSUE_WORDINGS)
def test_every_wording_of_the_issue_suppresses_and_is_confirmed(web: Web, body: str) -> None:
    # When a supporter replies in their own words (a signed Twilio webhook)
    response = web.twilio("/webhooks/twilio/inbound", inbound_params(body, "SM1"))
    # Then the number is suppressed at once and the TwiML reply is the one confirmation
    found = web.app.suppressions.lookup("sms", PHONE)
    assert found is not None and found.source == SOURCE
    assert _answer(response) == (
        f"{WEB_ORG}: You're unsubscribed and will get no more messages. "
        "Reply START to resubscribe. Help: acme.example.org/help"
    )
    # And a replayed webhook is neither acted on nor answered again
    assert _answer(web.twilio("/webhooks/twilio/inbound", inbound_params(body, "SM1"))) is None


@pytest.mark.integration
def test_twilio_advanced_opt_out_is_not_confirmed_twice(web: Web) -> None:
    # When Twilio's Advanced Opt-Out recognised the keyword and answered it already
    params = {**inbound_params("Cancel", "SM1"), "OptOutType": "STOP"}
    response = web.twilio("/webhooks/twilio/inbound", params)
    # Then we suppress and send nothing more
    assert _answer(response) is None and web.app.suppressions.lookup("sms", PHONE) is not None


@pytest.mark.integration
def test_help_and_start_over_http(web: Web) -> None:
    # HELP names the org, the help contact and how to stop
    answer = _answer(web.twilio("/webhooks/twilio/inbound", inbound_params("HELP", "SMh")))
    assert answer is not None and WEB_ORG in answer and "acme.example.org/help" in answer
    assert answer.endswith("Reply STOP to opt out.")
    # START does not lift an operator's suppression
    web.app.suppressions.add("sms", PHONE, reason="operator", source="cli")
    web.twilio("/webhooks/twilio/inbound", inbound_params("START", "SMs"))
    found = web.app.suppressions.lookup("sms", PHONE)
    assert found is not None and found.source == "cli"


@pytest.mark.integration
def test_a_reply_is_stored_with_its_supporter_and_blast_and_reviewed_by_cli(web: Web) -> None:
    engine = web.app.engine
    # Given supporter 1 with the phone, texted by blast b1 and then b2
    _supporter(engine, 1, PHONE)
    _sms(engine, "b1", 1, "delivered", T0)
    _sms(engine, "b2", 1, "sent", T0 + timedelta(hours=1))
    # When they reply "stop lying!" to it
    response = web.twilio("/webhooks/twilio/inbound", inbound_params("stop lying!", "SMr"))
    # Then nothing is answered, the number is suppressed until reviewed, and the reply is
    # listed for review with its supporter and blast, by the CLI as JSON
    assert _answer(response) is None
    assert web.app.suppressions.lookup("sms", PHONE) is not None
    env = _cli_env(web)
    listed = json.loads(rapid(env, "replies", "list", "--needs-review", "--json").stdout)
    assert [(r["body"], r["kind"], r["supporter_id"], r["blast_id"]) for r in listed] == [
        ("stop lying!", "needs_review", 1, "b2")
    ]
    assert web.app.replies.counts("b2") == {"needs_review": 1}
    # When an operator reviews it as not an opt-out
    done = rapid(env, "replies", "review", str(listed[0]["id"]), "--verdict", "not_opt_out")
    assert "suppression lifted" in done.stdout
    # Then the number may be texted again and nothing awaits review
    assert web.app.suppressions.lookup("sms", PHONE) is None
    assert json.loads(rapid(env, "replies", "list", "--needs-review", "--json").stdout) == []
    everything = json.loads(rapid(env, "replies", "list", "--json").stdout)
    assert everything[0]["review"]["verdict"] == "not_opt_out"
    assert everything[0]["review"]["by"] == "alice"
    # A usage error and an unknown reply are one line on stderr, exit 2 and 1
    assert rapid(env, "replies", "review", "1", check=False).returncode == 2
    missing = rapid(env, "replies", "review", "999999", "--verdict", "opt_out", check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no reply 999999"


def _cli_env(web: Web) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPID_", "AWS_"))}
    settings = web.app.settings
    env.update(
        RAPID_PREFIX=settings.prefix,
        DATABASE_URL=settings.database_url,
        REDIS_URL=settings.redis_url,
        RAPID_OPERATOR="alice",
        RAPID_LOG_FORMAT="json",
    )
    return env


@pytest.mark.integration
def test_api_lists_replies_to_viewers_and_lets_approvers_review(web: Web) -> None:
    from messaging.access.operators import Role

    # Given an unclear reply and a clear one, and a viewer and an approver
    web.twilio("/webhooks/twilio/inbound", inbound_params("stop lying!", "SM1"))
    web.twilio(
        "/webhooks/twilio/inbound", {**inbound_params("Where?", "SM2"), "From": "+14155550123"}
    )
    _, viewer = web.app.operators.add("vera", Role.VIEWER, created_by="test")
    _, approver = web.app.operators.add("abe", Role.APPROVER, created_by="test")
    # When the viewer lists the replies awaiting review, then there is the unclear one
    listed = web.api("GET", "/api/replies?needs_review=true", token=viewer)
    assert listed.status_code == 200
    assert [r["body"] for r in listed.json()] == ["stop lying!"]
    assert [r["body"] for r in web.api("GET", "/api/replies", token=viewer).json()] == [
        "Where?",
        "stop lying!",
    ]
    assert web.api("GET", "/api/replies?limit=0", token=viewer).status_code == 422
    # When the viewer tries to review it, then 403 and nothing changes
    path = f"/api/replies/{listed.json()[0]['id']}/review"
    refused = web.api("POST", path, token=viewer, json={"verdict": "not_opt_out"})
    assert refused.status_code == 403
    assert web.app.suppressions.lookup("sms", PHONE) is not None
    # When the approver reviews it as not an opt-out, then the suppression is lifted
    done = web.api("POST", path, token=approver, json={"verdict": "not_opt_out"})
    assert done.status_code == 200 and done.json()["review"]["by"] == "abe"
    assert web.app.suppressions.lookup("sms", PHONE) is None
    assert web.api("GET", "/api/replies?needs_review=1", token=viewer).json() == []
    # And the lifted suppression is in the audit log, under the approver's name
    (entry,) = [e for e in web.app.audit.entries() if e.action == "optout.remove"]
    assert entry.actor == "abe"
    # Bad verdicts and unknown replies are refused
    assert web.api("POST", path, token=approver, json={"verdict": "x"}).status_code == 422
    missing = web.api(
        "POST", "/api/replies/999999/review", token=approver, json={"verdict": "opt_out"}
    )
    assert missing.status_code == 404
