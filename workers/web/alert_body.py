"""An alert from an HTTP body: validated into the document to publish, as the CLI would.

``POST /api/alerts`` and the dashboard's compose form both go through
:func:`alert_document`, so neither can publish an alert the other would refuse.
"""

from __future__ import annotations

import json
from typing import Any

from messaging.access.audit import Source
from messaging.compliance.suppression import classify
from messaging.content.alert import new_alert_id, parse_alert
from messaging.content.topics import validate_topic_name
from messaging.errors import InputError


def alert_from_json(body: bytes, requested_by: str) -> tuple[str, dict[str, Any]]:
    """Parse and validate an alert body; run off the event loop.

    Validation compiles and trial-renders templates (bounded, but milliseconds): on the loop, a
    hostile alert would stall /healthz and every STOP webhook meanwhile.
    """
    try:
        data = json.loads(body)
    except RecursionError:  # [[[[…]]]] thousands deep
        raise InputError("alert is not valid JSON: nested too deeply") from None
    return alert_document(data, requested_by=requested_by)


def alert_document(data: Any, *, requested_by: str) -> tuple[str, dict[str, Any]]:
    """Validate a ``POST /api/alerts`` body; returns (topic, the document to publish).

    The body is the alert of contract §4 plus ``"topic"``. The requester is the calling
    operator, whatever the body says. Raises :class:`InputError` with every problem in one
    line, exactly as the CLI would.
    """
    if not isinstance(data, dict):
        raise InputError('the body must be a JSON object: an alert plus "topic"')
    topic = data.get("topic")
    if not isinstance(topic, str):
        raise InputError("topic: required, the alert topic to publish to")
    validate_topic_name(topic)
    document = dict(data)
    document["requested_by"] = requested_by
    document["requested_via"] = Source.API.value
    if not document.get("alert_id"):
        document["alert_id"] = new_alert_id(topic)
    recipients = document.get("test_recipients")
    if isinstance(recipients, list) and all(isinstance(v, str) for v in recipients):
        # Stored normalised, as `rapid alert send --test-recipient` does, so they match
        # supporters' E.164 phones and lower-cased emails.
        document["test_recipients"] = [classify(v)[1] for v in recipients]
    parse_alert(json.dumps(document), fallback_id=document["alert_id"], topic=topic)
    return topic, document
