"""Transport and control: send queue, blast control, live counters, limits, caps, in-flight."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from config.caps import FrequencyCap
from messaging.ports.blasts import ByChannel

# ============================================================================================
# Transport and control: send queue, blast control, live counters, rate limits.
# Implemented by queues/ (dramatiq lanes, Redis flow control); in-memory twins in
# messaging/memory.py. The domain owns these; queues/ imports them, never the reverse.
# ============================================================================================

#: Send lanes per channel, highest priority first.
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
    #: The blast's first unit on its lane, gone ahead of the blasts taking turns there: its
    #: first piece is a few texts, so that fifty new blasts each reach the provider within
    #: a round of turns instead of after fifty full pieces (issue #21, item 2).
    opening: bool = False


class SendQueue(Protocol):
    """Accepts send work."""

    def enqueue(self, work: SendWork) -> None:
        """Queue ``work`` on its lane (after ``work.delay_s``)."""
        ...

    def others_waiting(self, work: SendWork) -> bool:
        """True when other blasts wait for a thread on ``work``'s lane: a unit that paces
        itself gives its thread up between pieces then, and re-queues the rest behind them
        (the blasts of a priority take turns, issue #21)."""
        ...

    def openings_waiting(self, work: SendWork) -> bool:
        """True when a blast's opening (its first unit) waits for a thread on ``work``'s
        lane: a thread waiting for room on the rate's schedule gives its unit up then, so a
        new alert's first text does not wait for a piece of a big blast (issue #21). Asked
        every few tens of milliseconds by every waiting thread: answers may be that old."""
        ...


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


class ProgressCounters(Protocol):
    """Where a blast's live counts and last-progress stamp are kept.

    Writers count a claimed (``sending``) row as ``pending``; :meth:`replace` takes the
    ledger's counts as they are and folds ``sending`` into ``pending`` itself
    (:func:`messaging.blasts.lifecycle.as_written`).
    """

    def add(self, blast_id: str, channel: str, deltas: Mapping[str, int]) -> None:
        """Add ``{state: delta}`` for one channel and stamp the blast's progress."""
        ...

    def touch(self, blast_id: str) -> None:
        """Stamp the blast's progress only (the sweep gives re-driven work its window)."""
        ...

    def last_progress(self, blast_id: str) -> float | None:
        """Epoch seconds of the blast's last progress, or None."""
        ...

    def replace(self, blast_id: str, by_channel: Mapping[str, Mapping[str, int]]) -> None:
        """Set the counters to the ledger's counts (reconcile)."""
        ...

    def read(self, blast_ids: Iterable[str]) -> dict[str, ByChannel | None]:
        """Each blast's counters, or None where they were never based on the ledger."""
        ...


class BlastControl(Protocol):
    """The fleet-wide copy of each blast's status that senders read before every send.

    The system of record holds the status; :class:`messaging.blasts.lifecycle.BlastLifecycle`
    writes it there first and mirrors it here.
    """

    #: The blast's live counts and last-progress stamp, kept beside its status.
    progress: ProgressCounters

    def set(self, blast_id: str, status: str) -> None:
        """Publish a blast's status to the fleet."""
        ...

    def get(self, blast_id: str, *, fresh: bool = False) -> str | None:
        """The blast's status as last published, or None if never published. ``fresh``:
        read past any copy this process keeps."""
        ...

    def bump_suppressions(self) -> None:
        """Tell the fleet the suppression list changed (a STOP, an unsubscribe)."""
        ...

    def suppressions_version(self) -> int:
        """A number that changes whenever the suppression list does (cached briefly)."""
        ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """Send times granted to the first ``len(slots_s)`` sends of a batch, in local epoch seconds."""

    slots_s: tuple[float, ...]
    #: How far ahead the shared key's schedule is booked after this reservation (local epoch
    #: seconds): the next slot it would grant. 0 when unknown.
    booked_until_s: float = 0.0

    @property
    def granted(self) -> int:
        """How many sends got a slot (the rest must be tried again later)."""
        return len(self.slots_s)


class RateLimiter(Protocol):
    """Reserves send times under a shared rate and optional per-send rates."""

    def reserve(
        self,
        shared_key: str,
        shared_rate_per_s: float,
        *,
        n: int = 1,
        per_send_keys: Sequence[str] = (),
        per_send_rate_per_s: float = 1.0,
        cost: int = 1,
        horizon_s: float = 5.0,
        express_share: bool = False,
        express: bool = False,
    ) -> Reservation:
        """Slots for ``n`` sends (or one per ``per_send_keys`` entry), each costing ``cost``.

        With ``express_share`` (the same on every reservation of a key), each key's rate is
        two schedules (``messaging.sending.pacing.express_rate_per_s``): sends take the main
        one, and with ``express`` the first send takes the express one when that is earlier.
        """
        ...

    def throttle(self, shared_key: str) -> float:
        """A provider said 429 for this key: slow it down; returns the new rate factor."""
        ...


class CapLedger(Protocol):
    """Who has used up their frequency cap (``SMS_FREQUENCY_CAP``, ``EMAIL_FREQUENCY_CAP``):
    checked and taken in one atomic step, fleet-wide (``queues/flow/caps.py``)."""

    def reserve(
        self,
        channel: str,
        blast_id: str,
        supporter_ids: Sequence[int],
        cap: FrequencyCap,
        *,
        dry_run: bool = False,
    ) -> set[int]:
        """Take a slot for ``blast_id`` for each supporter; return those over the cap.

        A supporter for whom this blast already holds a slot is never capped (a retried
        page), and ``dry_run`` only counts.
        """
        ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """An alert document as the intake transport delivered it (SNS envelope or raw)."""

    payload: str
    #: The alert topic the transport says it was published to; None for raw delivery.
    topic: str | None
    #: The transport's id of the message (the alert id when the alert names none).
    message_id: str
    form: Literal["envelope", "raw"]


#: Turns an intake queue message body into a :class:`Delivery`; raises
#: :class:`messaging.errors.InputError` for a body it cannot use.
Unwrap = Callable[[str], Delivery]


class AlertPublisher(Protocol):
    """Publishes an alert document to an alert topic's SNS topic."""

    def publish(self, topic_arn: str, message: str) -> str:
        """Publish ``message``; returns the transport's message id."""
        ...


class ResourceProvisioner(Protocol):
    """Creates or updates the fleet's queues and topics (idempotently)."""

    def ensure_queues(self) -> str:
        """The intake queue and its dead-letter queue; returns the intake queue's ARN."""
        ...

    def ensure_topic(self, topic: str, intake_arn: str) -> str:
        """An alert topic's SNS topic, subscribed to the intake queue; returns its ARN."""
        ...


#: One row a sender holds between claim and outcome: (blast id, channel, supporter id).
HeldRow = tuple[str, str, int]
#: Rows claimed less than this long ago are never settled by the sweep, whoever holds them
#: (a Redis that restarted empty knows a live sender's rows again within one beat).
IN_FLIGHT_GRACE_S = 15.0


class InFlight(Protocol):
    """A sender's announcement of the rows it holds between claim and outcome."""

    def hold(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """Announce rows about to be claimed (before the claim)."""
        ...

    def release(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """Give rows up (their outcome is written, or the batch could not settle them)."""
        ...


class InFlightView(Protocol):
    """What the sweep asks: which rows live senders hold right now."""

    def owned(self) -> set[HeldRow]:
        """Rows held by senders that beat recently; forgets dead ones."""
        ...
