"""Unwrapping what an SNS subscription puts on the intake queue.

Two forms arrive (contract §4): the SNS JSON envelope (``Type: Notification`` with
``TopicArn``, ``MessageId`` and the alert in ``Message``) and raw message delivery (the alert
itself). Raw delivery carries no topic and no SNS id, so the alert must name its ``topic``,
and its fallback id is a digest of the body: a redelivered copy is the same blast.
"""

from __future__ import annotations

import hashlib
import json

from config.names import Names
from messaging.errors import InputError
from messaging.ports import Delivery


def unwrap(body: str, names: Names) -> Delivery:
    """Tell the two delivery forms apart; :class:`InputError` for an envelope we cannot use.

    The intake worker injects this (bound to its ``names``) as the domain's
    :data:`~messaging.ports.Unwrap`."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not an envelope; parse_alert says what is wrong
        data = None
    if isinstance(data, dict) and data.get("Type") == "Notification" and "Message" in data:
        topic_arn = str(data.get("TopicArn", ""))
        topic = names.topic_from_sns_name(topic_arn.rsplit(":", 1)[-1])
        if topic is None:
            raise InputError(f"notification from a topic that is not one of ours: {topic_arn}")
        message = data["Message"]
        if not isinstance(message, str):
            raise InputError("SNS envelope Message is not a string")
        return Delivery(message, topic, str(data.get("MessageId") or _digest(message)), "envelope")
    return Delivery(body, None, _digest(body), "raw")


def _digest(body: str) -> str:
    return "raw-" + hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest()[:40]
