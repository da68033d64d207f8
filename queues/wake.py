"""Waking consumers: an idle send lane blocks on Redis instead of sleeping between polls.

dramatiq's Redis consumer polls an empty queue with an exponential backoff up to the
worker's timeout, so a unit enqueued on an idle lane waited half that timeout on average
before anyone fetched it (~50 ms of a ~110 ms publish-to-first-send), and every idle lane
cost up to ten fetches a second. Here every enqueue for now also pushes a token onto the
lane's wake list (one ``wake.lua`` call), and an idle consumer waits in ``BLPOP`` on that
list for up to its timeout: it fetches within a round trip of the enqueue, and idle lanes
cost one blocked call per timeout.

The tokens only shorten waits; the queue itself is dramatiq's, unchanged. A consumer whose
prefetch is full does not wait on tokens (it could not take the work), and delay queues
keep dramatiq's polling: their messages are due later anyway. Processes of an older
release simply poll as before.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, dq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

#: Tokens a lane's wake list keeps: more consumers than this per lane wake on their timeout.
WAKE_TOKENS_MAX = 64
#: A wake list nobody pushed to for this long goes away (tokens are only hints).
WAKE_TTL_MS = 60_000
#: Longest sleep of a consumer that cannot take work (its prefetch is full) before it looks
#: again: a thread's ack frees room without a token. dramatiq's backoff up to the worker's
#: timeout, which idle lanes no longer need short, capped at what it was (100 ms).
FULL_BACKOFF_MS = 100


def queue_key(namespace: str, queue_name: str) -> str:
    """dramatiq's Redis list of a queue's message ids (its ``dispatch.lua`` layout)."""
    return f"{namespace}:{queue_name}"


def wake_key(namespace: str, queue_name: str) -> str:
    """The Redis list an idle consumer of ``queue_name`` waits on."""
    return f"{queue_key(namespace, queue_name)}.wake"


class WakingRedisBroker(RedisBroker):
    """dramatiq's RedisBroker whose enqueues wake an idle consumer of the queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        script = resources.files("queues").joinpath("wake.lua").read_text()
        self._wake = self.client.register_script(script)

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        enqueued = super().enqueue(message, delay=delay)
        if delay is None:
            self.wake(message.queue_name)
        return enqueued

    def wake(self, queue_name: str) -> None:
        """Leave a token for one idle consumer of ``queue_name``."""
        self._wake(keys=[wake_key(self.namespace, queue_name)], args=[WAKE_TOKENS_MAX, WAKE_TTL_MS])


class _WakingConsumer(_RedisConsumer):
    """dramatiq's consumer (``__next__`` mirrors it), blocking on the wake list when idle."""

    def __init__(self, broker: WakingRedisBroker, queue_name: str, prefetch: int, timeout: int):
        super().__init__(broker, queue_name, prefetch, timeout)
        #: Delay queues keep dramatiq's polling (their messages are not due on arrival).
        self._wake_key = (
            None if queue_name == dq_name(queue_name) else wake_key(broker.namespace, queue_name)
        )
        self._timeout_s = timeout / 1000

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    if data is None:  # dramatiq's guard (its issue #266), kept
                        continue
                    self.misses = 0
                    message = Message.decode(data)
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)
                room = self.prefetch - self.outstanding_message_count
                if room > 0:
                    self.message_cache = self.broker.do_fetch(self.queue_name, room)
                    if self.message_cache:
                        continue
                    if self._wake_key is not None:
                        # Idle with room: wait for a token (or the timeout), then fetch again.
                        self.broker.client.blpop([self._wake_key], timeout=self._timeout_s)
                        return None
                # A delay queue: dramatiq's backoff up to the timeout. Full prefetch: the
                # same, capped short, since a thread's ack frees room without a token.
                longest_ms = self.timeout if room > 0 else min(self.timeout, FULL_BACKOFF_MS)
                self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=longest_ms)
                time.sleep(backoff_ms / 1000)
                return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None
