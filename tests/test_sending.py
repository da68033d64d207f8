"""The senders on in-memory providers and queues, against the real ledger (SQLite, PostgreSQL)."""

from __future__ import annotations

import json

from sqlalchemy import Engine, select

from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.content.alert import parse_alert
from messaging.content.unsubscribe import UnsubscribeTokens
from messaging.errors import PermanentSendError, TransientSendError
from messaging.memory import InMemorySendQueue
from messaging.providers.memory import InMemoryEmail, InMemorySms
from messaging.sending.email import EmailConfig, EmailSender
from messaging.sending.sms import SmsSender
from messaging.store.schema import deliveries, supporters
from tests.factories import add_supporters, send_context, sms_config

SMS = sms_config(org_name="Acme for America")


def _setup(engine: Engine, alert: dict[str, object], people: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    ids = add_supporters(engine, people, topic="t")
    ctx, queue = send_context(engine)
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    return ctx, queue, ids


def _drain(queue: InMemorySendQueue, handlers: dict[str, object]) -> None:
    while queue.items:
        work = queue.items.pop(0)
        handlers[work.channel].process(work)  # type: ignore[attr-defined]


def _states(engine: Engine) -> dict[tuple[str, int], str]:
    with engine.connect() as conn:
        return {
            (c, int(s)): st
            for c, s, st in conn.execute(
                select(deliveries.c.channel, deliveries.c.supporter_id, deliveries.c.state)
            )
        }


def test_sms_first_contact_render_failure_and_opted_out_number(engine: Engine) -> None:
    # Given three supporters: one ordinary, one whose template fails, one Twilio says opted out
    alert = {
        "alert_id": "b1",
        "sms": {
            "body": "Hi {{ first_name }}{{ 1 / (postal_code | length - 5) if postal_code else '' }}"
        },
    }
    people = [
        {"phone": "+14155550100"},
        {"phone": "+14155550101", "postal_code": "15213"},
        {"phone": "+14155550102"},
    ]
    ctx, queue, ids = _setup(engine, alert, people)
    sms = InMemorySms(
        errors={"+14155550102": PermanentSendError("twilio 21610", code="21610", suppress=True)}
    )

    # When the queued work is processed
    _drain(queue, {"sms": SmsSender(ctx, sms, SMS)})

    # Then the ordinary supporter got one first-contact text, the others ended failed
    assert [m.to for m in sms.sent] == ["+14155550100"]
    assert sms.sent[0].body == "Acme for America: Hi Supporter0\nReply STOP to opt out"
    assert sms.sent[0].from_number == "+15005550006"
    got = _states(engine)
    assert got[("sms", ids[0])] == RowState.SENT
    assert (
        got[("sms", ids[1])] == RowState.FAILED
    )  # division by zero in the template: that one fails
    assert got[("sms", ids[2])] == RowState.FAILED
    # And the opted-out number is now suppressed, and the blast completed
    assert ctx.suppressions.suppressed_among("sms", ["+14155550102"]) == {"+14155550102"}  # type: ignore[attr-defined]
    assert ctx.blasts.get("b1").status == BlastStatus.COMPLETED  # type: ignore[union-attr]
    # And only the one who was really texted is marked as contacted
    with engine.connect() as conn:
        firsts = dict(conn.execute(select(supporters.c.id, supporters.c.first_sms_at)).all())
    assert firsts[ids[0]] is not None and firsts[ids[1]] is None and firsts[ids[2]] is None


def test_redelivered_work_sends_nothing_twice_and_stop_mid_blast_holds(engine: Engine) -> None:
    alert = {"alert_id": "b2", "sms": {"body": "Hello"}}
    people = [{"phone": f"+1415555{100 + i:04d}"} for i in range(5)]
    ctx, queue, ids = _setup(engine, alert, people)
    sms = InMemorySms()
    sender = SmsSender(ctx, sms, SMS)
    work = queue.items.pop(0)
    # Given a STOP that lands after expansion, before sending
    ctx.suppressions.add("sms", "+14155550102", reason="stop", source="test")  # type: ignore[attr-defined]
    # When the same work is delivered twice (SQS/dramatiq redelivery)
    sender.process(work)
    second = sender.process(work)
    # Then each number got at most one message, and the STOP held
    assert sorted(m.to for m in sms.sent) == [
        "+14155550100",
        "+14155550101",
        "+14155550103",
        "+14155550104",
    ]
    assert second.claimed == 0
    assert _states(engine)[("sms", ids[2])] == RowState.SUPPRESSED


def test_transient_errors_requeue_and_canceled_blast_closes_rows(engine: Engine) -> None:
    alert = {"alert_id": "b3", "sms": {"body": "Hello"}}
    ctx, queue, ids = _setup(engine, alert, [{"phone": "+14155550100"}, {"phone": "+14155550101"}])
    sms = InMemorySms(errors={"+14155550101": TransientSendError("twilio HTTP 500", code="500")})
    sender = SmsSender(ctx, sms, SMS)
    sender.process(queue.items.pop(0))
    # Then the failing recipient is pending again, re-queued with a delay
    assert _states(engine)[("sms", ids[1])] == RowState.PENDING
    assert (
        len(queue.items) == 1
        and queue.items[0].supporter_ids == (ids[1],)
        and queue.items[0].delay_s > 0
    )
    # When the blast is canceled before the retry runs
    ctx.blasts.set_status("b3", BlastStatus.CANCELED)
    ctx.control.set("b3", BlastStatus.CANCELED)
    sender.process(queue.items.pop(0))
    # Then that recipient ends canceled, never sent
    assert _states(engine)[("sms", ids[1])] == RowState.CANCELED
    assert [m.to for m in sms.sent] == ["+14155550100"]


def test_email_batch_footer_unsubscribe_and_one_bad_address(engine: Engine) -> None:
    alert = {
        "alert_id": "b4",
        "email": {
            "subject": "Hi {{ first_name }}",
            "text": "Watch <this>",
            "html": "<p>Hi {{ first_name }}</p>",
        },
    }
    people = [
        {"email": f"p{i}@example.org", "first_name": "<Zoë>" if i == 0 else f"P{i}"}
        for i in range(5)
    ]
    ctx, queue, ids = _setup(engine, alert, people)
    email = InMemoryEmail(
        errors={"p3@example.org": PermanentSendError("sendgrid HTTP 400", code="400")}
    )
    tokens = UnsubscribeTokens(b"k" * 32)
    config = EmailConfig(
        "Acme <news@acme.org>", "Acme", "1 Main St, Pittsburgh PA", "https://rr.acme.org", tokens
    )
    _drain(queue, {"email": EmailSender(ctx, email, config)})
    # Then everyone but the bad address got one email; the bad one failed alone
    assert sorted(r.to for r in email.sent) == [
        "p0@example.org",
        "p1@example.org",
        "p2@example.org",
        "p4@example.org",
    ]
    assert _states(engine)[("email", ids[3])] == RowState.FAILED
    first = next(r for r in email.sent if r.to == "p0@example.org")
    # With a personal subject, an escaped html part, the footer and a working one-click link
    assert first.subject == "Hi <Zoë>"
    assert (
        first.html is not None
        and "<p>Hi &lt;Zoë&gt;</p>" in first.html
        and "1 Main St" in first.html
    )
    assert (
        first.text is not None
        and first.text.startswith("Watch <this>")
        and "Unsubscribe: https://rr.acme.org/unsubscribe/" in first.text
    )
    assert first.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = first.headers["List-Unsubscribe"].strip("<>").rsplit("/", 1)[1]
    claim = tokens.verify(token)
    assert claim is not None and claim.email == "p0@example.org" and claim.blast_id == "b4"
    assert tokens.verify(token[:-2] + "xx") is None
    assert first.custom_args == {"blast_id": "b4", "supporter_id": str(ids[0])}


def test_a_test_send_reaches_only_the_named_supporters(engine: Engine) -> None:
    # Given many subscribers and two staff members named as test recipients (by phone, by email)
    people = [{"phone": f"+1415555{i:04d}", "email": f"p{i}@example.org"} for i in range(50)]
    alert = {
        "alert_id": "t1",
        "sms": {"body": "Test {{ first_name }}"},
        "email": {"subject": "Test", "text": "Test"},
        "test_recipients": ["+14155550007", "P9@Example.org"],
    }
    ctx, queue, _ids = _setup(engine, alert, people)
    sms, email = InMemorySms(), InMemoryEmail()
    config = EmailConfig(
        "Acme <news@acme.org>",
        "Acme",
        "1 Main St",
        "https://rr.acme.org",
        UnsubscribeTokens(b"k" * 32),
    )
    # When the test send is processed
    _drain(queue, {"sms": SmsSender(ctx, sms, SMS), "email": EmailSender(ctx, email, config)})
    # Then only those two supporters got it, on every channel of the alert
    assert sorted(m.to for m in sms.sent) == ["+14155550007", "+14155550009"]
    assert sorted(r.to for r in email.sent) == ["p7@example.org", "p9@example.org"]
    summary = ctx.blasts.summaries([ctx.blasts.get("t1")])[0]  # type: ignore[list-item]
    assert summary["test"] is True and summary["counts"]["sms"]["targeted"] == 2
