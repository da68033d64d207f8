"""The Twilio and SendGrid emulators, driven through the official clients.

Each emulator runs in a daemon thread for the whole module; every test starts from an empty
recorder and no faults. Requests the official clients make are also validated against the
vendors' OpenAPI files, and so are deliberately wrong ones, to prove the check can fail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from python_http_client.exceptions import (
    BadRequestsError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Content,
    CustomArg,
    Email,
    Header,
    Mail,
    Personalization,
    Substitution,
    To,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from emulators.client import EmulatorClient
from emulators.recorder import RecordedRequest
from emulators.server import Emulator, start_in_thread
from emulators.twilio import count_segments
from tests.factories import fresh_emulator_fixture
from tests.openapi_check import assert_conforms, request_errors

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "emulator-auth-token"
API_KEY = "SG.emulator-key"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
SENDER = "+14155550100"
REPO_ROOT = Path(__file__).resolve().parent.parent


class EmulatorHttpClient(TwilioHttpClient):
    """The official HTTP client, sending what it addresses to ``*.twilio.com`` elsewhere.

    ``TwilioHttpClient`` is the documented extension point (``Client(http_client=…)``), and
    every domain's absolute URL passes through ``request``, so one rewrite covers them all,
    including the ``api.{edge}.{region}.twilio.com`` hosts that ``TWILIO_EDGE`` produces.
    """

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)


twilio_emu = fresh_emulator_fixture("twilio_emulator")
sendgrid_emu = fresh_emulator_fixture("sendgrid_emulator")


@pytest.fixture
def twilio_client(twilio_emu: Emulator) -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=EmulatorHttpClient(twilio_emu.url))


@pytest.fixture
def sendgrid_client(sendgrid_emu: Emulator) -> SendGridAPIClient:
    return SendGridAPIClient(API_KEY, host=sendgrid_emu.url)


def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _mail(**overrides: Any) -> dict[str, Any]:
    mail: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "ann@example.org"}]}],
        "from": {"email": "alerts@example.org"},
        "subject": "Did you see that?",
        "content": [{"type": "text/plain", "value": "Hi"}],
    }
    mail.update(overrides)
    return {k: v for k, v in mail.items() if v is not None}


# -- Twilio ----------------------------------------------------------------------------------


def test_twilio_send_through_official_client(twilio_emu: Emulator, twilio_client: Client) -> None:
    # Given the official client pointed at the emulator
    # When it sends an SMS with a status callback and a validity period
    message = twilio_client.messages.create(
        to="+14155550123",
        from_=SENDER,
        body="Hi Ann, watch this clip",
        status_callback="https://example.org/webhooks/twilio/status",
        validity_period=600,
    )
    # Then Twilio's Message resource comes back and the message is recorded
    assert message.sid.startswith("SM")
    assert len(message.sid) == 34
    assert (message.status, message.to, message.from_) == ("queued", "+14155550123", SENDER)
    assert message.num_segments == "1"
    assert message.account_sid == ACCOUNT_SID
    [recorded] = twilio_emu.recorder.messages()
    assert recorded["sid"] == message.sid
    assert recorded["status_callback"] == "https://example.org/webhooks/twilio/status"
    assert recorded["validity_period"] == 600
    # And the resource can be fetched back, as from Twilio
    assert twilio_client.messages(message.sid).fetch().body == "Hi Ann, watch this clip"
    assert twilio_emu.recorder.stats() == {"201": 1, "200": 1}


def test_twilio_messaging_service_send_is_accepted(twilio_client: Client) -> None:
    message = twilio_client.messages.create(
        to="+14155550123", messaging_service_sid="MG" + "a" * 32, body="hi"
    )
    assert (message.status, message.from_, message.num_segments) == ("accepted", None, "0")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (21610, "Attempt to send to unsubscribed recipient"),
        (21211, "Invalid 'To' Phone Number: +14155550199"),
        (21614, "'To' number is not a valid mobile number"),
    ],
)
def test_twilio_number_errors(
    twilio_emu: Emulator, twilio_client: Client, code: int, message: str
) -> None:
    # Given a number the emulator is told to refuse with a Twilio error code
    twilio_emu.faults.update(number_errors={"+14155550199": code})
    # When the official client sends to it, Then it raises with Twilio's code
    with pytest.raises(TwilioRestException) as raised:
        twilio_client.messages.create(to="+14155550199", from_=SENDER, body="hi")
    assert (raised.value.code, raised.value.status) == (code, 400)
    assert message in raised.value.msg
    assert twilio_emu.recorder.messages() == []
    # And the raw answer is Twilio's error JSON
    body = httpx.post(
        twilio_emu.url + MESSAGES_PATH,
        data={"To": "+14155550199", "From": SENDER, "Body": "hi"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    ).json()
    assert body == {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": 400,
    }


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": SENDER, "Body": "hi"}, 21604),
        ({"To": "+14155550123", "Body": "hi"}, 21603),
        ({"To": "+14155550123", "From": SENDER}, 21602),
        ({"To": "4155550123", "From": SENDER, "Body": "hi"}, 21211),
        ({"To": "+14155550123", "From": SENDER, "Body": "x" * 1601}, 21617),
        ({"To": "+14155550123", "From": SENDER, "Body": "hi", "ValidityPeriod": "0"}, 21624),
        ({"To": "+14155550123", "From": SENDER, "Body": "hi", "StatusCallback": "ftp:x"}, 21609),
        ({"To": "+14155550123", "MessagingServiceSid": "MG1", "Body": "hi"}, 21705),
    ],
)
def test_twilio_rejects_bad_payloads(twilio_emu: Emulator, form: dict[str, str], code: int) -> None:
    response = httpx.post(twilio_emu.url + MESSAGES_PATH, data=form, auth=(ACCOUNT_SID, AUTH_TOKEN))
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["status"] == 400


def test_twilio_bad_auth(twilio_emu: Emulator) -> None:
    client = Client(ACCOUNT_SID, "wrong", http_client=EmulatorHttpClient(twilio_emu.url))
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to="+14155550123", from_=SENDER, body="hi")
    assert (raised.value.status, raised.value.code) == (401, 20003)
    response = httpx.post(twilio_emu.url + MESSAGES_PATH, data={"To": "+14155550123"})
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert twilio_emu.recorder.stats() == {"401": 2}


def test_twilio_429_carries_retry_after(twilio_emu: Emulator, twilio_client: Client) -> None:
    twilio_emu.faults.update(error_429_rate=1.0, retry_after_s=7)
    with pytest.raises(TwilioRestException) as raised:
        twilio_client.messages.create(to="+14155550123", from_=SENDER, body="hi")
    assert (raised.value.status, raised.value.code) == (429, 20429)
    response = httpx.post(
        twilio_emu.url + MESSAGES_PATH,
        data={"To": "+14155550123", "From": SENDER, "Body": "hi"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["code"] == 20429


def test_twilio_500_and_seeded_faults_repeat(twilio_emu: Emulator) -> None:
    # Given a 50 % error rate and a seed
    def statuses() -> list[int]:
        twilio_emu.faults.update(seed=1234, error_500_rate=0.5)
        with httpx.Client(auth=(ACCOUNT_SID, AUTH_TOKEN)) as client:
            return [
                client.post(
                    twilio_emu.url + MESSAGES_PATH,
                    data={"To": "+14155550123", "From": SENDER, "Body": "hi"},
                ).status_code
                for _ in range(20)
            ]

    # When the same sequence of requests is made twice, Then the faults repeat exactly
    first, second = statuses(), statuses()
    assert first == second
    assert set(first) == {201, 500}
    assert twilio_emu.recorder.stats()["500"] == 2 * first.count(500)


def test_timeout_fault_holds_until_the_client_gives_up(twilio_emu: Emulator) -> None:
    twilio_emu.faults.update(timeout_rate=1.0, timeout_hold_s=10)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            twilio_emu.url + MESSAGES_PATH,
            data={"To": "+14155550123", "From": SENDER, "Body": "hi"},
            auth=(ACCOUNT_SID, AUTH_TOKEN),
            timeout=0.3,
        )
    assert time.monotonic() - started < 2
    assert twilio_emu.recorder.stats() == {"timeout": 1}


def test_latency_is_concurrent(twilio_emu: Emulator) -> None:
    # Given 200 ms of latency, When 20 requests are sent at once,
    # Then they overlap: the whole batch takes far less than 20 × 200 ms
    twilio_emu.faults.update(latency_ms=200)

    async def burst() -> list[int]:
        async with httpx.AsyncClient(auth=(ACCOUNT_SID, AUTH_TOKEN)) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        twilio_emu.url + MESSAGES_PATH,
                        data={"To": "+14155550123", "From": SENDER, "Body": f"n{i}"},
                    )
                    for i in range(20)
                )
            )
        return [r.status_code for r in responses]

    started = time.monotonic()
    assert asyncio.run(burst()) == [201] * 20
    assert time.monotonic() - started < 1.5


def test_a_request_arrives_when_its_bytes_are_read_not_when_its_turn_comes(
    twilio_emu: Emulator,
) -> None:
    # Given 300 ms of latency, and two requests written at once on one connection (HTTP/1.1
    # pipelining: the second is read with the first but handled after the first's answer),
    # the first's body 0.2 s after its headers
    twilio_emu.faults.update(latency_ms=300)
    token = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

    def request(text: str) -> tuple[bytes, bytes]:
        body = urlencode({"To": "+14155550123", "From": SENDER, "Body": text}).encode()
        head = (
            f"POST {MESSAGES_PATH} HTTP/1.1\r\nHost: emulator\r\n"
            f"Authorization: Basic {token}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head, body

    (head1, body1), (head2, body2) = request("first"), request("second")
    parts = urlsplit(twilio_emu.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as conn:
        # When they are sent
        sent_at = time.time()
        conn.sendall(head1)
        time.sleep(0.2)
        second_sent_at = time.time()
        conn.sendall(body1 + head2 + body2)
        assert _eventually(lambda: len(twilio_emu.recorder.messages()) == 2)

    # Then each is recorded as arriving when its first bytes were read: the first with its
    # headers, the second with the first's body, not 0.3 s later when its turn came
    first, second = twilio_emu.recorder.messages()
    assert (first["body"], second["body"]) == ("first", "second")
    assert sent_at <= first["received_at"] < sent_at + 0.1
    assert second_sent_at <= second["received_at"] < second_sent_at + 0.1
    assert [r.received_at for r in twilio_emu.recorder.requests()] == [
        first["received_at"],
        second["received_at"],
    ]


class CallbackSink:
    """A tiny web app that keeps the status callbacks it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.arrived = threading.Condition()

    async def receive(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8")))
        with self.arrived:
            self.received.append((str(request.url), form, dict(request.headers)))
            self.arrived.notify_all()
        return Response(status_code=204)

    def wait(self, count: int) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.received) >= count, timeout=5)


@pytest.fixture(scope="module")
def callback_sink() -> Iterator[tuple[CallbackSink, str]]:
    sink = CallbackSink()
    app = Starlette(routes=[Route("/status", sink.receive, methods=["POST"])])
    with start_in_thread(app) as server:
        yield sink, server.url + "/status"


def test_status_callbacks_are_signed(
    twilio_emu: Emulator, twilio_client: Client, callback_sink: tuple[CallbackSink, str]
) -> None:
    sink, url = callback_sink
    sink.received.clear()
    # Given callbacks on, and a number whose delivery will fail
    twilio_emu.faults.update(status_callbacks=True, delivery_errors={"+14155550166": 30003})
    # When two messages are sent
    ok = twilio_client.messages.create(
        to="+14155550123", from_=SENDER, body="hi", status_callback=url
    )
    bad = twilio_client.messages.create(
        to="+14155550166", from_=SENDER, body="hi", status_callback=url
    )
    # Then each gets `sent`, then its final status, signed with the auth token
    assert sink.wait(4)
    validator = RequestValidator(AUTH_TOKEN)
    statuses: dict[str, list[str]] = {}
    for received_url, form, headers in sink.received:
        assert validator.validate(received_url, form, headers["x-twilio-signature"])
        assert form["AccountSid"] == ACCOUNT_SID
        assert form["ApiVersion"] == "2010-04-01"
        statuses.setdefault(form["MessageSid"], []).append(form["MessageStatus"])
        if form["MessageStatus"] == "undelivered":
            assert form["ErrorCode"] == "30003"
    assert statuses == {ok.sid: ["sent", "delivered"], bad.sid: ["sent", "undelivered"]}
    # And the resource reflects the final status
    assert twilio_client.messages(bad.sid).fetch().status == "undelivered"
    # (the sink may answer the last callback before the emulator has counted it)
    assert _eventually(lambda: twilio_emu.recorder.stats().get("callback_ok") == 4)


def test_control_routes(twilio_emu: Emulator, twilio_client: Client) -> None:
    with httpx.Client(base_url=twilio_emu.url) as http:
        # Faults over HTTP, partial updates, unknown names refused
        response = http.post("/_emulator/faults", json={"latency_ms": 5, "seed": 3})
        assert response.json()["latency_ms"] == 5.0
        assert twilio_emu.faults.config.seed == 3
        assert http.post("/_emulator/faults", json={"nope": 1}).status_code == 400
        assert http.post("/_emulator/faults", json={"error_429_rate": 2}).status_code == 400
        assert http.get("/_emulator/faults").json()["latency_ms"] == 5.0
        http.delete("/_emulator/faults")
        assert twilio_emu.faults.config.latency_ms == 0.0
        # Messages, paged with `since`
        for body in ("one", "two", "three"):
            twilio_client.messages.create(to="+14155550123", from_=SENDER, body=body)
        page = http.get("/_emulator/messages").json()
        assert [m["body"] for m in page["messages"]] == ["one", "two", "three"]
        later = http.get("/_emulator/messages", params={"since": page["next"] - 1}).json()
        assert [m["body"] for m in later["messages"]] == ["three"]
        assert later["next"] == page["next"]
        # Raw requests survive the JSON trip byte for byte
        raw = http.get("/_emulator/requests").json()["requests"]
        assert RecordedRequest.from_json(raw[0]) == twilio_emu.recorder.requests()[0]
        assert http.get("/_emulator/stats").json() == {"201": 3}
        assert http.delete("/_emulator/messages").status_code == 204
        # sequence numbers go on counting, so a poller never sees an entry twice
        assert http.get("/_emulator/messages").json() == {"messages": [], "next": page["next"]}


def test_segments() -> None:
    assert count_segments("a" * 160) == 1
    assert count_segments("a" * 161) == 2
    assert count_segments("[" * 80) == 1  # extension characters take two septets
    assert count_segments("[" * 81) == 2
    assert count_segments("é" * 160) == 1  # é is in the GSM alphabet
    assert count_segments("👍" * 35) == 1  # two UTF-16 units each: 70 units
    assert count_segments("👍" * 36) == 2


# -- SendGrid --------------------------------------------------------------------------------


def test_sendgrid_send_through_official_client(
    sendgrid_emu: Emulator, sendgrid_client: SendGridAPIClient
) -> None:
    # Given a mail to two supporters, each with their own substitution and custom args
    mail = Mail(from_email=Email("alerts@example.org", "Rapid Response"), subject="Hi -name-")
    for i, (email, name) in enumerate([("ann@example.org", "Ann"), ("bo@example.org", "Bo")]):
        p = Personalization()
        p.add_to(To(email))
        p.add_substitution(Substitution("-name-", name))
        p.add_custom_arg(CustomArg("supporter", str(i)))
        mail.add_personalization(p, index=i)
    mail.add_content(Content("text/plain", "Hello -name-"))
    mail.add_content(Content("text/html", "<p>Hello -name-</p>"))
    mail.add_header(Header("List-Unsubscribe", "<https://ex.am/u/t>"))
    mail.add_header(Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    mail.add_custom_arg(CustomArg("blast_id", "debate-1"))
    # When the official client sends it
    response = sendgrid_client.send(mail)
    # Then SendGrid's 202 comes back with a message id, and one record per recipient
    assert response.status_code == 202
    assert response.body == b""
    message_id = response.headers["X-Message-Id"]
    assert len(message_id) == 22
    ann, bo = sendgrid_emu.recorder.messages()
    assert (ann["to"], ann["subject"], bo["subject"]) == ("ann@example.org", "Hi Ann", "Hi Bo")
    assert ann["content"] == {"text/plain": "Hello Ann", "text/html": "<p>Hello Ann</p>"}
    assert ann["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert bo["custom_args"] == {"blast_id": "debate-1", "supporter": "1"}
    assert (bo["personalization_index"], bo["x_message_id"]) == (1, message_id)


def test_sendgrid_bad_auth(sendgrid_emu: Emulator) -> None:
    with pytest.raises(UnauthorizedError) as raised:
        SendGridAPIClient("SG.wrong", host=sendgrid_emu.url).send(
            Mail("alerts@example.org", "ann@example.org", "s", "text")
        )
    assert raised.value.to_dict == {
        "errors": [
            {
                "message": "The provided authorization grant is invalid, expired, or revoked",
                "field": None,
                "help": None,
            }
        ]
    }
    assert httpx.post(sendgrid_emu.url + "/v3/mail/send", json=_mail()).status_code == 401


@pytest.mark.parametrize(
    ("mail", "field"),
    [
        (_mail(personalizations=[]), "personalizations"),
        (_mail(personalizations={"to": []}), "personalizations"),
        (_mail(personalizations=[{"cc": [{"email": "a@example.org"}]}]), "personalizations.0.to"),
        (_mail(personalizations=[{"to": [{"email": "nope"}]}]), "personalizations.0.to.0.email"),
        (_mail(**{"from": None}), "from"),
        (_mail(subject=None), "subject"),
        (_mail(content=None), "content"),
        (_mail(content=[{"type": "text/html", "value": ""}]), "content.0.value"),
        (_mail(custom_args="x"), "custom_args"),
        (_mail(personalizations=[{"to": [{"email": "a@ex.org"}]}] * 1001), "personalizations"),
    ],
)
def test_sendgrid_rejects_bad_payloads(
    sendgrid_emu: Emulator, mail: dict[str, Any], field: str
) -> None:
    response = httpx.post(
        sendgrid_emu.url + "/v3/mail/send",
        json=mail,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors[0]["field"] == field
    assert all(set(error) == {"message", "field", "help"} for error in errors)


def test_sendgrid_subject_may_come_from_every_personalization(sendgrid_emu: Emulator) -> None:
    mail = _mail(subject=None, personalizations=[{"to": [{"email": "a@ex.org"}], "subject": "S"}])
    response = httpx.post(
        sendgrid_emu.url + "/v3/mail/send",
        json=mail,
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 202


def test_sendgrid_email_errors_and_429(
    sendgrid_emu: Emulator, sendgrid_client: SendGridAPIClient
) -> None:
    sendgrid_emu.faults.update(email_errors={"Bad@Example.org": 400})
    with pytest.raises(BadRequestsError) as raised:
        sendgrid_client.send(Mail("alerts@example.org", "bad@example.org", "s", "text"))
    assert raised.value.to_dict["errors"][0]["field"] == "personalizations.0.to.0.email"
    sendgrid_emu.faults.update(error_429_rate=1.0, retry_after_s=3)
    with pytest.raises(TooManyRequestsError) as limited:
        sendgrid_client.send(Mail("alerts@example.org", "ann@example.org", "s", "text"))
    assert limited.value.headers["Retry-After"] == "3"
    assert sendgrid_emu.recorder.stats() == {"400": 1, "429": 1}
    assert sendgrid_emu.recorder.messages() == []


# -- the requests against the vendors' specs -------------------------------------------------


def test_official_client_requests_conform_to_the_specs(
    twilio_emu: Emulator,
    twilio_client: Client,
    sendgrid_emu: Emulator,
    sendgrid_client: SendGridAPIClient,
) -> None:
    # Given requests made by both official clients (custom_args at message level included)
    message = twilio_client.messages.create(
        to="+14155550123",
        from_=SENDER,
        body="hi",
        status_callback="https://example.org/s",
        validity_period=60,
        media_url=["https://example.org/a.png", "https://example.org/b.png"],
    )
    twilio_client.messages(message.sid).fetch()
    mail = Mail("alerts@example.org", ["ann@example.org", "bo@example.org"], "s", "t", "<p>t</p>")
    mail.add_custom_arg(CustomArg("blast_id", "b1"))
    mail.add_header(Header("List-Unsubscribe", "<https://ex.am/u>"))
    sendgrid_client.send(mail)
    # Then every one of them validates against the vendor's spec
    recorded = twilio_emu.recorder.requests() + sendgrid_emu.recorder.requests()
    assert [r.status for r in recorded] == [201, 200, 202]
    for request in recorded:
        assert_conforms(request)


def test_the_spec_check_can_fail(twilio_emu: Emulator, sendgrid_emu: Emulator) -> None:
    # Given requests that break the specs (and that the emulators refuse as well)
    httpx.post(
        twilio_emu.url + MESSAGES_PATH,
        data={"From": SENDER, "Body": "hi"},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    httpx.post(
        sendgrid_emu.url + "/v3/mail/send",
        json=_mail(personalizations={"to": [{"email": "ann@example.org"}]}),
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    httpx.post(sendgrid_emu.url + "/v3/mail/send", json=_mail())  # no Authorization
    [no_to] = twilio_emu.recorder.requests()
    not_an_array, anonymous = sendgrid_emu.recorder.requests()
    # Then the check reports each
    assert "'To' is a required property" in " ".join(request_errors(no_to))
    assert "is not of type 'array'" in " ".join(request_errors(not_an_array))
    assert request_errors(anonymous)
    with pytest.raises(AssertionError):
        assert_conforms(no_to)


# -- the process ------------------------------------------------------------------------------


def test_module_runs_both_emulators_in_one_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators", "--latency-ms", "1", "--auth-token", "t"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        urls = json.loads(process.stdout.readline())
        assert set(urls) == {"twilio", "sendgrid"}
        response = httpx.post(
            urls["twilio"] + MESSAGES_PATH,
            data={"To": "+14155550123", "From": SENDER, "Body": "hi"},
            auth=(ACCOUNT_SID, "t"),
        )
        assert response.status_code == 201
        with EmulatorClient(urls["twilio"]) as twilio, EmulatorClient(urls["sendgrid"]) as sendgrid:
            messages, next_seq = twilio.messages()
            assert ([m["to"] for m in messages], next_seq) == (["+14155550123"], 1)
            [recorded], _ = twilio.requests()
            assert_conforms(recorded)
            assert twilio.stats() == {"201": 1}
            assert sendgrid.faults()["latency_ms"] == 1.0
            assert sendgrid.set_faults(error_500_rate=0.25)["error_500_rate"] == 0.25
            sendgrid.reset()
            assert sendgrid.faults()["error_500_rate"] == 0.0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
