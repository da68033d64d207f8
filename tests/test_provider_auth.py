"""A provider refusing our credentials pauses that channel's blasts, fails nobody, and a
resume after the fix sends each remaining recipient once (issue #14 item 2, contract §13).

The senders run on the real ledger against the provider emulators told to refuse
credentials (``reject_credentials``), exactly as a wrong Twilio auth token or SendGrid key
would be answered.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from starlette.applications import Starlette

from emulators.server import Emulator, start_in_thread, start_sendgrid, start_twilio
from messaging.access.audit import AuditLog
from messaging.blasts.blast_control import BlastActions
from messaging.blasts.expansion import Expander
from messaging.blasts.lifecycle import BlastStatus, PauseReason, RowState
from messaging.content.alert import parse_alert
from messaging.content.unsubscribe import UnsubscribeTokens
from messaging.memory import InMemorySendQueue
from messaging.providers.sendgrid_email import SendGridEmail
from messaging.providers.twilio_sms import TwilioSms
from messaging.safety.provider_auth import ProviderAuthPause
from messaging.sending.common import SendContext
from messaging.sending.email import EmailConfig, EmailSender
from messaging.sending.sms import SmsSender
from messaging.store.memory.audit import MemoryAuditStore
from messaging.store.schema import deliveries
from messaging.store.sql.reports import SqlReportStore
from tests.conftest import REDIS_TEST_URL
from tests.factories import add_supporters, send_context, sms_config
from workers.web.health import Health

ACCOUNT_SID = "AC" + "abcdef0123456789" * 2
AUTH_TOKEN = "provider-auth-token"
API_KEY = "SG.provider-auth-key"
SMS = sms_config(500)
EMAIL = EmailConfig(
    "Acme <news@acme.org>",
    "Acme",
    "1 Main St, Pittsburgh PA",
    "https://rr.acme.org",
    UnsubscribeTokens(b"k" * 32),
)


@pytest.fixture(scope="module")
def emulators() -> Iterator[tuple[Emulator, Emulator]]:
    with (
        start_twilio(auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as twilio,
        start_sendgrid(api_key=API_KEY) as sendgrid,
    ):
        yield twilio, sendgrid


@pytest.fixture
def twilio_emu(emulators: tuple[Emulator, Emulator]) -> Emulator:
    emulators[0].reset()
    return emulators[0]


@pytest.fixture
def sendgrid_emu(emulators: tuple[Emulator, Emulator]) -> Emulator:
    emulators[1].reset()
    return emulators[1]


def _fleet(engine: Engine) -> tuple[SendContext, InMemorySendQueue, BlastActions, AuditLog]:
    ctx, queue = send_context(engine)
    actions = BlastActions(ctx.blasts, ctx.ledger, queue, ctx.control)
    audit = AuditLog(MemoryAuditStore())
    ctx.on_provider_auth = ProviderAuthPause(ctx.blasts, actions.lifecycle, audit)
    return ctx, queue, actions, audit


def _healthz(engine: Engine, ctx: SendContext) -> httpx.Response:
    app = Starlette(
        routes=Health(
            SqlReportStore(engine),
            redis.Redis.from_url(REDIS_TEST_URL),
            CollectorRegistry(),
            ctx.blasts,
        ).routes()
    )
    with start_in_thread(app) as server:
        return httpx.get(f"{server.url}/healthz", timeout=10, trust_env=False)


def _blast(ctx: SendContext, queue: InMemorySendQueue, alert: dict[str, object]) -> None:
    blast, _ = ctx.blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)


def _drain(queue: InMemorySendQueue, senders: dict[str, SmsSender | EmailSender]) -> None:
    while queue.items:
        work = queue.items.pop(0)
        senders[work.channel].process(work)


def _states(engine: Engine, blast_id: str) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(
            state
            for (state,) in conn.execute(
                select(deliveries.c.state).where(deliveries.c.blast_id == blast_id)
            )
        )


def test_refused_twilio_token_pauses_sms_blasts_fails_nobody_and_resume_sends_once(
    engine: Engine, twilio_emu: Emulator
) -> None:
    # Given 30 phones and 5 addresses subscribed, an SMS blast and an email blast running
    add_supporters(engine, [{"phone": f"+1415555{i:04d}", "email": None} for i in range(30)], "t")
    add_supporters(engine, [{"phone": None, "email": f"e{i}@example.org"} for i in range(5)], "t")
    ctx, queue, actions, audit = _fleet(engine)
    _blast(ctx, queue, {"alert_id": "sms-1", "sms": {"body": "Hi {{ first_name }}"}})
    _blast(ctx, queue, {"alert_id": "mail-1", "email": {"subject": "s", "text": "t"}})
    email_work = [w for w in queue.items if w.channel == "email"]
    queue.items[:] = [w for w in queue.items if w.channel == "sms"]
    # And Twilio refusing our credentials (a rotated auth token)
    twilio_emu.faults.update(reject_credentials=True)
    sms = TwilioSms(ACCOUNT_SID, AUTH_TOKEN, base_url=twilio_emu.url)
    try:
        sender = SmsSender(ctx, sms, SMS)
        started = time.monotonic()
        # When the SMS work is processed
        _drain(queue, {"sms": sender})
        # Then the SMS blast is paused, why, within a batch; the email blast runs on
        paused = ctx.blasts.get("sms-1")
        assert paused is not None and paused.status == BlastStatus.PAUSED
        assert time.monotonic() - started < 10
        assert paused.pause_reason == PauseReason.PROVIDER_AUTH
        assert paused.pause_detail is not None and "\n" not in paused.pause_detail
        assert "HTTP 401" in paused.pause_detail and "sms" in paused.pause_detail
        assert ctx.blasts.get("mail-1").status == BlastStatus.SENDING  # type: ignore[union-attr]
        # And nobody is failed for it: every row waits, pending; no retry storm at Twilio
        assert _states(engine, "sms-1") == {RowState.PENDING: 30}
        refused = twilio_emu.recorder.stats().get("401", 0)
        assert 1 <= refused <= 30
        assert twilio_emu.recorder.messages() == []
        # And /healthz says so, without taking the web process out of the load balancer
        health = _healthz(engine, ctx)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["provider_auth"] == [paused.pause_detail]
        # And the pause is in the audit log, from the fleet
        [entry] = audit.entries()
        assert (entry.actor, entry.source, entry.blast_id) == ("fleet", "fleet", "sms-1")
        # When the token is fixed and an operator resumes
        twilio_emu.faults.update(reject_credentials=False)
        actions.resume("sms-1")
        _drain(queue, {"sms": sender})
    finally:
        sms.close()
    # Then each remaining recipient got exactly one text and the blast completed
    received = Counter(m["to"] for m in twilio_emu.recorder.messages())
    assert len(received) == 30 and set(received.values()) == {1}
    assert _states(engine, "sms-1") == {RowState.SENT: 30}
    assert ctx.blasts.get("sms-1").status == BlastStatus.COMPLETED  # type: ignore[union-attr]
    assert email_work  # untouched, still queued for the email senders


def test_refused_sendgrid_key_pauses_email_blasts_and_resume_sends_once(
    engine: Engine, sendgrid_emu: Emulator
) -> None:
    add_supporters(engine, [{"phone": None, "email": f"e{i}@example.org"} for i in range(12)], "t")
    ctx, queue, actions, _ = _fleet(engine)
    _blast(ctx, queue, {"alert_id": "mail-2", "email": {"subject": "s", "text": "Hi"}})
    # Given SendGrid refusing the key as forbidden (403)
    sendgrid_emu.faults.update(reject_credentials=True, reject_status=403)
    sender = EmailSender(ctx, SendGridEmail(API_KEY, base_url=sendgrid_emu.url), EMAIL)
    _drain(queue, {"email": sender})
    blast = ctx.blasts.get("mail-2")
    assert blast is not None and blast.status == BlastStatus.PAUSED
    assert blast.pause_reason == PauseReason.PROVIDER_AUTH and "HTTP 403" in (
        blast.pause_detail or ""
    )
    assert _states(engine, "mail-2") == {RowState.PENDING: 12}
    assert sendgrid_emu.recorder.stats().get("403") == 1  # one call, not retried
    # When the key is fixed and the blast resumed
    sendgrid_emu.faults.update(reject_credentials=False)
    actions.resume("mail-2")
    _drain(queue, {"email": sender})
    received = Counter(m["to"] for m in sendgrid_emu.recorder.messages())
    assert len(received) == 12 and set(received.values()) == {1}
    assert _states(engine, "mail-2") == {RowState.SENT: 12}
