"""Fuzz: any body into every webhook, signed or not, is answered below 500 and never crashes.

The app is the real one (PostgreSQL, Redis) in process. Signed cases carry a valid Twilio
signature (the official validator's algorithm, over the public URL) or a valid SendGrid
ECDSA signature with a fresh timestamp, so the fuzzed bodies reach the handlers' logic;
unsigned ones carry nothing, garbage, or a signature of another body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from messaging.content.unsubscribe import UnsubscribeTokens
from tests.fuzzing import (
    BUDGET,
    FUZZ,
    AsgiClient,
    Tally,
    deeply_nested,
    hostile_text,
    json_values,
    quiet_logs,
)
from tests.running_web import SG_PUBLIC, sendgrid_headers, service_settings
from workers.app import App

pytestmark = pytest.mark.integration

PUBLIC = "https://rr.example.org"
TWILIO_TOKEN = "twilio-fuzz-token-0123456789abcdef"
SECRET_KEY = "fuzz-secret-key-0123456789abcdef-xyz"


@pytest.fixture
def client(pg_url: str, prefix: str) -> Iterator[AsgiClient]:
    """The real ``rapid web`` app in process."""
    from workers.web.app import create_app

    app = App(
        service_settings(
            pg_url,
            prefix,
            twilio_auth_token=TWILIO_TOKEN,
            sendgrid_webhook_public_key=SG_PUBLIC,
            secret_key=SECRET_KEY,
            public_base_url=PUBLIC,
            org_name="Fuzz Org",
        )
    )
    http = AsgiClient(create_app(app))
    yield http
    http.close()
    app.close()


TWILIO_KEYS = [
    "MessageSid",
    "SmsSid",
    "MessageStatus",
    "SmsStatus",
    "ErrorCode",
    "To",
    "From",
    "Body",
    "OptOutType",
    "AccountSid",
    "NumMedia",
]
twilio_params = st.dictionaries(
    st.one_of(st.sampled_from(TWILIO_KEYS), hostile_text),
    st.one_of(
        hostile_text,
        st.sampled_from(
            ["delivered", "failed", "undelivered", "sent", "30007", "21610", "STOP", "START"]
        ),
        st.sampled_from(["SM" + "0" * 32, "+14155550100", "+1415555", "HELP", "stop texting me"]),
    ),
    max_size=8,
)
sendgrid_event = st.dictionaries(
    st.sampled_from(
        [
            "email",
            "event",
            "sg_event_id",
            "sg_message_id",
            "timestamp",
            "blast_id",
            "supporter_id",
            "reason",
            "type",
        ]
    ),
    st.one_of(
        json_values,
        st.sampled_from(
            ["bounce", "dropped", "delivered", "spamreport", "unsubscribe", "group_unsubscribe"]
        ),
        st.sampled_from(["jane@example.org", "JANE@EXAMPLE.ORG", "not-an-email", ""]),
    ),
    max_size=9,
)


def _twilio_case(
    client: AsgiClient, path: str, params: dict[str, str], signing: str, raw: bytes
) -> int:
    body = raw if signing == "raw body" else urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signing == "signed":
        headers["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(
            PUBLIC + path, params
        )
    elif signing == "wrong key":
        headers["X-Twilio-Signature"] = RequestValidator("another-token").compute_signature(
            PUBLIC + path, params
        )
    elif signing == "garbage":
        headers["X-Twilio-Signature"] = "!!not base64!!"
    return client.post(path, content=body, headers=headers).status_code


@pytest.mark.parametrize("route", ["status", "inbound"])
def test_any_twilio_body_is_answered_without_a_crash(client: AsgiClient, route: str) -> None:
    path = f"/webhooks/twilio/{route}"
    tally = Tally(f"twilio {route} webhook")

    @given(
        params=twilio_params,
        signing=st.sampled_from(
            ["signed", "signed", "unsigned", "wrong key", "garbage", "raw body"]
        ),
        raw=st.binary(max_size=200),
    )
    @settings(parent=FUZZ)
    def case(params: dict[str, str], signing: str, raw: bytes) -> None:
        status = _twilio_case(client, path, params, signing, raw)
        assert status < 500, (params, signing)
        if signing != "signed":
            assert status == 403
        tally.add(f"{signing} {status}")

    with quiet_logs():
        case()
    tally.report(http=True)
    assert tally.cases >= BUDGET


@st.composite
def sendgrid_bodies(draw: st.DrawFn) -> bytes:
    """An event batch, any JSON, nested too deep, or bytes that are not UTF-8."""
    kind = draw(st.sampled_from(["events", "events", "json", "deep", "bytes"]))
    if kind == "events":
        return json.dumps(
            draw(st.lists(st.one_of(sendgrid_event, json_values), max_size=6))
        ).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        return deeply_nested(draw(st.integers(min_value=1000, max_value=100_000))).encode()
    return draw(st.binary(max_size=300))


def test_any_sendgrid_body_is_answered_without_a_crash(client: AsgiClient) -> None:
    tally = Tally("sendgrid events webhook")

    @given(
        body=sendgrid_bodies(),
        signing=st.sampled_from(["signed", "signed", "unsigned", "stale", "other body"]),
    )
    @settings(parent=FUZZ)
    def case(body: bytes, signing: str) -> None:
        now = str(int(time.time()))
        if signing == "signed":
            headers = sendgrid_headers(body, timestamp=now)
        elif signing == "stale":
            headers = sendgrid_headers(body, timestamp=str(int(time.time()) - 3600))
        elif signing == "other body":
            headers = sendgrid_headers(body + b" ", timestamp=now)
        else:
            headers = {"Content-Type": "application/json"}
        response = client.post("/webhooks/sendgrid/events", content=body, headers=headers)
        assert response.status_code < 500, (body[:200], signing)
        if signing != "signed":
            assert response.status_code == 403
        tally.add(f"{signing} {response.status_code}")

    with quiet_logs():
        case()
    tally.report(http=True)
    assert tally.cases >= BUDGET


def test_any_unsubscribe_token_is_answered_without_a_crash(client: AsgiClient) -> None:
    tokens = UnsubscribeTokens(SECRET_KEY.encode())
    tally = Tally("unsubscribe pages")

    @given(
        token=st.one_of(
            st.builds(tokens.make, hostile_text, hostile_text).map(lambda t: ("genuine", t)),
            hostile_text.map(lambda t: ("forged", t)),
            st.builds(
                lambda t, cut: t[:cut],
                st.builds(tokens.make, hostile_text, hostile_text),
                st.integers(min_value=0, max_value=60),
            ).map(lambda t: ("altered", t)),
        ),
        method=st.sampled_from(["GET", "POST", "HEAD"]),
        body=st.one_of(st.just(b"List-Unsubscribe=One-Click"), st.binary(max_size=100)),
    )
    @settings(parent=FUZZ)
    def case(token: tuple[str, str], method: str, body: bytes) -> None:
        kind, value = token
        path = "/unsubscribe/" + quote(value, safe="")
        if not value or value in (".", ".."):
            path = "/unsubscribe/x"
        response = client.request(
            method,
            path,
            content=body if method == "POST" else None,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code < 500, (token, method)
        tally.add(f"{kind} {method} {response.status_code}")

    with quiet_logs():
        case()
    tally.report(http=True)
    assert tally.cases >= BUDGET
