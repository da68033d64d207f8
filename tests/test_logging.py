"""Logs are JSON lines with phones, emails and secrets masked (contract §9.8)."""

from __future__ import annotations

import io
import json

import structlog

from config.logging import configure_logging
from config.settings import Settings


def _log_line(settings: Settings, **event: object) -> dict[str, object]:
    stream = io.StringIO()
    configure_logging(settings, stream=stream)
    structlog.get_logger("t").info("sms.sent", **event)
    structlog.reset_defaults()
    return dict(json.loads(stream.getvalue().strip().splitlines()[-1]))


def test_json_lines_mask_phones_emails_and_secrets() -> None:
    # Given production logging with configured secrets
    settings = Settings(
        log_format="json",
        twilio_auth_token="0123456789abcdef0123456789abcdef",
        api_token="tok-123456",
    )
    # When an event carries personal data and secrets in values, nested values and free text
    line = _log_line(
        settings,
        to="+14155550100",
        email="Jane.Doe@Example.org",
        detail="retry for (415) 555-0101 after provider said 0123456789abcdef0123456789abcdef",
        headers={"Authorization": "Bearer tok-123456", "X-Other": "jane@example.org"},
        api_key="SG.abcdefghijklmnop.qrstuvwxyz0123456789",
        recipients=["+442071838750"],
        count=1234567,
    )
    text = json.dumps(line)
    # Then none of them appears, but the event stays useful
    for leaked in (
        "4155550100",
        "555-0101",
        "Jane.Doe",
        "jane@",
        "tok-123456",
        "0123456789abcdef",
        "2071838750",
        "SG.abc",
    ):
        assert leaked not in text, leaked
    assert line["event"] == "sms.sent"
    assert line["to"] == "+***00"
    assert line["email"] == "J***@Example.org"
    assert line["level"] == "info"
    assert line["count"] == 1234567  # numbers that are not phone strings are left alone
