"""The room a binding rate's schedule has left (issue #21): sender threads size their pieces to
it, so rows are not claimed only to be put back."""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine

from messaging.blasts.expansion import Expander
from messaging.content.alert import parse_alert
from messaging.memory import InMemoryRateLimiter
from messaging.ports import SendWork
from messaging.providers.memory import InMemorySms
from messaging.sending.common import BatchReport
from messaging.sending.pacing import interval_us
from messaging.sending.room import GIVE_UP_POLL_S, Room
from messaging.sending.sms import SmsSender
from tests.factories import add_supporters, send_context, sms_config


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_a_piece_is_whole_while_the_schedule_has_room() -> None:
    t = FakeTime()
    room = Room(t.clock, t.sleep)
    # A horizon holds 251 slots at 1 ms: the whole piece, at once
    room.take(want=75, interval_s=0.001, horizon_s=0.25).settle(75)
    assert t.slept == []
    # At 5 ms (the schedule now booked 75 ms ahead by the piece above) it holds 36 more
    assert abs(room.take(want=75, interval_s=0.005, horizon_s=0.25).size - 36) <= 1  # (floats)


def test_a_piece_waits_for_room_then_takes_only_the_room() -> None:
    t = FakeTime()
    limiter = InMemoryRateLimiter(t.clock)
    room = Room(t.clock, t.sleep)
    interval_s = interval_us(200) / 1e6
    # Given a thread whose piece was the room a horizon holds, all of it granted: the
    # schedule is now booked a whole horizon ahead
    booking = room.take(want=75, interval_s=interval_s, horizon_s=0.25)
    booked = limiter.reserve("k", 200, n=booking.size, horizon_s=0.25)
    assert booking.size < 75 and booked.granted == booking.size
    booking.settle(booked.granted, booked.booked_until_s)
    # When the next thread takes room
    booking = room.take(want=75, interval_s=interval_s, horizon_s=0.25)
    # Then it waited for a quarter piece of room (not claiming for nothing) and took no more
    # than the limiter then grants
    assert sum(t.slept) == pytest.approx(
        booked.booked_until_s + 18 * interval_s - 0.25 - 1_000.0, abs=0.002
    )
    again = limiter.reserve("k", 200, n=booking.size, horizon_s=0.25)
    assert booking.size >= 18 and abs(again.granted - booking.size) <= 1  # (float rounding)


def test_threads_take_disjoint_room_and_give_back_what_they_did_not_use() -> None:
    t = FakeTime()
    room = Room(t.clock, t.sleep)
    # Given one thread holding room for 30 of the 51 slots a horizon holds, not yet reserved
    first = room.take(want=30, interval_s=0.005, horizon_s=0.25)
    # Then a second thread gets only the other 21, at once
    second = room.take(want=30, interval_s=0.005, horizon_s=0.25)
    assert (first.size, second.size, t.slept) == (30, 21, [])
    # When the first reserves only 10 (its work had fewer rows) and the second all of its
    first.settle(granted=10)
    second.settle(granted=21)
    second.settle(granted=0)  # settling twice is harmless (the caller's `finally`)
    # Then the 20 it did not use are room again
    assert room.take(want=30, interval_s=0.005, horizon_s=0.25).size == 20
    assert t.slept == []


def test_a_thread_waiting_for_room_gives_it_up_when_told() -> None:
    t = FakeTime()
    room = Room(t.clock, t.sleep)
    # Given the schedule booked a second ahead (other processes' threads)
    room.take(want=1, interval_s=0.005, horizon_s=0.25).settle(1, booked_until_s=t.now + 1.0)
    asked: list[float] = []

    def others_wait() -> bool:
        asked.append(t.now)
        return len(asked) == 3

    # When a thread waits for room, and other blasts' units wait for a thread by its third ask
    booking = room.take(want=30, interval_s=0.005, horizon_s=0.25, give_up=others_wait)
    # Then it asked every GIVE_UP_POLL_S while it waited and gave up at the third ask
    assert booking is None
    assert t.slept == [GIVE_UP_POLL_S] * 3
    # And while nobody waits it waits for the room and takes it
    booking = room.take(want=30, interval_s=0.005, horizon_s=0.25, give_up=lambda: False)
    assert booking is not None and booking.size >= 8


def _expanded(engine: Engine, ctx: Any, queue: Any, alert_id: str, first: int, n: int) -> SendWork:
    """A blast of ``n`` new texters (numbers from ``first`` on), expanded: its work as one unit."""
    topic = f"t-{alert_id}"
    add_supporters(engine, [{"phone": f"+1415{first + i:07d}"} for i in range(n)], topic=topic)
    alert = parse_alert(json.dumps({"alert_id": alert_id, "sms": {"body": "Hi"}}), fallback_id="x")
    blast, _ = ctx.blasts.create(alert, topic, None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    ids = sorted(i for w in queue.items for i in w.supporter_ids)
    queue.items.clear()
    return SendWork(alert_id, "sms", "normal", tuple(ids))


def _booked_by_a_big_blast(
    engine: Engine, alert_id: str, texts: int, limiter: InMemoryRateLimiter | None = None
) -> tuple[SendWork, Any, InMemorySms, SmsSender, float]:
    """A blast of ``texts`` (``alert_id``) is expanded; then, at 500 texts/s, a big blast's
    piece books the schedule a quarter second ahead (of ``limiter``'s clock) while other
    blasts wait for a thread: (the first blast's work, the queue, sms, sender, booked until)."""
    ctx, queue = send_context(engine)
    if limiter is not None:
        ctx = replace(ctx, limiter=limiter)
    sms = InMemorySms()
    sender = SmsSender(ctx, sms, sms_config(500))
    work = _expanded(engine, ctx, queue, alert_id, 1_000_000, texts)
    big = _expanded(engine, ctx, queue, "big", 0, 400)
    queue.contended = True
    sender.process(big)
    queue.items.clear()
    slots = [m.send_at_s or 0.0 for m in sms.sent]
    assert max(slots) - min(slots) > 0.2
    return work, queue, sms, sender, max(slots)


def test_a_new_blasts_first_text_goes_ahead_of_the_schedule_others_booked(
    engine: Engine,
) -> None:
    new, _, sms, sender, booked_until = _booked_by_a_big_blast(engine, "new", 10)
    # When the new blast's opening unit runs
    started = time.time()
    sender.process(replace(new, opening=True))
    # Then its first text goes at once (the express schedule), ahead of the booked stretch,
    # and its next ones behind it
    slots = sorted(m.send_at_s or 0.0 for m in sms.sent if m.to.startswith("+14151"))
    assert len(slots) == 5
    assert slots[0] - started < 0.05 and slots[0] < booked_until <= slots[1], (
        started,
        slots,
        booked_until,
    )


def test_a_unit_waiting_for_room_gives_its_thread_up_while_others_wait(engine: Engine) -> None:
    # (booked 1.5 s further ahead: however slow the host, the next step finds no room; a
    # quarter second was too little once, with SQLite under a full parallel suite)
    ahead_s = [1.5]
    limiter = InMemoryRateLimiter(lambda: time.time() + ahead_s[0])
    later, queue, sms, sender, _ = _booked_by_a_big_blast(engine, "later", 400, limiter)
    # When a unit that is not an opening finds no room for a quarter of its piece while a
    # new blast's opening waits for a thread
    queue.opening_waits = True
    report = sender.process(later)
    # Then it gives its thread up, every row back on the lane, none claimed
    assert report.claimed == 0 and report.requeued == 400, report
    assert [w.supporter_ids for w in queue.items] == [later.supporter_ids]
    # But with only blasts taking turns waiting (no opening), it waits for room and sends a
    # piece before it takes its turn
    ahead_s[0] = 0.0
    queue.items.clear()
    queue.opening_waits = False
    report = sender.process(later)
    assert report.claimed > 0 and report.claimed + report.requeued == 400, report
    # And alone on the lane it sends all of it
    (rest,) = queue.items
    queue.items.clear()
    queue.contended = False
    sender.process(rest)
    assert sum(m.to.startswith("+14151") for m in sms.sent) == 400


def test_threads_on_a_binding_rate_claim_each_row_once(engine: Engine) -> None:
    # Given 600 texters, their blast's work in four units, and four threads sending at a
    # binding 200/s (a provider with no latency: the schedule is all that holds them back)
    add_supporters(engine, [{"phone": f"+1415555{i:04d}"} for i in range(600)], topic="t")
    ctx, queue = send_context(engine)
    alert = parse_alert(json.dumps({"alert_id": "tn", "sms": {"body": "Hi"}}), fallback_id="x")
    blast, _ = ctx.blasts.create(alert, "t", None)
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    ids = sorted({i for w in queue.items for i in w.supporter_ids})
    queue.items[:] = [SendWork("tn", "sms", "normal", tuple(ids[k::4])) for k in range(4)]
    sms = InMemorySms()
    sender = SmsSender(ctx, sms, sms_config(200))
    reports: list[BatchReport] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not queue.items:
                    return
                unit = queue.items.pop(0)
            report = sender.process(unit)
            with lock:
                reports.append(report)

    # When they send it all
    started = time.monotonic()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then everyone got one text, rows were claimed about once (no churn of claims only to
    # be put back: a host stall between a thread's view of the room and its reservation may
    # put a few back, as 16 of 48 once in a fresh-clone run under the parallel suite on
    # SQLite; claims ahead of the schedule put back most), and the slots kept the rate
    assert len(sms.sent) == 600 and len({m.to for m in sms.sent}) == 600
    assert 600 <= sum(r.claimed for r in reports) <= 600 + 600 // 20
    slots = sorted(m.send_at_s for m in sms.sent)
    assert min(b - a for a, b in itertools.pairwise(slots)) >= interval_us(200) / 1e6 - 1e-6
    assert time.monotonic() - started >= (slots[-1] - slots[0]) - 0.3
