"""MMS (issue #19 item 5): ``sms.media_url`` becomes Twilio's ``MediaUrl``.

The alert takes only an https URL; our Twilio adapter sends it as ``MediaUrl`` through the
official client, and the request validates against Twilio's API description
(``tests/specs/twilio_api_v2010.json``); the emulator refuses what Twilio refuses (more than
ten media, a URL that is not one); a dry run prices an MMS per message (``RAPID_MMS_PRICE``);
and a blast goes end to end, intake to sender to the emulator, as MMS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.errors import ConfigError
from config.settings import Settings, load_settings
from emulators.server import Emulator, start_sendgrid, start_twilio
from messaging.blasts.dry_run import DryRunConfig
from messaging.blasts.intake import Intake
from messaging.content.alert import parse_alert
from messaging.errors import InputError
from messaging.memory import InMemoryBlastControl, InMemorySendQueue
from messaging.ports import Delivery, SupporterRow
from messaging.providers.base import SmsMessage, SmsReceipt
from messaging.providers.twilio_sms import TwilioSms
from messaging.store import memory_stores
from tests.fleet import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SENDGRID_KEY,
    aws_clients,
    emulated_env,
    seed_people,
    start_pipeline,
    topic_arn,
    wait_ended,
)
from tests.openapi_check import assert_conforms

IMAGE = "https://cdn.example.org/clips/debate-1.png"
MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


@pytest.fixture
def twilio() -> Iterator[Emulator]:
    with start_twilio(auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID) as emulator:
        yield emulator


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.example.org/a.png",  # not https
        "ftp://cdn.example.org/a.png",
        "https:///a.png",  # no host
        "https://cdn.example.org/a b.png",
        "cdn.example.org/a.png",
        "https://cdn.example.org/" + "a" * 2100,
    ],
)
def test_media_url_must_be_an_https_url(url: str) -> None:
    document = {"sms": {"body": "Watch", "media_url": url}}
    with pytest.raises(InputError, match="media_url"):
        parse_alert(json.dumps(document), fallback_id="x")


def test_mms_request_has_twilios_shape_and_validates_against_the_spec(twilio: Emulator) -> None:
    # Given our Twilio adapter pointed at the emulator
    sms = TwilioSms(ACCOUNT_SID, AUTH_TOKEN, base_url=twilio.url)
    try:
        # When it sends one MMS and one plain SMS
        results = sms.send_many(
            [
                SmsMessage(
                    to="+14155550123",
                    body="Watch this",
                    from_number="+15005550006",
                    status_callback="https://rr.example.org/webhooks/twilio/status",
                    media_url=IMAGE,
                ),
                SmsMessage(to="+14155550124", body="Plain", from_number="+15005550006"),
            ]
        )
    finally:
        sms.close()
    # Then both were accepted
    assert all(isinstance(r, SmsReceipt) for r in results)
    mms, plain = sorted(twilio.recorder.messages(), key=lambda m: m["to"])
    # And the MMS carried exactly one MediaUrl, the plain one none
    assert mms["media_url"] == [IMAGE] and mms["num_media"] == "1"
    assert mms["params"]["MediaUrl"] == IMAGE and mms["params"]["Body"] == "Watch this"
    assert plain["media_url"] == [] and "MediaUrl" not in plain["params"]
    # And every request is valid against Twilio's API description
    for request in twilio.recorder.requests():
        assert_conforms(request)


@pytest.mark.parametrize(
    ("media", "code"),
    [
        ([f"https://cdn.example.org/{i}.png" for i in range(11)], 21623),  # more than ten
        (["not a url"], 21620),
        (["mailto:someone@example.org"], 21620),
    ],
)
def test_emulator_refuses_media_as_twilio_does(
    twilio: Emulator, media: list[str], code: int
) -> None:
    answer = httpx.post(
        twilio.url + MESSAGES_PATH,
        data={"To": "+14155550123", "From": "+15005550006", "Body": "x", "MediaUrl": media},
        auth=(ACCOUNT_SID, AUTH_TOKEN),
    )
    assert answer.status_code == 400 and answer.json()["code"] == code
    assert twilio.recorder.messages() == []


def test_emulator_takes_ten_media_and_media_without_a_body(twilio: Emulator) -> None:
    ten = [f"https://cdn.example.org/{i}.png" for i in range(10)]
    for data in (
        {"To": "+14155550123", "From": "+15005550006", "Body": "x", "MediaUrl": ten},
        {"To": "+14155550124", "From": "+15005550006", "MediaUrl": [IMAGE]},
    ):
        answer = httpx.post(twilio.url + MESSAGES_PATH, data=data, auth=(ACCOUNT_SID, AUTH_TOKEN))
        assert answer.status_code == 201, answer.text
    assert sorted(m["num_media"] for m in twilio.recorder.messages()) == ["1", "10"]


def _dry_run(sms_part: dict[str, str], config: DryRunConfig) -> dict[str, float]:
    stores = memory_stores()
    rows = [
        SupporterRow(f"p{i}", phone=f"+1415555{1000 + i:04d}", sms_opt_in=True, topics=("t",))
        for i in range(40)
    ]
    stores.supporters.write_batch(rows, frozenset({"phone", "sms_opt_in", "topics"}))

    def unwrap(body: str) -> Delivery:
        return Delivery(body, "t", "m-1", "raw")

    intake = Intake(
        unwrap, stores.blasts, stores.ledger, InMemorySendQueue(), InMemoryBlastControl(), config
    )
    blast = intake.handle(json.dumps({"alert_id": "d", "dry_run": True, "sms": sms_part}))
    return dict(blast.stats["estimate"]["sms"])


def test_dry_run_prices_mms_per_message_at_the_mms_price() -> None:
    # Given 40 recipients, a long body (3 segments as SMS) and the configured prices
    config = DryRunConfig(org_name="Acme", sms_price_per_segment=0.01, mms_price=0.025)
    body = "x" * 400
    as_sms = _dry_run({"body": body}, config)
    as_mms = _dry_run({"body": body, "media_url": IMAGE}, config)
    # Then SMS is priced per segment, MMS per message
    assert as_sms["mms"] is False and as_sms["estimated_cost"] == round(
        as_sms["segments"] * 0.01, 2
    )
    assert as_mms["mms"] is True and as_mms["estimated_cost"] == round(40 * 0.025, 2)


def test_alert_send_builds_mms_and_scheduled_alerts() -> None:
    from workers.commands.blast import build_alert

    common: dict[str, Any] = {
        "topic": "t",
        "alert_id": "a1",
        "email_subject": None,
        "email_text": None,
        "email_html": None,
        "priority": "normal",
        "send_by": None,
        "audience_json": None,
        "test_recipients": (),
        "dry_run": False,
    }
    document = build_alert(
        **common, sms_body="Watch", media_url=IMAGE, send_at="2030-01-01T00:00:00Z"
    )
    assert document["sms"] == {"body": "Watch", "media_url": IMAGE}
    assert document["send_at"] == "2030-01-01T00:00:00Z"
    with pytest.raises(InputError, match="--media-url needs --sms-body"):
        build_alert(**common, sms_body=None, media_url=IMAGE)
    with pytest.raises(InputError, match="media_url"):
        build_alert(**common, sms_body="Watch", media_url="http://insecure.example/a.png")


def test_mms_price_comes_from_the_environment() -> None:
    assert load_settings({"RAPID_MMS_PRICE": "0.0300"}).mms_price == 0.03
    assert load_settings({}).mms_price == Settings().mms_price == 0.02
    with pytest.raises(ConfigError, match="RAPID_MMS_PRICE"):
        load_settings({"RAPID_MMS_PRICE": "cheap"})


@pytest.mark.e2e
@pytest.mark.integration
def test_an_mms_blast_goes_end_to_end(
    pg_url: str, moto_url: str, prefix: str, twilio: Emulator, tmp_path: Path
) -> None:
    # Given the fleet as processes, 20 supporters, and an alert with an image
    with start_sendgrid(api_key=SENDGRID_KEY) as sendgrid:
        env = emulated_env(twilio, sendgrid, db_url=pg_url, moto_url=moto_url, prefix=prefix)
        phones = seed_people(env, tmp_path, 20, "clips")
        sns, _ = aws_clients(moto_url)
        fleet = start_pipeline(env, tmp_path)
        try:
            alert = {"alert_id": "mms-1", "sms": {"body": "Watch {{ first_name }}"}}
            alert["sms"]["media_url"] = IMAGE  # type: ignore[index]
            sns.publish(TopicArn=topic_arn(sns, prefix, "clips"), Message=json.dumps(alert))
            summary = wait_ended(env, "mms-1", timeout_s=60)
        finally:
            fleet.stop()
    # Then every recipient got one MMS with the image, in a request Twilio's spec accepts
    assert summary["counts"]["sms"]["sent"] == 20
    messages = twilio.recorder.messages()
    assert sorted(m["to"] for m in messages) == sorted(phones)
    assert all(m["media_url"] == [IMAGE] for m in messages)
    for request in twilio.recorder.requests():
        assert_conforms(request)
