"""The provider adapters against the emulators: what they make of refusals, odd answers and
partial batches (issue #14, items 2, 5 and 8, at the adapter's edge)."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import Engine, select

from emulators.server import Emulator
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import RowState
from messaging.content.alert import parse_alert
from messaging.errors import (
    PermanentSendError,
    ProviderAuthError,
    TransientSendError,
)
from messaging.providers.base import (
    EmailBatch,
    EmailRecipient,
    SharedBodies,
    SmsMessage,
    SmsReceipt,
)
from messaging.providers.sendgrid_email import SendGridEmail
from messaging.providers.twilio_sms import TwilioSms
from messaging.sending.sms import SmsSender
from messaging.store.schema import deliveries
from tests.factories import add_supporters, emulated_twilio_fixture, send_context, sms_config

ACCOUNT_SID = "AC" + "0a1b2c3d4e5f6789" * 2
AUTH_TOKEN = "answers-auth-token"
API_KEY = "SG.answers-key"
FROM = "+15005550006"


twilio = emulated_twilio_fixture(ACCOUNT_SID, AUTH_TOKEN)


@pytest.fixture
def sendgrid(sendgrid_emulator: Emulator) -> SendGridEmail:
    sendgrid_emulator.reset()
    return SendGridEmail(API_KEY, base_url=sendgrid_emulator.url)


def _texts(n: int) -> list[SmsMessage]:
    return [
        SmsMessage(to=f"+1415555{i:04d}", body=f"hello {i}", from_number=FROM) for i in range(n)
    ]


def test_an_accepted_text_is_a_receipt_whatever_else_the_answer_holds(
    twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    # Given Twilio answering 201 with fields typed as its API description allows, not as we
    # would like (num_segments is a string there; a spec mock fills it with lorem ipsum)
    twilio_emulator.faults.update(
        resource_overrides={"num_segments": "laboris enim magna", "date_created": "nope"}
    )
    # When 21 texts are sent
    results = twilio.send_many(_texts(21))
    # Then every one is a receipt with Twilio's SID, none an exception
    assert all(isinstance(r, SmsReceipt) for r in results), results
    recorded = {m["sid"] for m in twilio_emulator.recorder.messages()}
    assert {r.sid for r in results if isinstance(r, SmsReceipt)} == recorded
    assert len(recorded) == 21
    assert all(r.segments is None for r in results if isinstance(r, SmsReceipt))


def test_refused_credentials_are_one_auth_error_per_text_and_never_retried(
    twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    twilio_emulator.faults.update(reject_credentials=True)
    results = twilio.send_many(_texts(3))
    assert all(isinstance(r, ProviderAuthError) for r in results), results
    assert "HTTP 401" in str(results[0]) and "Authenticate" in str(results[0])
    assert twilio_emulator.recorder.stats().get("401") == 3  # one attempt each
    with pytest.raises(ProviderAuthError):
        twilio.check_credentials()
    twilio_emulator.faults.update(reject_credentials=False)
    assert twilio.check_credentials() == "active"


def test_the_message_log_answers_what_went_to_a_number_since_a_time(
    twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    before = time.time() - 1
    [sent] = twilio.send_many([SmsMessage(to="+14155550100", body="the alert", from_number=FROM)])
    assert isinstance(sent, SmsReceipt)
    found = twilio.recent_to("+14155550100", FROM, before)
    assert [(m.sid, m.body) for m in found] == [(sent.sid, "the alert")]
    assert twilio.recent_to("+14155550100", "+15005550009", before) == []
    assert twilio.recent_to("+14155550100", FROM, time.time() + 5) == []


def _batch(oversized: list[str], shared_to: list[str]) -> EmailBatch:
    shared = [
        EmailRecipient(to=a, subject="s", text=None, html=None, substitutions={"-n-": a})
        for a in shared_to
    ]
    alone = [EmailRecipient(to=a, subject="s", text="x" * 20_000, html=None) for a in oversized]
    return EmailBatch(
        from_email="news@acme.example",
        from_name="Acme",
        recipients=[*shared, *alone],
        shared=SharedBodies(text="Hi -n-", html=None),
    )


@pytest.mark.parametrize(
    ("status", "error"), [(400, PermanentSendError), (500, TransientSendError)]
)
def test_a_failed_later_call_leaves_the_earlier_calls_delivered(
    sendgrid_emulator: Emulator, sendgrid: SendGridEmail, status: int, error: type
) -> None:
    # Given a batch that takes three calls: the shared bodies, then two oversized recipients
    sendgrid_emulator.faults.update(email_errors={"big2@example.org": status})
    batch = _batch(["big1@example.org", "big2@example.org"], ["a@example.org", "b@example.org"])
    # When the last call fails
    calls = sendgrid.send_batch(batch)
    # Then each call reports its own recipients: the first two succeeded
    assert [c.indices for c in calls] == [(0, 1), (2,), (3,)]
    assert calls[0].error is None and calls[0].message_id
    assert calls[1].error is None and calls[1].message_id
    assert isinstance(calls[2].error, error)
    delivered = sorted(m["to"] for m in sendgrid_emulator.recorder.messages())
    assert delivered == ["a@example.org", "b@example.org", "big1@example.org"]


def test_a_refused_key_stops_the_batch_at_its_first_call(
    sendgrid_emulator: Emulator, sendgrid: SendGridEmail
) -> None:
    sendgrid_emulator.faults.update(reject_credentials=True)
    calls = sendgrid.send_batch(_batch(["big1@example.org"], ["a@example.org"]))
    assert all(isinstance(c.error, ProviderAuthError) for c in calls)
    assert sendgrid_emulator.recorder.stats().get("401") == 1
    with pytest.raises(ProviderAuthError):
        sendgrid.check_credentials()
    sendgrid_emulator.faults.update(reject_credentials=False)
    assert "mail.send" in sendgrid.check_credentials()


def test_a_batch_records_every_accepted_text_whatever_the_answers_hold(
    engine: Engine, twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    """The field report: against a mock of Twilio's API description answering
    ``"num_segments": "laboris enim magna"``, the batch crashed after the 201s, 21 texts went
    out that the ledger never recorded, and their rows stayed ``sending``."""
    # Given 21 supporters of an SMS blast and Twilio's answers carrying spec-typed oddities
    add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(21)], topic="t")
    ctx, queue = send_context(engine)
    doc = {"alert_id": "odd", "sms": {"body": "Hi {{ first_name }}"}}
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(doc), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    twilio_emulator.faults.update(
        resource_overrides={"num_segments": "laboris enim magna", "price": "free", "uri": 7}
    )
    # When the work is sent
    sender = SmsSender(
        ctx,
        twilio,
        sms_config(),
    )
    while queue.items:
        sender.process(queue.items.pop(0))
    # Then every text Twilio accepted is recorded sent, with its SID; nothing is stranded
    sids = {m["to"]: m["sid"] for m in twilio_emulator.recorder.messages()}
    assert len(sids) == 21
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.destination, deliveries.c.state, deliveries.c.provider_message_id)
        ).all()
    assert {r.state for r in rows} == {RowState.SENT}
    assert {r.destination: r.provider_message_id for r in rows} == sids
