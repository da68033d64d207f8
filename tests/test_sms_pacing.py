"""The Twilio adapter keeps paced sends on their slots: a late one takes a fresh slot without
holding up the others (issue #21, item 6), against the Twilio emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from emulators.server import Emulator
from messaging.providers.base import SmsMessage, SmsReceipt
from messaging.providers.twilio_sms import LATE_TOLERANCE_S, TwilioSms

ACCOUNT_SID = "AC" + "5a6b7c8d9e0f1234" * 2
AUTH_TOKEN = "pacing-auth-token"
FROM = "+15005550006"


@pytest.fixture
def twilio(twilio_emulator: Emulator) -> Iterator[TwilioSms]:
    twilio_emulator.reset()
    sms = TwilioSms(ACCOUNT_SID, AUTH_TOKEN, base_url=twilio_emulator.url)
    yield sms
    sms.close()


def _text(to: str, slot: float) -> SmsMessage:
    return SmsMessage(to=to, body="hello", from_number=FROM, send_at_s=slot)


def test_a_late_send_asks_for_a_fresh_slot_without_holding_up_the_others(
    twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    # Given one text whose slot passed a second ago, and one due 100 ms from now, and a
    # limiter that takes 400 ms to answer for the late one (a loaded Redis)
    now = time.time()
    late, on_time = _text("+14155550001", now - 1.0), _text("+14155550002", now + 0.1)
    asked: list[str] = []

    def reslot(message: SmsMessage) -> float:
        asked.append(message.to)
        time.sleep(0.4)
        return time.time()

    # When both are sent
    results = twilio.send_many([late, on_time], reslot=reslot)
    # Then the late one went on its fresh slot, and the other one on its own, unhindered
    assert all(isinstance(r, SmsReceipt) for r in results), results
    assert asked == [late.to]
    got = {m["to"]: m["received_at"] for m in twilio_emulator.recorder.messages()}
    assert got[on_time.to] - on_time.send_at_s < 0.2, got[on_time.to] - on_time.send_at_s
    assert got[late.to] >= now + 0.4


def test_a_send_within_the_tolerance_keeps_its_slot(
    twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    # Given a text a little late, within the tolerance
    message = _text("+14155550003", time.time() - LATE_TOLERANCE_S / 4)

    def reslot(_m: SmsMessage) -> float:
        raise AssertionError("no fresh slot within the tolerance")

    # When sent, then it goes at once on its own slot
    [result] = twilio.send_many([message], reslot=reslot)
    assert isinstance(result, SmsReceipt)


def test_a_send_with_no_fresh_slot_is_held(twilio_emulator: Emulator, twilio: TwilioSms) -> None:
    # Given a late text and a schedule full up to the horizon (the limiter grants nothing)
    message = replace(_text("+14155550004", time.time() - 1.0))
    # When sent, then it is held (no result, not sent) for the batch to put back
    assert twilio.send_many([message], reslot=lambda _m: None) == [None]
    assert twilio_emulator.recorder.messages() == []
