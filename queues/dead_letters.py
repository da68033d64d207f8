"""Dead letters: what the intake queue and the send lanes gave up on, to inspect and replay.

- Intake: malformed alerts (moved by the intake with a ``reason`` attribute) and alerts
  whose handling crashed ``maxReceiveCount`` times (moved by SQS's redrive policy).
- Send lanes: dramatiq batches whose handler kept failing after every retry (a database
  outage, a bug), kept by the Redis broker in ``{queue}.XQ``. Replaying one is safe: the
  ledger claim sends nothing twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from dramatiq import Message

from config.logging import mask_text
from config.names import Names
from messaging.ports import PRIORITIES
from queues.lanes import Lanes

#: Most messages one listing reads (SQS has no cheap "count and peek all").
LIST_LIMIT = 100
#: Characters of a body shown in a listing, after masking.
PREVIEW_CHARS = 120


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, safe to print."""

    id: str
    source: str  # "intake" or a lane such as "sms-urgent"
    reason: str
    age_s: float
    preview: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": self.id,
            "source": self.source,
            "reason": self.reason,
            "age_s": round(self.age_s, 1),
            "preview": self.preview,
        }


def _preview(body: str) -> str:
    try:
        data = json.loads(body)
        if isinstance(data, dict) and data.get("Type") == "Notification":
            body = str(data.get("Message", ""))
            data = json.loads(body)
        if isinstance(data, dict):
            summary = {k: data[k] for k in ("alert_id", "topic", "priority") if k in data}
            channels = [c for c in ("sms", "email") if c in data]
            return mask_text(json.dumps({**summary, "channels": channels}))
    except ValueError:
        pass
    return mask_text(body[:PREVIEW_CHARS])


class IntakeDeadLetters:
    """The intake DLQ on SQS."""

    def __init__(self, sqs: Any, dlq_url: str, intake_url: str) -> None:
        self._sqs, self._dlq_url, self._intake_url = sqs, dlq_url, intake_url

    def _receive(self, limit: int, visibility_s: int) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(max(1, limit // 10) * 2):
            batch = self._sqs.receive_message(
                QueueUrl=self._dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=visibility_s,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["SentTimestamp"],
            ).get("Messages", [])
            new = [m for m in batch if m["MessageId"] not in seen]
            if not new:
                break
            for m in new:
                seen[m["MessageId"]] = m
            if len(seen) >= limit:
                break
        return list(seen.values())[:limit]

    def list(self, limit: int = LIST_LIMIT) -> list[DeadLetter]:
        """Peek at up to ``limit`` dead letters (SQS has no peek: receive, then give back)."""
        now = time.time()
        received = self._receive(limit, visibility_s=30)
        items = []
        for m in received:
            attrs = m.get("MessageAttributes", {})
            reason = (
                attrs.get("reason", {}).get("StringValue") or "redriven after repeated failures"
            )
            sent_ms = int(m.get("Attributes", {}).get("SentTimestamp", now * 1000))
            items.append(
                DeadLetter(
                    m["MessageId"],
                    "intake",
                    reason,
                    now - sent_ms / 1000,
                    _preview(m.get("Body", "")),
                )
            )
        # Make them visible again at once, so a replay right after the listing finds them.
        for start in range(0, len(received), 10):
            self._sqs.change_message_visibility_batch(
                QueueUrl=self._dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(received[start : start + 10])
                ],
            )
        return items

    def replay(self, ids: set[str] | None) -> int:
        """Move the given dead letters (all when ``ids`` is None) back to the intake queue."""
        moved = 0
        for m in self._receive(LIST_LIMIT * 10, visibility_s=30):
            if ids is not None and m["MessageId"] not in ids:
                self._sqs.change_message_visibility(
                    QueueUrl=self._dlq_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
                )
                continue
            self._sqs.send_message(QueueUrl=self._intake_url, MessageBody=m["Body"])
            self._sqs.delete_message(QueueUrl=self._dlq_url, ReceiptHandle=m["ReceiptHandle"])
            moved += 1
        return moved


class LaneDeadLetters:
    """Dead-lettered send work in the dramatiq Redis broker."""

    def __init__(self, client: Any, names: Names, lanes: Lanes) -> None:
        self._client = client
        self._namespace = f"{names.prefix}-dramatiq"
        self._lanes = lanes

    def _queues(self) -> list[str]:
        return [f"{channel}-{p}" for channel in ("sms", "email") for p in PRIORITIES]

    def _keys(self, queue: str) -> tuple[str, str]:
        xq = f"{self._namespace}:{queue}.XQ"
        return xq, f"{xq}.msgs"

    def list(self, limit: int = LIST_LIMIT) -> list[DeadLetter]:
        """Dead-lettered batches, oldest first."""
        now = time.time()
        items: list[DeadLetter] = []
        for queue in self._queues():
            xq, msgs = self._keys(queue)
            for raw_id, score in self._client.zrange(xq, 0, limit - 1, withscores=True):
                message_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                data = self._client.hget(msgs, message_id)
                if data is None:
                    continue
                message = Message.decode(data)
                blast_id, ids = (*message.args, None, [])[:2]
                reason = str(message.options.get("traceback", "")).strip().splitlines()
                items.append(
                    DeadLetter(
                        message_id,
                        queue,
                        mask_text(reason[-1]) if reason else "retries exhausted",
                        now - score / 1000,
                        f"blast {blast_id}: {len(ids or [])} recipients",
                    )
                )
        return sorted(items, key=lambda d: -d.age_s)[:limit]

    def replay(self, ids: set[str] | None) -> int:
        """Put dead-lettered batches back on their lanes (all when ``ids`` is None)."""
        moved = 0
        for queue in self._queues():
            xq, msgs = self._keys(queue)
            for raw_id in self._client.zrange(xq, 0, -1):
                message_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
                if ids is not None and message_id not in ids:
                    continue
                data = self._client.hget(msgs, message_id)
                pipe = self._client.pipeline()
                pipe.zrem(xq, message_id)
                pipe.hdel(msgs, message_id)
                removed, _ = pipe.execute()
                if not removed or data is None:
                    continue  # another operator replayed it first
                message = Message.decode(data)
                options = {
                    k: v
                    for k, v in message.options.items()
                    if k not in ("traceback", "retries", "eta", "redis_message_id")
                }
                self._lanes.broker.enqueue(message.copy(options=options))
                moved += 1
        return moved
