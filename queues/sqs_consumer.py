"""A plain boto3 consumer of an SNS-fed SQS queue.

Long polling, batches of 10, batch deletes (by a thread of their own, beside the receives),
visibility extended while a message is being worked on, and a clean stop. A message its
handler rejects as bad input is copied to the dead-letter queue with its reason and deleted
at once: it is never retried. A message whose handler crashed is left alone; SQS redelivers
it and, after ``maxReceiveCount``, its redrive policy moves it to the same DLQ.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from datetime import UTC, datetime
from typing import Any

import structlog

from messaging.errors import InputError

log = structlog.get_logger(__name__)

#: SQS's maximum batch for receive and delete.
MAX_BATCH = 10
#: Long-poll wait; idle workers then cost ~3 requests a minute.
WAIT_TIME_S = 20
#: Visibility granted at receive and on every extension.
VISIBILITY_S = 60
#: Only extend when this much of the visibility window is spent (spares API calls).
EXTEND_AFTER_S = VISIBILITY_S / 3
#: On stop, how long running handlers may take to finish (the process must exit in 30 s).
STOP_GRACE_S = 20.0
#: Receives in flight at once while a burst drains: after a round that brought messages, up
#: to this many batches are asked for together (without waiting: an empty one costs a
#: call). One receive at a time took ~2.5 s to bring in fifty alerts published at once
#: (0.2–0.6 s a call on a loaded host), and every alert's first send waited for its turn
#: in that chain (issue #21, fairness).
MAX_PARALLEL_POLLS = 4

#: Takes a message body and a heartbeat; its return value is ignored.
Handler = Callable[[str, Callable[[], None]], object]


class Heartbeat:
    """Keeps one message invisible while its handler works; call it often, it is cheap."""

    def __init__(
        self, sqs: Any, queue_url: str, receipt: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sqs, self._url, self._receipt, self._clock = sqs, queue_url, receipt, clock
        self._last = clock()
        self.extensions = 0

    def __call__(self) -> None:
        if self._clock() - self._last < EXTEND_AFTER_S:
            return
        self._sqs.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=self._receipt, VisibilityTimeout=VISIBILITY_S
        )
        self._last = self._clock()
        self.extensions += 1


class SqsConsumer:
    """Receives from ``queue_url`` and hands each message body to ``handler``."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        dlq_url: str,
        handler: Handler,
        *,
        wait_time_s: int = WAIT_TIME_S,
        stop: threading.Event | None = None,
    ) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._dlq_url = dlq_url
        self._handler = handler
        self._wait_time_s = wait_time_s
        self.stop = stop or threading.Event()

    def run(self, concurrency: int) -> None:
        """Poll until :attr:`stop` is set, handling up to ``concurrency`` messages at once.

        Concurrency is what lets an urgent alert through while a million-recipient bulk
        alert is still being expanded: the poll goes on as long as a handler is free.
        Finished messages are deleted in batches, by a thread of their own; on stop, running
        handlers finish (or, past the grace period, their messages simply reappear after the
        visibility timeout).
        """
        log.info("intake.started", queue=self._url, concurrency=concurrency)
        inflight: dict[Future[bool], dict[str, Any]] = {}
        burst = False  # the last round brought messages: more are likely on their way
        with (
            ThreadPoolExecutor(concurrency, thread_name_prefix="intake") as pool,
            ThreadPoolExecutor(MAX_PARALLEL_POLLS, thread_name_prefix="intake-poll") as polls,
            # One thread, so batches go in order; shut down (waited for) after the others.
            ThreadPoolExecutor(1, thread_name_prefix="intake-delete") as deletes,
        ):

            def take(messages: list[dict[str, Any]]) -> None:
                for message in messages:
                    inflight[pool.submit(self._handle, message)] = message

            while not self.stop.is_set():
                self._settle(inflight, deletes)
                free = concurrency - len(inflight)
                if free <= 0:
                    wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                    continue
                n_polls = max(1, min(MAX_PARALLEL_POLLS, free // MAX_BATCH)) if burst else 1
                # Busy: short polls, so finished work is deleted promptly.
                received, failed = self._receive_many(
                    polls, n_polls, free, 1 if inflight else self._wait_time_s, take
                )
                burst = received > 0
                if failed and not received:  # a network blip must not kill the worker
                    self.stop.wait(2.0)
            wait(list(inflight), timeout=STOP_GRACE_S)
            self._settle(inflight, deletes)
        log.info("intake.stopped")

    def _receive_many(
        self,
        polls: ThreadPoolExecutor,
        n_polls: int,
        free: int,
        wait_time_s: int,
        take: Callable[[list[dict[str, Any]]], None],
    ) -> tuple[int, bool]:
        """``n_polls`` receives at once (one in this thread when it is one), each one's
        messages given to ``take`` as it answers (a slow receive holds up no other's
        messages); how many came, and whether any receive failed. A failed receive never
        costs the others their messages: they are invisible to everyone else until handled."""
        if n_polls == 1:
            answers: Iterable[list[dict[str, Any]] | None] = [
                self._receive_reporting(free, wait_time_s)
            ]
        else:
            # While a burst drains there is no need to wait for more: a poll returns at once.
            futures = [polls.submit(self._receive_reporting, MAX_BATCH, 0) for _ in range(n_polls)]
            answers = (f.result() for f in as_completed(futures))
        received, failed = 0, False
        for messages in answers:
            if messages is None:
                failed = True
                continue
            take(messages)
            received += len(messages)
        return received, failed

    def _receive_reporting(self, n: int, wait_time_s: int) -> list[dict[str, Any]] | None:
        """:meth:`_receive`, with a failure logged and answered as None."""
        try:
            return self._receive(n, wait_time_s)
        except Exception as exc:
            log.error("intake.poll_failed", error=str(exc), error_type=type(exc).__name__)
            return None

    def _settle(
        self, inflight: dict[Future[bool], dict[str, Any]], deletes: ThreadPoolExecutor
    ) -> None:
        """Hand the messages whose handlers finished with them to the delete thread.

        Off the receive loop's way: a delete took as long as a receive (0.1-0.3 s a batch on
        a loaded host), and every alert still on the queue waited for it (issue #21)."""
        finished = [f for f in inflight if f.done()]
        done = [
            {"Id": inflight[f]["MessageId"], "ReceiptHandle": inflight[f]["ReceiptHandle"]}
            for f in finished
            if not f.cancelled() and f.exception() is None and f.result()
        ]
        for f in finished:
            del inflight[f]
        for start in range(0, len(done), MAX_BATCH):
            deletes.submit(self._delete, done[start : start + MAX_BATCH])

    def _delete(self, entries: list[dict[str, str]]) -> None:
        """Delete one batch; a failure is logged: the messages reappear after their
        visibility timeout and their alerts are handled again, which intake's dedupe makes
        harmless."""
        try:
            response = self._sqs.delete_message_batch(QueueUrl=self._url, Entries=entries)
        except Exception as exc:
            log.error("intake.delete_failed", error=str(exc), error_type=type(exc).__name__)
            return
        for failure in response.get("Failed", []):
            log.error("intake.delete_failed", message_id=failure.get("Id"), error=failure)

    def _receive(self, n: int, wait_time_s: int) -> list[dict[str, Any]]:
        response = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=max(1, min(MAX_BATCH, n)),
            WaitTimeSeconds=wait_time_s,
            VisibilityTimeout=VISIBILITY_S,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def _handle(self, message: dict[str, Any]) -> bool:
        """True when the message is finished with (handled, or dead-lettered)."""
        body = message.get("Body", "")
        heartbeat = Heartbeat(self._sqs, self._url, message["ReceiptHandle"])
        receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "1")
        bound = log.bind(sqs_message_id=message["MessageId"], receives=receives)
        try:
            self._handler(body, heartbeat)
            return True
        except InputError as exc:
            self.dead_letter(message, str(exc))
            bound.warning("intake.rejected", reason=str(exc))
            return True
        except Exception as exc:
            bound.exception("intake.failed", error=str(exc))
            return False

    def dead_letter(self, message: dict[str, Any], reason: str) -> None:
        """Copy ``message`` to the DLQ with its reason (the caller deletes the original)."""
        attributes = {
            "reason": {"DataType": "String", "StringValue": reason[:1000] or "unknown"},
            "source_queue": {"DataType": "String", "StringValue": self._url},
            "rejected_at": {"DataType": "String", "StringValue": datetime.now(UTC).isoformat()},
            "source_message_id": {"DataType": "String", "StringValue": message["MessageId"]},
        }
        self._sqs.send_message(
            QueueUrl=self._dlq_url,
            MessageBody=message.get("Body") or "(empty)",
            MessageAttributes=attributes,
        )
