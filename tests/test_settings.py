"""Settings: read once, frozen, and a bad value fails at start naming the variable."""

from __future__ import annotations

import dataclasses
from datetime import time

import pytest

from config.settings import QuietHours, Settings, load_settings
from messaging.errors import ConfigError


def test_defaults_are_the_contracts() -> None:
    # Given an empty environment, then every default is the one contract §2 states
    s = load_settings({})
    assert s.prefix == "rapid"
    assert s.database_url == "sqlite:///rapid.db"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.aws_region == "us-east-1"
    assert s.aws_endpoint_url is None
    assert s.twilio_api_base_url == "https://api.twilio.com"
    assert s.sendgrid_api_base_url == "https://api.sendgrid.com"
    assert s.public_base_url == "http://127.0.0.1:8000"
    assert (s.sms_rate_per_sender, s.sms_rate_account, s.email_rate) == (1.0, 100.0, 1000.0)
    assert s.quiet_hours == QuietHours(time(21, 0), time(8, 0))
    assert s.api_token is None


def test_values_are_parsed() -> None:
    s = load_settings(
        {
            "RAPID_PREFIX": "stage-2",
            "TWILIO_FROM_NUMBERS": "+14155550100, +14155550101",
            "SMS_RATE_PER_SENDER": "3",
            "QUIET_HOURS": "20:30-09:15",
            "PUBLIC_BASE_URL": "https://rr.example.org/",
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "PORT": "5000",
        }
    )
    assert s.prefix == "stage-2"
    assert s.twilio_from_numbers == ("+14155550100", "+14155550101")
    assert s.sms_rate_per_sender == 3.0
    assert str(s.quiet_hours) == "20:30-09:15"
    assert s.public_base_url == "https://rr.example.org"
    assert s.port == 5000


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().prefix = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RAPID_PREFIX", "Has Spaces"),
        ("DATABASE_URL", "mysql://x/y"),
        ("DATABASE_URL", "::nonsense"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("AWS_REGION", "mars"),
        ("AWS_ENDPOINT_URL", "127.0.0.1:5000"),
        ("TWILIO_ACCOUNT_SID", "AC123"),
        ("TWILIO_FROM_NUMBERS", "+14155550100,415-555-0101"),
        ("SMS_RATE_PER_SENDER", "fast"),
        ("SMS_RATE_ACCOUNT", "0"),
        ("EMAIL_RATE", "-5"),
        ("QUIET_HOURS", "9pm-8am"),
        ("QUIET_HOURS", "21:00-21:00"),
        ("EMAIL_FROM", "not an address"),
        ("SENDGRID_WEBHOOK_PUBLIC_KEY", "not base64!"),
        ("PORT", "99999"),
        ("RAPID_LOG_FORMAT", "xml"),
    ],
)
def test_a_malformed_value_names_its_variable(name: str, value: str) -> None:
    # When one variable is malformed, then the error is one line that starts with its name
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


def test_a_secret_is_never_echoed_in_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"TWILIO_ACCOUNT_SID": "ACsupersecretvalue"})
    assert "supersecret" not in str(info.value)


def test_an_unknown_rapid_variable_is_a_typo() -> None:
    with pytest.raises(
        ConfigError, match=r"RAPID_PREFX: unknown setting \(did you mean RAPID_PREFIX\?\)"
    ):
        load_settings({"RAPID_PREFX": "x"})
