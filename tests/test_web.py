"""``rapid web`` over HTTP: a real uvicorn server on loopback, real PostgreSQL, Redis and moto.

Requests are signed the way the providers sign them: Twilio with the official
``RequestValidator`` over the PUBLIC url (the app sits behind a load balancer), SendGrid with
an ECDSA P-256 key pair made here, over ``timestamp + body``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from starlette.requests import Request
from structlog.testing import capture_logs

from emulators.server import start_twilio
from messaging.content.alert import Alert, SmsContent
from messaging.content.unsubscribe import UnsubscribeTokens
from messaging.errors import ConfigError
from messaging.store.schema import deliveries, replies
from tests.conftest import free_port
from tests.factories import add_delivery
from tests.running_web import (
    SG_PUBLIC,
    Web,
    make_web_fixture,
    queue_on_topic,
    sendgrid_headers,
    sendgrid_key_pair,
)
from workers.web.security import SendGridSignature, public_url

pytestmark = pytest.mark.integration

PUBLIC = "https://rapid.example.org"
TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"
API_TOKEN = "api-token-for-the-tests-0123456789"
SECRET_KEY = "unsubscribe-secret-key-0123456789"
ORG = "Acme Action"
PHONE = "+14155550100"
EMAIL = "jane@example.org"


#: ``rapid web`` servers with every secret configured (``make_web(**overrides)``).
make_web = make_web_fixture(
    twilio_auth_token=TWILIO_TOKEN,
    sendgrid_webhook_public_key=SG_PUBLIC,
    public_base_url=PUBLIC,
    api_token=API_TOKEN,
    secret_key=SECRET_KEY,
    org_name=ORG,
)


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    """``rapid web`` with every secret configured."""
    return make_web()


def sent_row(
    web: Web, channel: str = "sms", pid: str | None = "SM1", destination: str = PHONE
) -> None:
    """Blast b1 with one ledger row in ``sent``."""
    alert = Alert(alert_id="b1", sms=SmsContent(body="Hi"))
    web.app.blasts.create(alert, "news", None)
    add_delivery(web.app.engine, "b1", 1, destination, channel=channel, provider_message_id=pid)


def ledger_row(web: Web, channel: str = "sms") -> Any:
    """The one ledger row of blast b1."""
    with web.app.engine.connect() as conn:
        return conn.execute(
            select(deliveries).where(deliveries.c.blast_id == "b1", deliveries.c.channel == channel)
        ).one()


def status_params(status: str, sid: str = "SM1", **extra: str) -> dict[str, str]:
    """A Twilio status callback form."""
    return {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "To": PHONE,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        **extra,
    }


def inbound_params(body: str, sid: str) -> dict[str, str]:
    """An inbound SMS form."""
    return {
        "AccountSid": "AC" + "0" * 32,
        "From": PHONE,
        "To": "+15005550006",
        "Body": body,
        "MessageSid": sid,
        "SmsSid": sid,
        "NumMedia": "0",
    }


# --- Twilio ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("root_path", "path", "query", "expected"),
    [
        ("", "/webhooks/twilio/status", b"", f"{PUBLIC}/webhooks/twilio/status"),
        ("", "/webhooks/twilio/status", b"b=1&c=%20", f"{PUBLIC}/webhooks/twilio/status?b=1&c=%20"),
        ("/rapid", "/rapid/webhooks/twilio/inbound", b"", f"{PUBLIC}/webhooks/twilio/inbound"),
    ],
)
def test_the_signed_url_is_the_public_one(
    root_path: str, path: str, query: bytes, expected: str
) -> None:
    # Given a request as the load balancer forwards it, when its public URL is rebuilt, then
    # it is PUBLIC_BASE_URL + the path inside the app + the query exactly as sent
    scope = {"type": "http", "path": path, "root_path": root_path, "query_string": query}
    assert public_url(Request(scope), PUBLIC + "/") == expected


def test_status_callback_refuses_bad_signatures_and_changes_nothing(web: Web) -> None:
    # Given a sent SMS
    sent_row(web)
    path = "/webhooks/twilio/status"
    # When callbacks arrive unsigned, signed with another token, or signed for the internal URL
    unsigned = web.http.post(path, data=status_params("delivered"))
    wrong_token = web.twilio(path, status_params("delivered"), token="not-the-token")
    internal_url = web.twilio(path, status_params("delivered"), url=web.server.url + path)
    # Then each is refused and the ledger is unchanged
    assert [r.status_code for r in (unsigned, wrong_token, internal_url)] == [403, 403, 403]
    assert ledger_row(web).state == "sent"


def test_status_callbacks_out_of_order_and_repeated_leave_delivered(web: Web) -> None:
    # Given a sent SMS
    sent_row(web)
    path = "/webhooks/twilio/status"
    # When Twilio posts delivered, then a late sent, then delivered again
    codes = [web.twilio(path, status_params(s)).status_code for s in ("delivered", "sent")]
    first = ledger_row(web)
    codes.append(web.twilio(path, status_params("delivered")).status_code)
    # Then every callback is acknowledged and the row stays delivered, stamped once
    assert codes == [204, 204, 204]
    assert first.state == "delivered" and first.delivered_at is not None
    assert ledger_row(web).delivered_at == first.delivered_at


def test_undelivered_with_30003_fails_the_row_with_that_code(web: Web) -> None:
    # Given a sent SMS
    sent_row(web)
    # When Twilio reports it undelivered with ErrorCode 30003
    response = web.twilio(
        "/webhooks/twilio/status", status_params("undelivered", ErrorCode="30003")
    )
    # Then the row failed with that code
    assert response.status_code == 204
    row = ledger_row(web)
    assert (row.state, row.error_code) == ("failed", "30003")


def test_callbacks_from_the_twilio_emulator_settle_the_ledger(
    make_web: Callable[..., Web],
) -> None:
    # Given rapid web reachable at its public URL, and a Twilio emulator with the same
    # account token that posts signed status callbacks (after a short delay)
    port = free_port()
    web = make_web(port=port, public_base_url=f"http://127.0.0.1:{port}")
    account = "AC" + "0123456789abcdef" * 2
    with start_twilio(auth_token=TWILIO_TOKEN, account_sid=account) as twilio:
        twilio.faults.update(status_callbacks=True, callback_delay_ms=300)
        # When a message is sent with our StatusCallback and recorded as sent
        created = httpx.post(
            f"{twilio.url}/2010-04-01/Accounts/{account}/Messages.json",
            data={
                "To": PHONE,
                "From": "+15005550006",
                "Body": "Hi",
                "StatusCallback": f"http://127.0.0.1:{port}/webhooks/twilio/status",
            },
            auth=(account, TWILIO_TOKEN),
            trust_env=False,
        )
        assert created.status_code == 201, created.text
        sent_row(web, pid=created.json()["sid"])
        # Then its callbacks pass our signature check and the row ends delivered
        deadline = time.monotonic() + 5
        while ledger_row(web).state != "delivered" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert ledger_row(web).state == "delivered"
    assert twilio.recorder.stats().get("callback_ok") == 2


def test_without_an_auth_token_every_twilio_webhook_is_refused(
    make_web: Callable[..., Web],
) -> None:
    # Given rapid web with no TWILIO_AUTH_TOKEN
    web = make_web(twilio_auth_token=None)
    # When a (correctly signed) inbound STOP arrives
    response = web.twilio(
        "/webhooks/twilio/inbound", inbound_params("STOP", "SMx"), token=TWILIO_TOKEN
    )
    # Then it is refused and nothing is suppressed
    assert response.status_code == 403
    assert web.app.suppressions.lookup("sms", PHONE) is None


@pytest.mark.parametrize("body", ["STOP", "  stop  ", "Stop"])
def test_inbound_stop_suppresses_and_start_lifts(web: Web, body: str) -> None:
    # When a supporter texts a STOP keyword
    response = web.twilio("/webhooks/twilio/inbound", inbound_params(body, "SMs"))
    # Then the TwiML reply is the one confirmation (contract §12) and the number is
    # suppressed in the system of record, which the senders check before every message
    assert response.status_code == 200
    assert "xml" in response.headers["content-type"]
    assert f"<Message>{ORG}: You're unsubscribed" in response.text.replace("&#x27;", "'")
    found = web.app.suppressions.lookup("sms", PHONE)
    assert found is not None and (found.reason, found.source) == ("stop", "inbound-sms")
    # When they text START, then the suppression is lifted
    web.twilio("/webhooks/twilio/inbound", inbound_params("START", "SMt"))
    assert web.app.suppressions.lookup("sms", PHONE) is None


def test_inbound_help_answers_with_the_org_name(web: Web) -> None:
    # When a supporter texts HELP
    response = web.twilio("/webhooks/twilio/inbound", inbound_params("help", "SMh"))
    # Then the TwiML reply names the org and says how to stop
    assert response.status_code == 200
    assert f"<Message>{ORG}: " in response.text
    assert "Reply STOP to opt out.</Message>" in response.text


def test_inbound_other_text_is_only_recorded_once(web: Web) -> None:
    # When a question arrives, twice with the same MessageSid (a webhook retry)
    for _ in range(2):
        response = web.twilio(
            "/webhooks/twilio/inbound", inbound_params("Where's the rally?", "SMo")
        )
        assert response.status_code == 200 and "<Message>" not in response.text
    # Then it is recorded once and not acted on
    with web.app.engine.connect() as conn:
        rows = conn.execute(select(replies)).all()
    assert [(r.body, r.kind, r.from_number) for r in rows] == [
        ("Where's the rally?", "other", PHONE)
    ]
    assert web.app.suppressions.lookup("sms", PHONE) is None


def test_oversized_webhook_bodies_are_refused(web: Web) -> None:
    # When a Twilio webhook body is larger than 64 KiB, then 413 before anything is read
    response = web.twilio("/webhooks/twilio/inbound", inbound_params("x" * 70_000, "SMbig"))
    assert response.status_code == 413


def test_handlers_never_log_a_phone_an_email_or_a_token(web: Web) -> None:
    # Given every secret a request can carry
    token = UnsubscribeTokens(SECRET_KEY.encode()).make(EMAIL, "b1")
    # When STOP, an unsubscribe, a bounce and a refused API call are handled
    with capture_logs() as logs:
        web.twilio("/webhooks/twilio/inbound", inbound_params("STOP", "SMlog"))
        web.http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        web.sendgrid([{"email": EMAIL, "event": "bounce", "sg_event_id": "log1"}])
        web.api("GET", "/api/blasts/nope", token="wrong-token-value")
    # Then no log event contains any of them, not even before masking
    text = json.dumps(logs, default=str)
    assert logs
    for secret in (PHONE, PHONE[2:], EMAIL, token, TWILIO_TOKEN, API_TOKEN, "wrong-token-value"):
        assert secret not in text


# --- SendGrid ---------------------------------------------------------------------------------


def test_sendgrid_refuses_forged_tampered_and_unsigned_batches(web: Web) -> None:
    # Given a bounce event
    events = [{"email": EMAIL, "event": "bounce", "sg_event_id": "f1"}]
    body = json.dumps(events).encode()
    other_key, _ = sendgrid_key_pair()
    path = "/webhooks/sendgrid/events"
    # When it arrives signed by another key, altered after signing, or unsigned
    forged = web.sendgrid(events, key=other_key)
    tampered = web.http.post(
        path, content=body.replace(b"f1", b"f2"), headers=sendgrid_headers(body)
    )
    unsigned = web.http.post(path, content=body)
    # Then each is refused and the address is not suppressed
    assert [r.status_code for r in (forged, tampered, unsigned)] == [403, 403, 403]
    assert web.app.suppressions.lookup("email", EMAIL) is None


def test_sendgrid_without_a_public_key_refuses_events(make_web: Callable[..., Web]) -> None:
    # Given rapid web without SENDGRID_WEBHOOK_PUBLIC_KEY
    web = make_web(sendgrid_webhook_public_key=None)
    # When a correctly signed batch arrives, then it is refused (contract: events refused)
    assert web.sendgrid([{"email": EMAIL, "event": "bounce"}]).status_code == 403


def test_a_malformed_public_key_fails_at_start() -> None:
    # Given a SENDGRID_WEBHOOK_PUBLIC_KEY that is base64 but not a key, when the verifier is
    # built (at app start), then the error names the variable
    with pytest.raises(ConfigError, match="SENDGRID_WEBHOOK_PUBLIC_KEY"):
        SendGridSignature(base64.b64encode(b"not a key").decode())


def test_sendgrid_body_must_be_a_json_array(web: Web) -> None:
    # When a signed body is a JSON object, then 400
    assert web.sendgrid({"event": "bounce"}).status_code == 400


def test_sendgrid_bounce_suppresses_delivered_refines_and_replays_are_harmless(web: Web) -> None:
    # Given a sent email to one supporter and a bounce for another address
    sent_row(web, channel="email", pid=None, destination=EMAIL)
    events = [
        {
            "email": EMAIL,
            "event": "delivered",
            "sg_event_id": "d1",
            "timestamp": 1764230400,
            "blast_id": "b1",
            "supporter_id": "1",
        },
        {"email": "gone@example.org", "event": "bounce", "sg_event_id": "b1", "reason": "550"},
    ]
    # When the signed batch arrives, and again (SendGrid retries)
    first = web.sendgrid(events)
    second = web.sendgrid(events)
    # Then the bounce suppressed its address, the row is delivered, and the replay did nothing
    assert first.status_code == 200 and second.status_code == 200
    assert first.json()["delivered"] == 1 and first.json()["suppressed"] == 1
    assert second.json()["duplicates"] == 2 and second.json()["suppressed"] == 0
    found = web.app.suppressions.lookup("email", "gone@example.org")
    assert found is not None and (found.reason, found.source) == ("bounce", "sendgrid")
    assert ledger_row(web, "email").state == "delivered"


# --- unsubscribe -----------------------------------------------------------------------------


def test_unsubscribe_page_then_one_click_post_suppresses(web: Web) -> None:
    # Given a genuine unsubscribe link
    token = UnsubscribeTokens(SECRET_KEY.encode()).make(EMAIL, "b1")
    # When the page is opened (GET), then it asks, with a form that posts, and changes nothing
    page = web.http.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert '<form method="post">' in page.text and EMAIL not in page.text
    assert web.app.suppressions.lookup("email", EMAIL) is None
    # When a mail client posts the RFC 8058 one-click body (no cookie, no CSRF token)
    done = web.http.post(
        f"/unsubscribe/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    # Then the address is suppressed and a success page is shown
    assert done.status_code == 200 and "unsubscribed" in done.text
    found = web.app.suppressions.lookup("email", EMAIL)
    assert found is not None and (found.reason, found.source) == ("unsubscribe-link", "email-link")


def test_forged_or_altered_unsubscribe_tokens_are_not_found(web: Web) -> None:
    # Given a token made with another key, and a genuine one with its address altered
    forged = UnsubscribeTokens(b"another-key-0123456789").make(EMAIL, "b1")
    genuine = UnsubscribeTokens(SECRET_KEY.encode()).make(EMAIL, "b1")
    kid, _payload, mac = genuine.split(".")  # key id, payload, MAC
    other = base64.urlsafe_b64encode(json.dumps(["bob@example.org", "b1"]).encode())
    altered = f"{kid}.{other.decode().rstrip('=')}.{mac}"
    legacy_altered = f"{other.decode().rstrip('=')}.{mac}"  # the format before key ids
    # When they are used, then 404 for both methods and nothing is suppressed
    for token in (forged, altered, legacy_altered, "garbage"):
        assert web.http.get(f"/unsubscribe/{token}").status_code == 404
        assert web.http.post(f"/unsubscribe/{token}").status_code == 404
    assert web.app.suppressions.lookup("email", EMAIL) is None
    assert web.app.suppressions.lookup("email", "bob@example.org") is None


# --- API -------------------------------------------------------------------------------------


def test_api_needs_the_bearer_token(web: Web, make_web: Callable[..., Web]) -> None:
    # When the API is called without a token or with a wrong one, then 401
    assert web.api("GET", "/api/blasts/b1", token=None).status_code == 401
    wrong = web.api("GET", "/api/blasts/b1", token="wrong")
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    # When the server has no RAPID_API_TOKEN, then that token is nobody's: 401 (operator
    # tokens still work; tests/test_api_roles.py)
    refused = make_web(api_token=None)
    assert refused.api("GET", "/api/blasts/b1", API_TOKEN).status_code == 401
    alert = {"topic": "news"}
    assert refused.api("POST", "/api/alerts", API_TOKEN, json=alert).status_code == 401


def test_post_alert_publishes_to_the_topic(web: Web) -> None:
    # Given a provisioned alert topic whose SNS topic feeds a queue made for this test
    queue_url = queue_on_topic(web.app, "news", "api-test")
    # When an alert without an id is posted
    response = web.api(
        "POST", "/api/alerts", json={"topic": "news", "sms": {"body": "Hi {{ first_name }}"}}
    )
    # Then it is accepted with a generated blast id, and the alert is on the topic
    assert response.status_code == 202, response.text
    blast_id = response.json()["blast_id"]
    assert blast_id.startswith("news-") and response.json()["sns_message_id"]
    messages = web.app.sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"]
    published = json.loads(messages[0]["Body"])
    assert published["alert_id"] == blast_id and published["sms"]["body"] == "Hi {{ first_name }}"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"topic": "news"}, "at least one of sms and email"),
        ({"topic": "news", "sms": {"body": "x"}, "smsbody": "typo"}, "smsbody"),
        ({"sms": {"body": "x"}}, "topic"),
        ({"topic": "never-provisioned", "sms": {"body": "x"}}, "not provisioned"),
        ([1, 2], "JSON object"),
    ],
)
def test_post_alert_rejects_invalid_alerts_with_the_reason(
    web: Web, body: Any, reason: str
) -> None:
    # When an invalid alert is posted, then 422 says why
    response = web.api("POST", "/api/alerts", json=body)
    assert response.status_code == 422
    assert reason in response.json()["error"]


def test_blast_routes_show_and_steer_a_blast(web: Web) -> None:
    # Given a blast
    web.app.blasts.create(Alert(alert_id="b1", sms=SmsContent(body="Hi")), "news", None)
    # When it is read, then the contract's summary comes back
    shown = web.api("GET", "/api/blasts/b1")
    assert shown.status_code == 200
    assert {"blast_id", "topic", "status", "created_at", "counts"} <= set(shown.json())
    assert shown.json()["counts"]["sms"]["targeted"] == 0
    # When it is paused, resumed and canceled, then each answers with the new status
    statuses = [web.api("POST", f"/api/blasts/b1/{a}").json()["status"] for a in ("pause",)]
    statuses += [web.api("POST", f"/api/blasts/b1/{a}").json()["status"] for a in ("resume",)]
    statuses += [web.api("POST", "/api/blasts/b1/cancel").json()["status"]]
    assert statuses == ["paused", "expanding", "canceled"]
    # When an ended blast is canceled again, then 409 with the reason
    again = web.api("POST", "/api/blasts/b1/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]
    # And unknown blasts and actions are 404
    assert web.api("GET", "/api/blasts/nope").status_code == 404
    assert web.api("POST", "/api/blasts/nope/cancel").status_code == 404
    assert web.api("POST", "/api/blasts/b1/explode").status_code == 404


def test_openapi_description_is_valid(web: Web) -> None:
    from openapi_spec_validator import validate

    # When the description is fetched (no token needed), then it is valid OpenAPI
    response = web.http.get("/api/openapi.json")
    assert response.status_code == 200
    validate(response.json())
    assert "/api/blasts/{blast_id}/cancel" in response.json()["paths"]


# --- health and metrics ------------------------------------------------------------------------


def test_healthz_is_ok_when_database_and_redis_answer(web: Web) -> None:
    response = web.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_healthz_names_redis_when_it_is_down(make_web: Callable[..., Web]) -> None:
    # Given rapid web whose Redis URL points at a closed port
    web = make_web(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    # When health is checked, then 503 names Redis
    response = web.http.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "redis": "down"}


def test_metrics_are_prometheus_text_with_every_family(web: Web) -> None:
    # Given a blast in flight
    sent_row(web)
    # When /metrics is scraped with an operator token (it is not public, contract §7)
    response = web.api("GET", "/metrics")
    # Then it parses as Prometheus text and holds every family
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    expected = {
        "rapid_deliveries",
        "rapid_blasts",
        "rapid_send_queue_depth",
        "rapid_messages",
    }
    assert expected <= set(families)
    sent = [s for s in families["rapid_deliveries"].samples if s.labels["state"] == "sent"]
    assert {s.labels["channel"]: s.value for s in sent} == {"sms": 1, "email": 0}
