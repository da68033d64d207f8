"""Plain email templates travel once per call, personalised by substitutions: through the
official SendGrid client to the emulator, each recipient sees exactly what rendering would
have given them, and the requests conform to SendGrid's spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select

from emulators.server import Emulator, start_sendgrid
from messaging.blasts.expansion import Expander
from messaging.content.alert import EmailContent, parse_alert
from messaging.content.templates import render
from messaging.content.unsubscribe import UnsubscribeTokens
from messaging.providers.sendgrid_email import SendGridEmail
from messaging.sending.email import (
    EmailConfig,
    EmailSender,
    email_fields,
    shared_plan,
    with_footer,
)
from messaging.store.schema import deliveries
from tests.factories import add_supporters, send_context
from tests.openapi_check import assert_conforms

KEY = "SG.test.key"
TOKENS = UnsubscribeTokens(b"k" * 32)
CONFIG = EmailConfig(
    "Acme <news@acme.org>", "Acme & Co", "1 Main St", "https://rr.acme.org", TOKENS
)


@pytest.fixture
def sendgrid() -> Iterator[Emulator]:
    with start_sendgrid(api_key=KEY) as emulator:
        yield emulator


def _send(engine: Engine, url: str, email: dict[str, str], people: list[dict[str, Any]]) -> None:
    add_supporters(engine, people, topic="t")
    ctx, queue = send_context(engine)
    doc = {"alert_id": "e1", "email": email}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    sender = EmailSender(ctx, SendGridEmail(KEY, base_url=url), CONFIG)
    while queue.items:
        sender.process(queue.items.pop(0))


def test_each_recipient_sees_what_rendering_would_have_given_them(
    engine: Engine, sendgrid: Emulator
) -> None:
    # Given plain templates, and names that need escaping or look like our own tags
    email = {
        "subject": "{{ first_name }}, watch\\n this",
        "text": "Hi {{ first_name }} {{ last_name }},\nwatch: https://ex.am/p1",
        "html": "<p>Hi {{ first_name }}</p>",
    }
    names = ["Ann", '<Zoë & "Bo">', "-rr.unsubscribe.t-", "Élodie"]
    people = [
        {"email": f"p{i}@example.org", "first_name": n, "last_name": f"L{i}"}
        for i, n in enumerate(names)
    ]
    _send(engine, sendgrid.url, email, people)
    # Then the call carried the bodies once, and each person got their own message
    requests = sendgrid.recorder.requests()
    for request in requests:
        assert_conforms(request)
    bodies = [json.loads(r.body) for r in requests]
    assert len(bodies[0]["personalizations"]) == 3  # the tag-like name went alone
    assert "-rr.first_name.t-" in bodies[0]["content"][0]["value"]
    received = {m["to"]: m for m in sendgrid.recorder.messages()}
    assert len(received) == 4
    for i, name in enumerate(names):
        fields = {"first_name": name, "last_name": f"L{i}"}
        to = f"p{i}@example.org"
        url = CONFIG.unsubscribe_url(to, "e1")
        text, html = with_footer(
            CONFIG, render(email["text"], fields), render(email["html"], fields, html=True), url
        )
        message = received[to]
        assert message["content"] == {"text/plain": text, "text/html": html}
        assert message["subject"] == render(email["subject"], fields).replace("\n", " ").strip()
        assert message["headers"]["List-Unsubscribe"] == f"<{url}>"
        assert message["custom_args"]["blast_id"] == "e1"


def test_templates_with_logic_are_rendered_per_recipient(
    engine: Engine, sendgrid: Emulator
) -> None:
    # Given a body that is more than fields (a filter)
    content = EmailContent(subject="Hi", text="Hi {{ first_name | upper }}")
    assert shared_plan(CONFIG, content) is None
    _send(
        engine,
        sendgrid.url,
        content.model_dump(exclude_none=True),
        [{"email": "ann@example.org", "first_name": "Ann"}],
    )
    # Then it is still personalised (through whole-body substitutions)
    (message,) = sendgrid.recorder.messages()
    assert message["content"]["text/plain"].startswith("Hi ANN\n")


def test_a_personalization_carries_only_what_its_parts_use(
    engine: Engine, sendgrid: Emulator
) -> None:
    # Given a text part without fields and an HTML part with one
    email = {
        "subject": "Hi {{ first_name }}",
        "text": "Watch this",
        "html": "<p>{{ first_name }}</p>",
    }
    people = [{"email": f"P{i}@Example.org", "first_name": f"N{i}"} for i in range(5)]
    _send(engine, sendgrid.url, email, people)
    # Then each personalization carries the HTML field and one unsubscribe token, no more
    (request,) = sendgrid.recorder.requests()
    assert_conforms(request)
    personalizations = json.loads(request.body)["personalizations"]
    assert [sorted(p["substitutions"]) for p in personalizations] == [
        ["-rr.first_name.h-", "-rr.unsubscribe-"]
    ] * 5
    # And the token behind every link (header, text, HTML) is genuine and names its person
    for message in sendgrid.recorder.messages():
        url = message["headers"]["List-Unsubscribe"][1:-1]
        assert f"Unsubscribe: {url}\n" in message["content"]["text/plain"]
        assert f'<a href="{url}">' in message["content"]["text/html"]
        claim = TOKENS.verify(url.rsplit("/", 1)[1])
        assert claim is not None and (claim.email, claim.blast_id) == (message["to"].lower(), "e1")
    # And every row is recorded sent, with the call's message id and the sender
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                deliveries.c.state,
                deliveries.c.provider_message_id,
                deliveries.c.sender,
                deliveries.c.sent_at,
            ).where(deliveries.c.blast_id == "e1")
        ).all()
    assert len(rows) == 5
    assert {(r.state, r.provider_message_id, r.sender) for r in rows} == {
        ("sent", sendgrid.recorder.messages()[0]["x_message_id"], "news@acme.org")
    }
    assert all(r.sent_at is not None for r in rows)


def test_a_claim_reads_the_fields_the_email_and_its_variants_use() -> None:
    # Given an alert whose email reads a custom field, and a variant whose subject reads state
    doc = {
        "alert_id": "v1",
        "sms": {"body": "{{ last_name }}"},
        "email": {"subject": "Hi {{ first_name }}", "text": "Ward {{ fields.ward }}"},
        "variants": [
            {"email": {"subject": "{{ state | lower }}", "text": "x"}},
            {"email": {"subject": "Hi", "html": "<p>{{ first_name }}</p>"}},
        ],
    }
    # Then a claim reads those fields, and none the SMS alone reads
    alert = parse_alert(json.dumps(doc), fallback_id="x")
    assert email_fields(alert) == ("first_name", "state", "fields")


def test_custom_fields_reach_a_template_that_reads_them(engine: Engine, sendgrid: Emulator) -> None:
    # Given bodies that read a custom field, plainly and through logic
    email = {
        "subject": "Ward {{ fields.ward }}",
        "text": "{% if fields.ward == '7' %}Seven{% else %}{{ fields.ward }}{% endif %}",
    }
    people: list[dict[str, Any]] = [
        {"email": "ann@example.org", "first_name": "Ann", "fields": {"ward": "7"}},
        {"email": "bo@example.org", "first_name": "Bo", "fields": {"ward": "12"}},
    ]
    _send(engine, sendgrid.url, email, people)
    # Then each recipient's message has their own ward
    received = {m["to"]: m for m in sendgrid.recorder.messages()}
    assert received["ann@example.org"]["subject"] == "Ward 7"
    assert received["ann@example.org"]["content"]["text/plain"].startswith("Seven\n")
    assert received["bo@example.org"]["subject"] == "Ward 12"
    assert received["bo@example.org"]["content"]["text/plain"].startswith("12\n")
