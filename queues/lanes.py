"""Send lanes on dramatiq's Redis broker: one queue per channel × priority.

The broker is built here, from an injected Redis client, and never installed as dramatiq's
global (no ``get_broker()`` at import). Actors are declared on it explicitly; the same
declaration serves the processes that only enqueue (intake, scheduler, CLI) and the
sender processes, which attach the handlers.

Urgent work overtakes normal and bulk work already queued (contract §4): each lane has its
own consumer, and a worker runs the highest-priority message it holds first.
"""

from __future__ import annotations

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

#: dramatiq priority per lane: lower runs first.
LANE_PRIORITY = {"urgent": 0, "normal": 50, "bulk": 100}
#: A batch paces itself for at most ~10 s and then makes its calls; far below this.
ACTOR_TIME_LIMIT_MS = 5 * 60_000
#: Redeliveries of a batch whose handler crashed (database down, a bug). The ledger claim
#: makes each retry safe; after these, the re-drive sweep is the safety net.
ACTOR_MAX_RETRIES = 8
ACTOR_MIN_BACKOFF_MS = 1_000
ACTOR_MAX_BACKOFF_MS = 60_000
#: Failures a redelivery cannot fix (bad input, a setting, a permanent refusal): the
#: message goes to the dead-letter queue at once instead of eight times later.
NEVER_RETRIED: tuple[type[Exception], ...] = (InputError, ConfigError, PermanentSendError)

Handler = Callable[[SendWork], Any]


def lane_name(channel: str, priority: str) -> str:
    """The dramatiq queue of a lane."""
    return f"{channel}-{priority}"


def make_broker(client: Any, names: Names) -> RedisBroker:
    """A Redis broker namespaced by ``RAPID_PREFIX`` (shares the limiter's Redis)."""
    middleware = [
        m() for m in (AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines, Retries)
    ]
    return RedisBroker(client=client, namespace=f"{names.prefix}-dramatiq", middleware=middleware)


class Lanes:
    """The send lanes: enqueue :class:`SendWork`, and (in senders) dispatch it to handlers."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._handlers: dict[str, Handler] = {}
        self._actors: dict[tuple[str, str], dramatiq.Actor[Any, Any]] = {}
        for channel in ("sms", "email"):
            for priority in PRIORITIES:
                self._actors[channel, priority] = self._declare(channel, priority)

    def _declare(self, channel: str, priority: str) -> dramatiq.Actor[Any, Any]:
        def send_batch(blast_id: str, supporter_ids: list[int]) -> None:
            handler = self._handlers.get(channel)
            if handler is None:
                raise RuntimeError(f"no {channel} handler in this process")
            # Every log line of the batch, in whichever module, names its blast and lane.
            with structlog.contextvars.bound_contextvars(
                blast_id=blast_id, channel=channel, priority=priority
            ):
                handler(SendWork(blast_id, channel, priority, tuple(supporter_ids)))

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
        """See :class:`~messaging.ports.SendQueue`."""
        actor = self._actors[work.channel, work.priority]
        actor.send_with_options(
            args=(work.blast_id, list(work.supporter_ids)),
            delay=int(work.delay_s * 1000) if work.delay_s > 0 else None,
        )

    def queue_names(
        self, channels: tuple[str, ...] = ("sms", "email"), priorities: tuple[str, ...] = PRIORITIES
    ) -> set[str]:
        """The dramatiq queues of ``channels`` × ``priorities``, for a worker's whitelist."""
        return {lane_name(c, p) for c in channels for p in priorities}
