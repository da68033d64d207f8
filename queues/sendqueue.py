"""Where send work goes: one lane per channel × priority (the dramatiq version is in lanes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

PRIORITIES = ("urgent", "normal", "bulk")
#: Recipients per unit of send work. Email: one provider call (SendGrid's limit). SMS: small
#: enough that a paused or canceled blast stops quickly, large enough to amortise round trips.
BATCH_SIZE = {"sms": 100, "email": 1000}


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
    """Split ids into batches of the channel's size and queue them; returns the batch count."""
    size = BATCH_SIZE[channel]
    batches = 0
    for start in range(0, len(supporter_ids), size):
        queue.enqueue(
            SendWork(blast_id, channel, priority, tuple(supporter_ids[start : start + size]))
        )
        batches += 1
    return batches
