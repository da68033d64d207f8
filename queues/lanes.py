"""Send lanes on dramatiq's Redis broker: one queue per channel × priority.

The broker is built here, from an injected Redis client, and never installed as dramatiq's
global (no ``get_broker()`` at import). Actors are declared on it explicitly; the same
declaration serves the processes that only enqueue (intake, scheduler, CLI) and the
sender processes, which attach the handlers.

Urgent work overtakes normal and bulk work already queued (contract §4): each lane has its
own consumer, and a worker runs the highest-priority message it holds first. Within a lane
the blasts take turns (``queues/flow/fair.py``): a blast has one unit in the lane at a time
and its next joins the back when that one starts, so a blast published behind a large one
of the same priority starts sending at once instead of after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from config.names import Names
from messaging.errors import ConfigError, InputError, PermanentSendError
from messaging.ports import PRIORITIES, SendWork
from queues.flow.fair import FAIR_WINDOW, FairShare
from queues.wake import WakingRedisBroker, queue_key

#: dramatiq priority per lane: lower runs first.
LANE_PRIORITY = {"urgent": 0, "normal": 50, "bulk": 100}
#: A batch paces itself for at most ~10 s and then makes its calls; far below this.
ACTOR_TIME_LIMIT_MS = 5 * 60_000
#: Redeliveries of a batch whose handler crashed (database down, a bug). The ledger claim
#: makes each retry safe; after these, the re-drive sweep is the safety net.
ACTOR_MAX_RETRIES = 8
ACTOR_MIN_BACKOFF_MS = 1_000
ACTOR_MAX_BACKOFF_MS = 60_000
#: How old an answer of :meth:`Lanes.openings_waiting` may be: every thread waiting for room
#: asks every 25 ms (``messaging/sending/room.py``), and one Redis call per lane per this
#: long answers them all instead of one per thread.
OPENINGS_ANSWER_TTL_S = 0.025
#: Failures a redelivery cannot fix (bad input, a setting, a permanent refusal): the
#: message goes to the dead-letter queue at once instead of eight times later.
NEVER_RETRIED: tuple[type[Exception], ...] = (InputError, ConfigError, PermanentSendError)

Handler = Callable[[SendWork], Any]

log = structlog.get_logger(__name__)


def lane_name(channel: str, priority: str) -> str:
    """The dramatiq queue of a lane."""
    return f"{channel}-{priority}"


def make_broker(client: Any, names: Names) -> RedisBroker:
    """A Redis broker namespaced by ``RAPID_PREFIX`` (shares the limiter's Redis)."""
    middleware = [
        m() for m in (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines, Retries)
    ]
    return WakingRedisBroker(
        client=client, namespace=f"{names.prefix}-dramatiq", middleware=middleware
    )


class Lanes:
    """The send lanes: enqueue :class:`SendWork`, and (in senders) dispatch it to handlers."""

    def __init__(self, broker: RedisBroker, *, fair_window: int = FAIR_WINDOW) -> None:
        """``fair_window``: units of one blast in a lane at once (0: plain FIFO lanes)."""
        self.broker = broker
        #: Turns between the blasts of a lane; None: first in, first out.
        self.fair = (
            FairShare(broker.client, f"{broker.namespace}:fair:v1", fair_window)
            if fair_window > 0
            else None
        )
        self._handlers: dict[str, Handler] = {}
        self._openings: dict[str, tuple[float, bool]] = {}  # lane -> (asked at, answer)
        self._openings_lock = threading.Lock()
        self._actors: dict[tuple[str, str], dramatiq.Actor[Any, Any]] = {}
        for channel in ("sms", "email"):
            for priority in PRIORITIES:
                self._actors[channel, priority] = self._declare(channel, priority)

    def _declare(self, channel: str, priority: str) -> dramatiq.Actor[Any, Any]:
        def send_batch(
            blast_id: str, supporter_ids: list[int], fair: bool = False, opening: bool = False
        ) -> None:
            handler = self._handlers.get(channel)
            if handler is None:
                raise RuntimeError(f"no {channel} handler in this process")
            if fair:  # its blast's next unit joins the back of the lane, behind the others
                self._started(channel, priority, blast_id)
            # Every log line of the batch, in whichever module, names its blast and lane.
            with structlog.contextvars.bound_contextvars(
                blast_id=blast_id, channel=channel, priority=priority
            ):
                handler(
                    SendWork(blast_id, channel, priority, tuple(supporter_ids), opening=opening)
                )

        send_batch.__name__ = f"send_{channel}_{priority}"
        # The decorator form, applied by hand: actors live on this broker, not the global one.
        declare = dramatiq.actor(
            broker=self.broker,
            actor_name=f"send_{channel}_{priority}",
            queue_name=lane_name(channel, priority),
            priority=LANE_PRIORITY[priority],
            max_retries=ACTOR_MAX_RETRIES,
            min_backoff=ACTOR_MIN_BACKOFF_MS,
            max_backoff=ACTOR_MAX_BACKOFF_MS,
            time_limit=ACTOR_TIME_LIMIT_MS,
            throws=NEVER_RETRIED,
        )
        return declare(send_batch)

    def handle(self, channel: str, handler: Handler) -> None:
        """Attach the function that processes a channel's work (sender processes only)."""
        self._handlers[channel] = handler

    def enqueue(self, work: SendWork) -> None:
        """See :class:`~messaging.ports.SendQueue`. Work for now takes its blast's turn in
        the lane; delayed work (retries, re-queued waits) goes on the lane when due."""
        actor = self._actors[work.channel, work.priority]
        if self.fair is None or work.delay_s > 0:
            actor.send_with_options(
                args=(work.blast_id, list(work.supporter_ids)),
                delay=int(work.delay_s * 1000) if work.delay_s > 0 else None,
            )
            return
        lane = lane_name(work.channel, work.priority)
        unit, new = self.fair.push(lane, work.blast_id, work.supporter_ids)
        if unit is not None:
            # A blast new to the lane has nothing waiting: `unit` is this work, its opening.
            message = actor.send_with_options(args=(*unit, True, new))
            if new:  # a blast new to the lane starts ahead of those taking turns
                lane_key = queue_key(self.broker.namespace, lane)
                self.fair.ahead(lane_key, message.options["redis_message_id"])

    def others_waiting(self, work: SendWork) -> bool:
        """See :class:`~messaging.ports.SendQueue`: one round trip (``fair_others.lua``);
        False when the lanes are plain FIFO or Redis does not answer."""
        if self.fair is None:
            return False
        try:
            lane = lane_name(work.channel, work.priority)
            return self.fair.others_waiting(lane, work.blast_id) > 0
        except Exception as exc:  # not worth failing a batch over: it keeps its thread
            log.warning("lanes.fair_others_failed", error=str(exc), error_type=type(exc).__name__)
            return False

    def openings_waiting(self, work: SendWork) -> bool:
        """See :class:`~messaging.ports.SendQueue`: one round trip (``fair_openings.lua``) per
        lane per :data:`OPENINGS_ANSWER_TTL_S`; False when the lanes are plain FIFO or
        Redis does not answer."""
        if self.fair is None:
            return False
        lane = lane_name(work.channel, work.priority)
        now = time.monotonic()
        with self._openings_lock:
            hit = self._openings.get(lane)
            if hit is not None and now - hit[0] < OPENINGS_ANSWER_TTL_S:
                return hit[1]
        try:
            answer = self.fair.openings_waiting(lane) > 0
        except Exception as exc:  # not worth failing a batch over: it keeps waiting for room
            log.warning("lanes.fair_openings_failed", error=str(exc), error_type=type(exc).__name__)
            answer = False
        with self._openings_lock:
            self._openings[lane] = (now, answer)
        return answer

    def pump(self) -> int:
        """Let in the next unit of every blast whose place in its lane lapsed (see
        ``fair_pump.lua``); the scheduler calls this every pass. Units enqueued."""
        if self.fair is None:
            return 0
        moved = 0
        for channel, priority in self._actors:
            moved += self._pump(channel, priority)
        return moved

    def _pump(self, channel: str, priority: str) -> int:
        assert self.fair is not None
        units = self.fair.pump(lane_name(channel, priority))
        for unit in units:
            self._actors[channel, priority].send_with_options(args=(*unit, True))
        return len(units)

    def _started(self, channel: str, priority: str, blast_id: str) -> None:
        if self.fair is None:
            return
        try:
            unit = self.fair.started(lane_name(channel, priority), blast_id)
            if unit is not None:
                self._actors[channel, priority].send_with_options(args=(*unit, True))
            self._pump(channel, priority)
        except Exception as exc:  # the unit itself still runs; the sweep re-drives the rest
            log.warning("lanes.fair_next_failed", error=str(exc), error_type=type(exc).__name__)

    def queue_names(
        self, channels: tuple[str, ...] = ("sms", "email"), priorities: tuple[str, ...] = PRIORITIES
    ) -> set[str]:
        """The dramatiq queues of ``channels`` × ``priorities``, for a worker's whitelist."""
        return {lane_name(c, p) for c in channels for p in priorities}
