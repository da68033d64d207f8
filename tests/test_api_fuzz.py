"""schemathesis against the OpenAPI description `rapid web` serves: no input makes a 5xx.

The app is the real one (database, Redis, moto SNS, a provisioned topic and a blast to act
on); schemathesis generates requests from /api/openapi.json, bearer token included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from config.settings import load_settings
from messaging.alert import parse_alert
from workers.app import App

TOKEN = "fuzz-token-0123456789-0123456789abcdef"

pytestmark = pytest.mark.integration


@pytest.fixture
def web_schema(pg_url: str, moto_url: str, prefix: str) -> Iterator[Any]:
    from tests.conftest import REDIS_TEST_URL
    from workers.commands.setup import provision_all
    from workers.web.app import create_app

    env = {
        "RAPID_PREFIX": prefix,
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_TEST_URL,
        "AWS_ENDPOINT_URL": moto_url,
        "RAPID_API_TOKEN": TOKEN,
        "RAPID_ENV": "test",
    }
    app = App(load_settings(env))
    provision_all(app, ("debate-night",))
    app.blasts.create(
        parse_alert(json.dumps({"alert_id": "b1", "sms": {"body": "Hi"}}), fallback_id="b1"),
        "debate-night",
        None,
    )
    yield schemathesis.openapi.from_asgi("/api/openapi.json", create_app(app))
    app.close()


def test_no_request_makes_the_api_fail(web_schema: Any) -> None:
    # Given any request the description allows (and many it does not), for every operation,
    # the API answers 2xx/4xx. Driven through hypothesis directly, not schemathesis' pytest
    # plugin, which breaks with each new pytest release.
    operations = [result.ok() for result in web_schema.get_all_operations()]
    assert len(operations) >= 5

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {TOKEN}"},
                checks=[schemathesis.checks.not_a_server_error],
            )

        check()
