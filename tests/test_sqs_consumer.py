"""The intake's SQS consumer drains a burst with receives in parallel (issue #21, fairness).

Fifty alerts published at once used to come in one receive of ten at a time; on a loaded
host each call took 0.2-0.6 s, and the last alert's first send waited for the whole chain.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from queues.sqs_consumer import MAX_BATCH, MAX_PARALLEL_POLLS, SqsConsumer
from tests.fleet import moto_client

pytestmark = [pytest.mark.integration]


class CountingSqs:
    """The boto3 client, with its receives counted (how many at once) and, optionally, one
    receive made to fail: what a network blip does to one call among several."""

    def __init__(
        self,
        sqs: Any,
        fail_call: int | None = None,
        *,
        slow_call: int | None = None,
        delete_s: float = 0.0,
        fail_delete: bool = False,
    ) -> None:
        self._sqs = sqs
        self._lock = threading.Lock()
        self._now = 0
        self.most_at_once = 0
        self.calls = 0
        self._fail_call = fail_call
        self._slow_call = slow_call
        self._delete_s = delete_s
        self._fail_delete = fail_delete
        #: When the slow receive answered, and when the first delete did.
        self.slow_answered_at: float | None = None
        self.first_delete_at: float | None = None
        self.failed_delete_entries = 0
        #: Every message body each receive answered with, counted.
        self.received: Counter[str] = Counter()

    def receive_message(self, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
            call = self.calls
            self._now += 1
            self.most_at_once = max(self.most_at_once, self._now)
        try:
            if call == self._fail_call:
                raise ConnectionError("connection reset by peer")
            time.sleep(0.05)  # a loaded host's receive, so that calls overlap when parallel
            answer = self._sqs.receive_message(**kwargs)
            with self._lock:
                self.received.update(m["Body"] for m in answer.get("Messages", []))
            if call == self._slow_call:
                time.sleep(1.0)
                self.slow_answered_at = time.monotonic()
            return answer
        finally:
            with self._lock:
                self._now -= 1

    def delete_message_batch(self, **kwargs: Any) -> Any:
        time.sleep(self._delete_s)
        try:
            if self._fail_delete and self.first_delete_at is None:
                self.failed_delete_entries = len(kwargs["Entries"])
                raise ConnectionError("connection reset by peer")
            return self._sqs.delete_message_batch(**kwargs)
        finally:
            if self.first_delete_at is None:
                self.first_delete_at = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def _queues(moto_url: str) -> tuple[Any, str, str]:
    sqs = moto_client("sqs", moto_url)
    name = f"burst{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    return sqs, url, dlq


def _send(sqs: Any, url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), MAX_BATCH):
        batch = bodies[start : start + MAX_BATCH]
        sqs.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(batch)]
        )


def _burst(moto_url: str, n: int, **options: Any) -> tuple[Any, str, str, list[str], CountingSqs]:
    """``n`` messages waiting on a fresh queue, and the counting client over it."""
    raw, url, dlq = _queues(moto_url)
    bodies = [f"alert-{i}" for i in range(n)]
    _send(raw, url, bodies)
    return raw, url, dlq, bodies, CountingSqs(raw, **options)


def _drain(
    sqs: CountingSqs,
    url: str,
    dlq: str,
    expected: int,
    *,
    handle_s: float = 0.2,
    started: dict[str, float] | None = None,
) -> Counter[str]:
    """Run a consumer until ``expected`` messages are handled; ``started`` gets each
    message's handler start time."""
    handled: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def handle(body: str, heartbeat: Any) -> None:
        if started is not None:
            started.setdefault(body, time.monotonic())
        time.sleep(handle_s)  # an alert's first page: handlers stay busy while a burst drains
        with lock:
            handled[body] += 1
            if len(handled) >= expected:  # every message, once or (moto's race) more
                stop.set()

    consumer = SqsConsumer(sqs, url, dlq, handle, wait_time_s=1, stop=stop)
    worker = threading.Thread(target=consumer.run, kwargs={"concurrency": 64})
    worker.start()
    stop.wait(60)
    stop.set()
    worker.join(30)
    return handled


def test_a_burst_of_alerts_is_received_in_parallel_and_each_handled_once(
    moto_url: str,
) -> None:
    # Given 45 messages waiting on the queue
    raw, url, dlq, bodies, sqs = _burst(moto_url, 45)
    # When the consumer drains them
    handled = _drain(sqs, url, dlq, len(bodies))
    # Then every one is handled, once per time a receive answered with it: once, or twice
    # where moto's receive (it takes no lock) handed one message to two parallel receives.
    # SQS is at-least-once too; intake's dedupe by alert id makes a second handling
    # harmless. And after a full batch the receives overlapped
    assert set(handled) == set(bodies) and handled == sqs.received
    assert 2 <= sqs.most_at_once <= MAX_PARALLEL_POLLS
    # And each was deleted once handled
    left = raw.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert left["ApproximateNumberOfMessages"] == "0"
    assert left["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_one_failed_receive_among_parallel_ones_loses_no_message(moto_url: str) -> None:
    # Given 40 messages, and the second receive of the consumer failing (the first
    # parallel round: one full batch came in before it)
    _, url, dlq, bodies, sqs = _burst(moto_url, 40, fail_call=3)
    # When the consumer drains them
    handled = _drain(sqs, url, dlq, len(bodies))
    # Then the other receives' messages were handled, and the rest came in later: none lost
    assert sqs.most_at_once >= 2
    assert set(handled) == set(bodies) and handled == sqs.received


def test_deletes_do_not_hold_up_the_alerts_still_on_the_queue(moto_url: str) -> None:
    # Given 85 messages waiting (three rounds of receives), and deletes that take 1 s each
    raw, url, dlq, bodies, sqs = _burst(moto_url, 85, delete_s=1.0)
    started: dict[str, float] = {}
    # When the consumer drains them, its handlers quick
    handled = _drain(sqs, url, dlq, len(bodies), handle_s=0.01, started=started)
    # Then every message went to a handler (see the first test on moto's double handing)
    # before the first delete was done: the deletes ran beside the receives, not between
    assert set(handled) == set(bodies) and handled == sqs.received
    assert sqs.first_delete_at is not None
    assert max(started.values()) < sqs.first_delete_at
    # And every message was deleted before the consumer stopped
    left = raw.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert left["ApproximateNumberOfMessages"] == "0"
    assert left["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_failed_delete_is_survived_and_its_messages_come_back(moto_url: str) -> None:
    # Given 30 messages, and the first delete failing (a network blip)
    raw, url, dlq, bodies, sqs = _burst(moto_url, 30, fail_delete=True)
    # When the consumer drains them
    handled = _drain(sqs, url, dlq, len(bodies), handle_s=0.01)
    # Then every message was handled, the consumer carried on after the failure, and only
    # the failed batch's messages are still on the queue, to reappear (intake's dedupe
    # makes their second handling harmless)
    assert set(handled) == set(bodies) and handled == sqs.received
    assert sqs.failed_delete_entries > 0
    left = raw.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert left["ApproximateNumberOfMessages"] == "0"
    assert left["ApproximateNumberOfMessagesNotVisible"] == str(sqs.failed_delete_entries)


def test_a_slow_receive_holds_up_no_other_receives_messages(moto_url: str) -> None:
    # Given 40 messages, and the first receive of the parallel round answering 1 s late
    _, url, dlq, bodies, sqs = _burst(moto_url, 40, slow_call=2)
    started: dict[str, float] = {}
    # When the consumer drains them
    handled = _drain(sqs, url, dlq, len(bodies), handle_s=0.01, started=started)
    # Then the messages of the round's other receives went to handlers before the slow
    # one answered (only its own, at most a batch, waited for it); none lost
    assert set(handled) == set(bodies) and handled == sqs.received
    assert sqs.slow_answered_at is not None
    before = [b for b, at in started.items() if at < sqs.slow_answered_at]
    assert len(before) >= len(bodies) - MAX_BATCH
