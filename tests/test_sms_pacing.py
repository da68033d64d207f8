"""Paced sends stay on their slots (issue #21, item 6): a late one takes a fresh slot without
holding up the others (against the Twilio emulator), and the gate asked before each send
never blocks the provider's event loop."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

from aiohttp.abc import AbstractResolver, ResolveResult

from emulators.server import Emulator
from messaging.providers.base import SmsMessage, SmsReceipt, SmsResult
from messaging.providers.twilio_sms import LATE_TOLERANCE_S, TwilioSms
from messaging.sending.common import GATE_REFRESH_S, SendGate
from tests.factories import emulated_twilio_fixture

ACCOUNT_SID = "AC" + "5a6b7c8d9e0f1234" * 2
AUTH_TOKEN = "pacing-auth-token"
FROM = "+15005550006"


twilio = emulated_twilio_fixture(ACCOUNT_SID, AUTH_TOKEN)


def _text(to: str, slot: float) -> SmsMessage:
    return SmsMessage(to=to, body="hello", from_number=FROM, send_at_s=slot)


def test_a_late_send_asks_for_a_fresh_slot_without_holding_up_the_others(
    twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    # Given one text whose slot passed a second ago, and one due 100 ms from now, and a
    # limiter that takes a second to answer for the late one (a loaded Redis)
    now = time.time()
    late, on_time = _text("+14155550001", now - 1.0), _text("+14155550002", now + 0.1)
    asked: list[str] = []

    def reslot(message: SmsMessage) -> float:
        asked.append(message.to)
        time.sleep(1.0)
        return time.time()

    # When both are sent
    results = twilio.send_many([late, on_time], reslot=reslot)
    # Then the late one went on its fresh slot, and the other one on its own, unhindered:
    # before the limiter had answered for the late one (a margin for a loaded test host)
    assert all(isinstance(r, SmsReceipt) for r in results), results
    assert late.to in asked  # (the other one only if this host was too busy to keep time)
    got = {m["to"]: m["received_at"] for m in twilio_emulator.recorder.messages()}
    assert got[on_time.to] - on_time.send_at_s < 0.8, got[on_time.to] - on_time.send_at_s
    assert got[on_time.to] < got[late.to] and got[late.to] >= now + 1.0


def test_a_send_within_the_tolerance_keeps_its_slot(
    twilio_emulator: Emulator, twilio: TwilioSms
) -> None:
    # Given texts a little late, within the tolerance (sent one after another: on a busy
    # test host the loop itself may take longer than the tolerance to look, once or twice)
    resloted: list[str] = []

    def reslot(message: SmsMessage) -> float:
        resloted.append(message.to)
        return time.time()

    kept = 0
    for n in range(5):
        message = _text(f"+1415555002{n}", time.time() - LATE_TOLERANCE_S / 4)
        [result] = twilio.send_many([message], reslot=reslot)
        assert isinstance(result, SmsReceipt)
        kept += message.to not in resloted
        if kept:
            break
    # When sent, then it goes at once on its own slot, without asking for a fresh one
    assert kept == 1, resloted


def test_a_send_with_no_fresh_slot_is_held(twilio_emulator: Emulator, twilio: TwilioSms) -> None:
    # Given a late text and a schedule full up to the horizon (the limiter grants nothing)
    message = replace(_text("+14155550004", time.time() - 1.0))
    # When sent, then it is held (no result, not sent) for the batch to put back
    assert twilio.send_many([message], reslot=lambda _m: None) == [None]
    assert twilio_emulator.recorder.messages() == []


class _Control:
    """The kill switch as the gate sees it: a status, read with a delay (a loaded Redis)."""

    def __init__(self) -> None:
        self.status = "sending"
        self.delay_s = 0.0

    def gate(self, _blast_id: str, _fallback: str) -> bool:
        time.sleep(self.delay_s)
        return self.status == "sending"


class _Stops:
    def __init__(self) -> None:
        self.found: set[str] = set()

    def refresh(self) -> set[str]:
        return self.found


def _gate(control: _Control, stops: _Stops) -> SendGate:
    blast = SimpleNamespace(blast_id="b1", status="sending")
    return SendGate(cast(Any, control), cast(Any, blast), cast(Any, stops))


def test_the_gate_never_waits_for_redis_on_the_provider_loop() -> None:
    # Given a batch's gate, and then a cancel and a STOP that take the kill switch 300 ms
    # to read
    control, stops = _Control(), _Stops()
    gate = _gate(control, stops)
    control.status, control.delay_s = "canceled", 0.3
    stops.found.add("+14155550009")
    time.sleep(GATE_REFRESH_S)

    async def ask() -> tuple[bool, float]:
        started = time.monotonic()
        answer = gate("+14155550001")
        return answer, time.monotonic() - started

    # When a send on an event loop asks, it is answered at once from the last look
    answer, took_s = asyncio.run(ask())
    assert answer is True and took_s < 0.05, took_s
    # Then, once the gate has looked again (on another thread), no send may go
    time.sleep(0.5)
    assert asyncio.run(ask())[0] is False


def test_the_gate_looks_at_once_off_an_event_loop() -> None:
    # Given a batch's gate asked from a plain thread (the in-memory transport)
    control, stops = _Control(), _Stops()
    gate = _gate(control, stops)
    assert gate("+14155550001") and gate("+14155550009")
    # When a STOP lands, then that destination is closed at the next ask, the others not
    stops.found.add("+14155550009")
    assert gate("+14155550001") and not gate("+14155550009")
    # When the blast is paused, then nothing may go
    control.status = "paused"
    assert not gate("+14155550001")


def test_the_gate_closes_when_the_kill_switch_cannot_be_read() -> None:
    # Given a batch's gate, and then Redis stops answering
    control, stops = _Control(), _Stops()
    gate = _gate(control, stops)

    def unreadable(_blast_id: str, _fallback: str) -> bool:
        raise ConnectionError("redis down")

    control.gate = unreadable  # type: ignore[method-assign]
    time.sleep(GATE_REFRESH_S)

    async def ask() -> bool:
        return gate("+14155550001")

    # When sends on the provider loop ask, then once the failed look is in, none may go
    asyncio.run(ask())
    time.sleep(0.2)
    assert asyncio.run(ask()) is False


def _send_due_together(
    twilio: TwilioSms, emulator: Emulator, numbers: list[str]
) -> tuple[list[SmsResult], dict[str, float], float, dict[str, float]]:
    """Send a text to each of ``numbers``, all due in 50 ms, a late one taking a fresh slot
    50 ms on; closes ``twilio``. Returns the results, the fresh slots by number, when they
    were due, and when each reached the emulator."""
    due = time.time() + 0.05
    texts = [_text(to, due + n * 0.001) for n, to in enumerate(numbers)]
    fresh: dict[str, float] = {}

    def reslot(message: SmsMessage) -> float:
        fresh[message.to] = time.time() + 0.05
        return fresh[message.to]

    try:
        results = twilio.send_many(texts, reslot=reslot)
    finally:
        twilio.close()
    got = {m["to"]: m["received_at"] for m in emulator.recorder.messages()}
    return results, fresh, due, got


def test_a_send_that_waited_for_room_in_flight_takes_a_fresh_slot(
    twilio_emulator: Emulator,
) -> None:
    # Given a process that keeps two requests in flight, a provider answering in 300 ms, and
    # four texts due together: the last two can only leave once the first two are answered
    twilio_emulator.reset()
    twilio_emulator.faults.update(latency_ms=300)
    twilio = TwilioSms(ACCOUNT_SID, AUTH_TOKEN, base_url=twilio_emulator.url, max_in_flight=2)
    try:
        # When they are sent
        results, fresh, _, got = _send_due_together(
            twilio, twilio_emulator, [f"+1415555003{n}" for n in range(4)]
        )
    finally:
        twilio_emulator.faults.update(latency_ms=0)
    # Then all four went, and the two that waited ~300 ms for room did not leave on their
    # old slots in a bunch: each asked for a fresh slot and arrived after it
    assert all(isinstance(r, SmsReceipt) for r in results), results
    waited = sorted(got, key=got.__getitem__)[2:]
    assert set(waited) <= set(fresh), (waited, fresh)
    assert all(got[to] >= fresh[to] - 0.01 for to in waited), (got, fresh)


class _SlowResolver(AbstractResolver):
    """Names resolve to loopback after ``delay_s``: a new connection that is slow to open
    (at Twilio, the TCP and TLS handshakes; here, a blast's first few hundred at once)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        await asyncio.sleep(self.delay_s)
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]  # fmt: skip

    async def close(self) -> None:
        return None


def test_a_send_whose_connection_was_slow_to_open_takes_a_fresh_slot(
    twilio_emulator: Emulator,
) -> None:
    # Given a process with no connection open yet, whose new connections take 150 ms to
    # open, and three texts due in 50 ms
    twilio_emulator.reset()
    twilio = TwilioSms(
        ACCOUNT_SID,
        AUTH_TOKEN,
        base_url=twilio_emulator.url.replace("127.0.0.1", "localhost"),
        resolver=_SlowResolver(0.15),
    )
    # When they are sent
    results, fresh, due, got = _send_due_together(
        twilio, twilio_emulator, [f"+1415555004{n}" for n in range(3)]
    )
    # Then the connections were opened before the sends were judged on time: each text
    # found itself late, took a fresh slot, and reached the provider on that slot, not
    # ~150 ms after its old one in a bunch with the sends that were on time
    assert all(isinstance(r, SmsReceipt) for r in results), results
    assert set(got) == set(fresh), (got, fresh)
    assert all(slot > due + 0.1 for slot in fresh.values()), (fresh, due)
    assert all(got[to] - fresh[to] <= LATE_TOLERANCE_S + 0.03 for to in got), (got, fresh)
