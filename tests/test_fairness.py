"""Blasts of one priority take turns in their lane (issue #21, item 2).

A lane used to be first in, first out: a blast published behind a large one of the same
priority waited for all of it. Now a blast has one unit in its lane at a time (its next
joins the back when that one starts), and a unit that paces itself gives its thread up
between pieces while other blasts wait (``queues/flow/fair.py``).
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import Engine

from config.names import Names
from messaging.ports import SendWork
from queues.lanes import Lanes, make_broker
from tests.conftest import REDIS_TEST_URL

pytestmark = [pytest.mark.integration]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_TEST_URL)
    yield client
    client.close()


def _lanes(client: redis.Redis, **options: Any) -> tuple[Lanes, list[tuple[str, int]]]:
    """Lanes on a fresh namespace whose SMS handler records (blast, first id) as it runs."""
    lanes = Lanes(make_broker(client, Names(f"fair{uuid.uuid4().hex[:8]}")), **options)
    ran: list[tuple[str, int]] = []
    lanes.handle("sms", lambda work: ran.append((work.blast_id, work.supporter_ids[0])))
    return lanes, ran


def _drain(lanes: Lanes, queue: str) -> None:
    """Run the lane's messages one at a time, in the order the broker hands them out (a
    worker with one thread and no prefetch)."""
    consumer = lanes.broker.consume(queue, prefetch=1, timeout=100)
    try:
        while (message := next(consumer)) is not None:
            lanes.broker.get_actor(message.actor_name).fn(*message.args)
            consumer.ack(message)
    finally:
        consumer.close()


def _three_units_each(lanes: Lanes, *blasts: str) -> None:
    for blast in blasts:  # each blast's whole audience at once, as expansion queues it
        for unit in range(3):
            lanes.enqueue(SendWork(blast, "sms", "normal", (unit * 10 + 1, unit * 10 + 2)))


def test_same_priority_blasts_take_turns(client: redis.Redis) -> None:
    # Given three blasts of three units each, queued one blast after the other
    lanes, ran = _lanes(client)
    _three_units_each(lanes, "a", "b", "c")
    # Then the lane holds one unit per blast; the rest wait for their blast's turn
    assert client.llen(f"{lanes.broker.namespace}:sms-normal") == 3
    assert lanes.fair is not None and lanes.fair.waiting("sms-normal", "a") == 2
    # When one thread works the lane
    _drain(lanes, "sms-normal")
    # Then the blasts take turns, each unit once, each blast's units in order
    assert ran == [(b, u) for u in (1, 11, 21) for b in ("a", "b", "c")]


def test_plain_fifo_lanes_serve_blasts_one_after_another(client: redis.Redis) -> None:
    # The same queue without turns (what the lanes did before): the last blast waits for all
    lanes, ran = _lanes(client, fair_window=0)
    _three_units_each(lanes, "a", "b", "c")
    _drain(lanes, "sms-normal")
    assert ran == [(b, u) for b in ("a", "b", "c") for u in (1, 11, 21)]


def _run(lanes: Lanes, queue: str, n: int) -> None:
    """Run the lane's next ``n`` messages, as ``_drain`` does."""
    consumer = lanes.broker.consume(queue, prefetch=1, timeout=100)
    try:
        for _ in range(n):
            message = next(consumer)
            assert message is not None, "the lane ran dry"
            lanes.broker.get_actor(message.actor_name).fn(*message.args)
            consumer.ack(message)
    finally:
        consumer.close()


def test_a_blast_new_to_the_lane_goes_ahead_of_those_taking_turns(client: redis.Redis) -> None:
    # Given two blasts taking turns, each with units still to go
    lanes, ran = _lanes(client)
    _three_units_each(lanes, "a", "b")
    _run(lanes, "sms-normal", 2)
    assert ran == [("a", 1), ("b", 1)]
    # When two new blasts queue their work, one after the other
    _three_units_each(lanes, "c", "d")
    # Then each starts within a turn, ahead of the old blasts' next units and in the order
    # they came, and from there on all four take turns
    ran.clear()
    _drain(lanes, "sms-normal")
    assert ran[:4] == [("c", 1), ("d", 1), ("a", 11), ("b", 11)]
    assert len(ran) == 10
    assert ran[4:8] == [("c", 11), ("d", 11), ("a", 21), ("b", 21)]


def test_a_sending_blast_is_not_new_when_its_next_piece_comes_back(client: redis.Redis) -> None:
    # A blast whose unit comes back after a piece (what a sender does between turns) joins
    # the back like everyone: only a blast's first unit goes ahead
    lanes, ran = _lanes(client)
    lanes.enqueue(SendWork("a", "sms", "normal", (1, 2)))  # a: one unit
    _three_units_each(lanes, "b")  # the lane holds a1, b1
    _run(lanes, "sms-normal", 2)  # a1 and b1 ran: the lane holds b11, nothing of a
    lanes.enqueue(SendWork("a", "sms", "normal", (2,)))  # the rest of a1 comes back
    ran.clear()
    _drain(lanes, "sms-normal")
    assert ran == [("b", 11), ("a", 2), ("b", 21)]


def test_only_a_blasts_first_unit_on_its_lane_is_its_opening(client: redis.Redis) -> None:
    # Given a lane where blast a is sending, and blast b arrives with three units
    lanes = Lanes(make_broker(client, Names(f"fair{uuid.uuid4().hex[:8]}")))
    seen: list[tuple[str, int, bool]] = []
    lanes.handle("sms", lambda w: seen.append((w.blast_id, w.supporter_ids[0], w.opening)))
    lanes.enqueue(SendWork("a", "sms", "normal", (1,)))
    _drain(lanes, "sms-normal")
    lanes.enqueue(SendWork("a", "sms", "normal", (2,)))  # a's next piece comes back
    _three_units_each(lanes, "b")
    _drain(lanes, "sms-normal")
    # Then b's first unit reaches its handler as the blast's opening (it went ahead of a),
    # and nothing else does: not b's later units, not a's returning piece
    assert seen[0] == ("a", 1, True)
    assert seen[1:] == [("b", 1, True), ("a", 2, False), ("b", 11, False), ("b", 21, False)]


def test_a_unit_knows_when_other_blasts_wait_and_priorities_stay_apart(
    client: redis.Redis,
) -> None:
    lanes, _ = _lanes(client)
    a = SendWork("a", "sms", "normal", (1,))
    # Given a lone blast, it keeps its thread
    lanes.enqueue(a)
    lanes.enqueue(SendWork("a", "sms", "normal", (2,)))
    assert not lanes.others_waiting(a)
    # When a second blast of the same priority queues work, the first is told to take turns
    lanes.enqueue(SendWork("b", "sms", "normal", (1,)))
    assert lanes.others_waiting(a)
    # And work of another priority or channel is in lanes of its own, never waited for
    urgent = SendWork("u", "sms", "urgent", (1,))
    lanes.enqueue(urgent)
    assert not lanes.others_waiting(urgent)
    assert not lanes.others_waiting(SendWork("e", "email", "normal", (1,)))
    assert client.llen(f"{lanes.broker.namespace}:sms-urgent") == 1
    # And once every waiting unit of the other blast has started, the first keeps its thread
    _drain(lanes, "sms-normal")
    assert not lanes.others_waiting(a)


def test_a_lane_knows_while_a_new_blasts_opening_waits_for_a_thread(client: redis.Redis) -> None:
    from queues.lanes import OPENINGS_ANSWER_TTL_S

    def asked_afresh(work: SendWork) -> bool:
        time.sleep(OPENINGS_ANSWER_TTL_S)  # answers are kept that long
        return lanes.openings_waiting(work)

    lanes, _ = _lanes(client)
    a = SendWork("a", "sms", "normal", (1,))
    # Given blast a sending (its opening has started) and its next unit queued
    lanes.enqueue(a)
    _drain(lanes, "sms-normal")
    lanes.enqueue(SendWork("a", "sms", "normal", (2,)))
    assert not asked_afresh(a)
    # When blast b arrives, its opening waits for a thread until it starts
    lanes.enqueue(SendWork("b", "sms", "normal", (1,)))
    lanes.enqueue(SendWork("b", "sms", "normal", (2,)))
    assert asked_afresh(a)
    # And not on another lane
    assert not asked_afresh(SendWork("u", "sms", "urgent", (1,)))
    # Then once it has started, no opening waits
    _drain(lanes, "sms-normal")
    assert not asked_afresh(a)


def test_delayed_work_goes_on_the_lane_when_due_outside_the_turns(client: redis.Redis) -> None:
    lanes, _ = _lanes(client)
    lanes.enqueue(SendWork("a", "sms", "normal", (1,)))
    lanes.enqueue(SendWork("a", "sms", "normal", (2,), delay_s=30.0))  # a retry, later
    assert lanes.fair is not None and lanes.fair.waiting("sms-normal", "a") == 0
    assert client.llen(f"{lanes.broker.namespace}:sms-normal.DQ") == 1


def test_a_place_held_by_a_unit_that_cannot_start_lapses_and_the_next_unit_goes_in(
    client: redis.Redis,
) -> None:
    from queues.flow import fair

    # Given a blast whose unit in the lane was fetched by a worker that then died (the
    # broker gives such messages back only after a minute or more), and units behind it
    lanes, ran = _lanes(client)
    for unit in (1, 2, 3):
        lanes.enqueue(SendWork("a", "sms", "normal", (unit,)))
    consumer = lanes.broker.consume("sms-normal", prefetch=1, timeout=100)
    held = next(consumer)
    assert held is not None and tuple(held.args[:2]) == ("a", [1])
    # When its place lapses (the count's TTL) and the lanes are pumped (every unit that
    # starts and every scheduler pass does)
    client.pexpire(f"{lanes.broker.namespace}:fair:v1:sms-normal:a:queued", 1)
    time.sleep(0.01)
    assert lanes.pump() == 1
    # Then the blast's next units flow again, in order
    _drain(lanes, "sms-normal")
    assert ran == [("a", 2), ("a", 3)]
    assert lanes.pump() == 0  # and nothing is let in twice
    assert fair.COUNT_TTL_MS <= 10_000  # seconds, not the sweep's two-minute stall window
    consumer.close()


def _blast_of(body: str) -> str:
    found = re.search(r"\[(night-\d)\]", body)  # first contact texts start with the org's name
    assert found is not None, body
    return found.group(1)


@pytest.mark.e2e
@pytest.mark.postgres
def test_concurrent_blasts_interleave_at_the_provider(
    pg_url: str, moto_url: str, prefix: str, tmp_path: Path
) -> None:
    from tests.fleet import (
        EmulatorProcess,
        Fleet,
        aws_clients,
        fleet_env,
        rapid,
        topic_arn,
        wait_ended,
        write_people,
    )

    emulators = EmulatorProcess()
    env = fleet_env(
        db_url=pg_url,
        moto_url=moto_url,
        prefix=prefix,
        twilio_url=emulators.twilio_url,
        sendgrid_url=emulators.sendgrid_url,
        SMS_RATE_ACCOUNT="200",
        SMS_RATE_PER_SENDER="100",
    )
    rapid(env, "provision", "--topic", "night")
    write_people(tmp_path / "p.csv", 1_200, "night")
    rapid(env, "supporters", "import", str(tmp_path / "p.csv"))
    fleet = Fleet(env, tmp_path)
    fleet.start("intake", "intake", "--wait-time", "1")
    fleet.start("sender", "sender", "--threads", "2", "--channels", "sms")
    sns, _ = aws_clients(moto_url)
    blasts = [f"night-{n}" for n in range(4)]
    try:
        # When four normal blasts of 1,200 texts each are published at once
        for blast in blasts:
            sns.publish(
                TopicArn=topic_arn(sns, prefix, "night"),
                Message=json.dumps({"alert_id": blast, "sms": {"body": f"[{blast}] Hi"}}),
            )
        for blast in blasts:
            summary = wait_ended(env, blast, timeout_s=180)
            assert summary["counts"]["sms"]["sent"] == 1_200
        # Then every blast's first text reached the provider before any blast finished
        messages = sorted(emulators.sms(), key=lambda m: m["received_at"])
        order = [_blast_of(m["body"]) for m in messages]
        times: dict[str, list[float]] = {b: [] for b in blasts}
        for blast, m in zip(order, messages, strict=True):
            times[blast].append(m["received_at"])
        first_end = min(t[-1] for t in times.values())
        assert all(t[0] < first_end for t in times.values()), {
            b: (t[0], t[-1]) for b, t in times.items()
        }
        # And the sends interleave: the provider saw the blasts alternate many times, not
        # one blast after another (that would be 3 switches)
        switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
        assert switches >= 20, switches
    finally:
        fleet.stop()
        emulators.close()


def _forty_text_blast(engine: Engine, alert_id: str) -> tuple[Any, Any, Any, Any]:
    """A 40-text blast at 40 texts/s (a piece is what 0.25 s of rate can send, x1.5),
    expanded: its one unit of work, the queue (emptied), an in-memory SMS and a sender."""
    from messaging.blasts.expansion import Expander
    from messaging.content.alert import parse_alert
    from messaging.providers.memory import InMemorySms
    from messaging.sending.sms import SmsConfig, SmsSender
    from tests.factories import add_supporters, send_context

    config = SmsConfig(
        org_name="Acme",
        from_numbers=("+15005550006",),
        rate_per_sender_per_s=40,
        rate_account_per_s=40,
    )
    add_supporters(engine, [{"phone": f"+1415555{100 + i:04d}"} for i in range(40)], topic="t")
    ctx, queue = send_context(engine)
    blast, _ = ctx.blasts.create(
        parse_alert(json.dumps({"alert_id": alert_id, "sms": {"body": "Hi"}}), fallback_id="x"),
        "t",
        None,
    )
    Expander(ctx.ledger, ctx.blasts, queue).expand(blast)
    (work,) = queue.items
    queue.items.clear()
    sms = InMemorySms()
    return work, queue, sms, SmsSender(ctx, sms, config)


def test_an_sms_unit_gives_its_thread_up_between_pieces_while_others_wait(
    engine: Engine,
) -> None:
    # Given a 40-text blast at 40 texts/s
    work, queue, sms, sender = _forty_text_blast(engine, "f1")
    # When other blasts wait for a thread on its lane
    queue.contended = True
    sender.process(work)
    # Then it sends one piece and queues the rest behind them, at once (no delay)
    assert 0 < len(sms.sent) < 40
    (rest,) = queue.items
    assert len(rest.supporter_ids) == 40 - len(sms.sent) and rest.delay_s == 0
    # And alone on its lane it keeps its thread until its work is done
    queue.items.clear()
    queue.contended = False
    sender.process(rest)
    assert len(sms.sent) == 40 and queue.items == []


def test_a_blasts_opening_unit_sends_a_few_texts_first_then_takes_turns(
    engine: Engine,
) -> None:
    from dataclasses import replace

    from messaging.sending.sms import OPENING_PIECE

    # Given a 40-text blast whose unit is its opening on the lane (a piece would be 15)
    work, queue, sms, sender = _forty_text_blast(engine, "o1")
    # When other blasts wait on the lane
    queue.contended = True
    sender.process(replace(work, opening=True))
    # Then its first piece is a few texts and the rest queues behind the others, no
    # longer an opening
    assert len(sms.sent) == OPENING_PIECE
    (rest,) = queue.items
    assert len(rest.supporter_ids) == 40 - OPENING_PIECE and not rest.opening
    # And alone on the lane, an opening goes on in full pieces after its first few texts
    queue.items.clear()
    queue.contended = False
    sender.process(replace(rest, opening=True))
    assert len(sms.sent) == 40 and queue.items == []
