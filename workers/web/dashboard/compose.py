"""The compose form: its fields, and the alert (contract §4) they make.

The form is turned into the same body ``POST /api/alerts`` takes and validated by the API's
own :func:`~workers.web.api.alert_document`, so the dashboard cannot publish an alert the
API would refuse, nor the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from messaging.access.audit import Source
from messaging.errors import InputError

#: The form's text fields, in the order the page shows them.
FIELDS: Final = (
    "topic",
    "priority",
    "sms_body",
    "email_subject",
    "email_text",
    "email_html",
    "postal_codes",
    "states",
    "tags",
    "send_by",
    "test_recipients",
)
PRIORITIES: Final = ("urgent", "normal", "bulk")


class Mode(StrEnum):
    """What the operator asked the form to do."""

    DRY_RUN = "dry_run"
    TEST = "test"
    SEND = "send"


def _listed(raw: str) -> list[str]:
    """``"15213, 15217\n15232"`` → ``["15213", "15217", "15232"]``."""
    return [v.strip() for v in raw.replace("\n", ",").split(",") if v.strip()]


def _send_by(raw: str) -> str:
    """A ``datetime-local`` value (read as UTC, as the page says) or an ISO 8601 time."""
    try:
        when = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"send by: {raw!r} is not a date and time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def form_values(form: Mapping[str, str]) -> dict[str, str]:
    """The form's fields as posted (trimmed; missing ones empty), to fill the page again."""
    return {name: str(form.get(name, "")).strip() for name in FIELDS}


def alert_body(values: Mapping[str, str], mode: Mode) -> dict[str, Any]:
    """The ``POST /api/alerts`` body of a filled form (validated afterwards by the API's
    check); :class:`InputError` for what only the form can get wrong."""
    body: dict[str, Any] = {"topic": values["topic"], "priority": values["priority"] or "normal"}
    if values["sms_body"]:
        body["sms"] = {"body": values["sms_body"]}
    if values["email_subject"] or values["email_text"] or values["email_html"]:
        email = {"subject": values["email_subject"], "text": values["email_text"]}
        if values["email_html"]:
            email["html"] = values["email_html"]
        body["email"] = email
    audience = {
        key: _listed(values[key]) for key in ("postal_codes", "states", "tags") if values[key]
    }
    if audience:
        body["audience"] = audience
    if values["send_by"]:
        body["send_by"] = _send_by(values["send_by"])
    if mode is Mode.DRY_RUN:
        body["dry_run"] = True
    elif mode is Mode.TEST:
        recipients = _listed(values["test_recipients"])
        if not recipients:
            raise InputError("test send: name at least one staff phone or email")
        body["test_recipients"] = recipients
    return body


def alert_to_publish(values: Mapping[str, str], mode: Mode, operator: str) -> tuple[str, dict]:
    """(topic, the alert document) for ``operator``, requested via the dashboard."""
    from workers.web.alert_body import alert_document

    topic, document = alert_document(alert_body(values, mode), requested_by=operator)
    document["requested_via"] = Source.DASHBOARD.value
    return topic, document
