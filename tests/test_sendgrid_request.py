"""The SendGrid request as the transport sends it: encoded once (orjson), posted through the
official client's endpoint with its key and content type, and conforming to SendGrid's v3
mail/send spec (tests/specs/tsg_mail_v3.json)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from emulators.server import Emulator, start_sendgrid
from messaging.providers.base import EmailBatch, EmailRecipient, SharedBodies
from messaging.providers.sendgrid_email import SendGridEmail, build_request, encode_request
from tests.openapi_check import assert_conforms

KEY = "SG.request.key"


@pytest.fixture
def sendgrid() -> Iterator[Emulator]:
    with start_sendgrid(api_key=KEY) as emulator:
        yield emulator


def _batch(n: int) -> EmailBatch:
    recipients = [
        EmailRecipient(
            to=f"p{i}@example.org",
            subject=f"Hi Zoë {i}",
            text=None,
            html=None,
            headers={"List-Unsubscribe": f"<https://rr.example/unsubscribe/t{i}>"},
            custom_args={"blast_id": "b1", "supporter_id": str(i)},
            substitutions={"-n-": f'<Zoë & "{i}">', "-u-": f"t{i}"},
        )
        for i in range(n)
    ]
    shared = SharedBodies(text="Hi -n- -u-", html="<p>Hi -n-</p><a href='-u-'>x</a>")
    return EmailBatch("news@acme.example", "Acme", recipients, shared=shared)


def test_the_request_is_the_built_body_and_conforms(sendgrid: Emulator) -> None:
    # Given a shared-bodies batch with non-ASCII, quotes and markup in its values
    batch = _batch(3)
    # When the transport sends it
    (call,) = SendGridEmail(KEY, base_url=sendgrid.url).send_batch(batch)
    # Then one request went, with the key, as JSON, equal to the body we built, per spec
    assert call.error is None and call.message_id
    (request,) = sendgrid.recorder.requests()
    assert_conforms(request)
    headers = dict(request.headers)
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["content-type"] == "application/json"
    assert json.loads(request.body) == build_request(batch, batch.recipients, inline=False)
    # And each recipient got its own substitutions, subject and custom_args
    received = {m["to"]: m for m in sendgrid.recorder.messages()}
    assert received["p1@example.org"]["content"]["text/plain"] == 'Hi <Zoë & "1"> t1'
    assert received["p2@example.org"]["subject"] == "Hi Zoë 2"
    assert received["p2@example.org"]["custom_args"] == {"blast_id": "b1", "supporter_id": "2"}


def test_encoding_matches_json_and_keeps_lone_surrogates_as_json_did() -> None:
    body = build_request(_batch(2), _batch(2).recipients, inline=False)
    assert json.loads(encode_request(body)) == body
    # orjson refuses a lone surrogate (possible from an alert's JSON escapes): json's bytes
    odd = {"subject": "broken \ud800 pair"}
    assert encode_request(odd) == json.dumps(odd).encode()


def test_a_base_url_other_than_http_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        SendGridEmail(KEY, base_url="file:///etc")
