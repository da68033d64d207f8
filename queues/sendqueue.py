"""Where send work goes: one lane per channel × priority (the dramatiq version is in lanes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

PRIORITIES = ("urgent", "normal", "bulk")
#: Recipients per unit of send work, at most. Email: one provider call (SendGrid's limit).
#: SMS: a batch costs about five Redis round trips (enqueue, fetch, ack, the limiter, the
#: progress counters) and a handful of SQL statements whatever its size, so normal and bulk
#: batches are large; the sender claims only what its rate can send within the batch's
#: pacing horizon and re-queues the rest unclaimed, so a large batch costs nothing at a low
#: rate, and a pause or cancel still stops the very next send (the kill switch is read
#: before every provider call).
BATCH_SIZE = {"sms": 500, "email": 1000}
#: Urgent SMS go in smaller batches: an alert's first messages leave after claiming and
#: rendering 100 rows, not 500, and a burst spreads over the urgent worker's threads.
URGENT_SMS_BATCH_SIZE = 100


def batch_size(channel: str, priority: str) -> int:
    """Recipients per unit of send work on the lane of ``channel`` × ``priority``."""
    if channel == "sms" and priority == "urgent":
        return URGENT_SMS_BATCH_SIZE
    return BATCH_SIZE[channel]


@dataclass(frozen=True, slots=True)
class SendWork:
    """One unit of send work: some recipients of one blast on one channel."""

    blast_id: str
    channel: str
    priority: str
    supporter_ids: tuple[int, ...]
    delay_s: float = 0.0


class SendQueue(Protocol):
    """Accepts send work."""

    def enqueue(self, work: SendWork) -> None:
        """Queue ``work`` on its lane (after ``work.delay_s``)."""
        ...


class InMemorySendQueue:
    """Collects send work in a list, for unit tests."""

    def __init__(self) -> None:
        self.items: list[SendWork] = []

    def enqueue(self, work: SendWork) -> None:
        """See :class:`SendQueue`."""
        self.items.append(work)


def enqueue_in_batches(
    queue: SendQueue, blast_id: str, channel: str, priority: str, supporter_ids: Sequence[int]
) -> int:
    """Split ids into batches of the lane's size and queue them; returns the batch count."""
    size = batch_size(channel, priority)
    batches = 0
    for start in range(0, len(supporter_ids), size):
        queue.enqueue(
            SendWork(blast_id, channel, priority, tuple(supporter_ids[start : start + size]))
        )
        batches += 1
    return batches
