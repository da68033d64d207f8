"""Logs are JSON lines with phones, emails and secrets masked (contract §9.8)."""

from __future__ import annotations

import io
import json
import time

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


def _seconds(text: str) -> float:
    from config.logging import mask_text

    started = time.perf_counter()
    mask_text(text)
    return time.perf_counter() - started


def test_masking_is_linear_in_hostile_text() -> None:
    # Given attacker-shaped text with no "@" after long runs of address characters (64 KB of
    # it took 2.9 s with the old email pattern: every character restarted the scan)
    shapes = {
        "local-part run": lambda n: "@" + "a" * n,
        "digits and letters": lambda n: "1a" * (n // 2),
        "dotted": lambda n: "a." * (n // 2),
        "digit runs": lambda n: ("9" * 10 + "x") * (n // 11),
    }
    for name, make in shapes.items():
        text = make(1024 * 1024)
        elapsed = min(_seconds(text) for _ in range(3))
        # Then a megabyte takes milliseconds (~15-60 ms here; quadratic, it was minutes: 64 KB
        # alone took 2.9 s), with a bound generous enough for a loaded shared core
        assert elapsed < 1.0, (name, elapsed)


def test_long_values_are_cut_before_masking_without_leaving_a_fragment() -> None:
    # Given a megabyte value whose cut falls inside an email address
    from config.logging import MAX_LOGGED_CHARS, MaskPersonalData

    value = "x " * (MAX_LOGGED_CHARS // 2 - 5) + "jane.doe@example.org " + "y" * 1_000_000
    started = time.perf_counter()
    event = MaskPersonalData()(None, "info", {"event": "e", "body": value})
    elapsed = time.perf_counter() - started
    # Then the logged value is short, says it was cut, and carries no part of the address
    assert len(event["body"]) < MAX_LOGGED_CHARS + 100
    assert "characters cut" in event["body"]
    assert "jane" not in event["body"] and "doe" not in event["body"]
    assert elapsed < 0.5
