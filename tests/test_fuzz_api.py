"""Fuzz: any request into the HTTP API is answered below 500, and every refusal says why.

Two sources of requests, against the real app (PostgreSQL, Redis, moto SNS, a provisioned
topic and a blast to act on): schemathesis generates them from the served OpenAPI
description (valid and nearly valid), and hypothesis throws raw ones (any method, path,
query string, headers and body, JSON or not, nested past the recursion limit).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import load_settings
from messaging.content.alert import parse_alert
from tests.fuzzing import (
    BUDGET,
    FUZZ,
    AsgiClient,
    Tally,
    deeply_nested,
    hostile_text,
    json_values,
    quiet_logs,
)
from workers.app import App

pytestmark = pytest.mark.integration

TOKEN = "fuzz-api-token-0123456789-0123456789abcdef"
TOPIC = "debate-night"


@pytest.fixture
def web(pg_url: str, moto_url: str, prefix: str) -> Iterator[Any]:
    """The real ``rapid web`` ASGI app over provisioned services."""
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
    provision_all(app, (TOPIC,))
    app.blasts.create(
        parse_alert(json.dumps({"alert_id": "b1", "sms": {"body": "Hi"}}), fallback_id="b1"),
        TOPIC,
        None,
    )
    yield create_app(app)
    app.close()


def _assert_refusal_has_a_reason(status: int, body: bytes, what: Any) -> None:
    assert status < 500, what
    if 400 <= status < 500:
        assert body.strip(), what
        if body.startswith(b"{"):
            assert json.loads(body).get("error"), what


def test_schema_driven_requests_never_make_the_api_fail(web: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", web)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    tally = Tally("API (schema-driven requests)")
    per_operation = -(-BUDGET // len(operations))

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(parent=FUZZ, max_examples=per_operation)
        def check(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
            _assert_refusal_has_a_reason(response.status_code, response.content, case)
            tally.add(f"{response.status_code}")

        with quiet_logs():
            check()
    tally.report(http=True)
    assert tally.cases >= BUDGET


PATHS = [
    "/api/alerts",
    "/api/blasts",
    "/api/blasts/b1",
    "/api/blasts/b1/pause",
    "/api/blasts/b1/resume",
    "/api/blasts/b1/cancel",
    "/api/blasts/b1/approve",
    "/api/blasts/b1/reject",
    "/api/blasts/nope",
    "/api/audit",
    "/api/replies",
    "/api/openapi.json",
]


def _natural_method(path: str) -> str:
    actions = ("/pause", "/resume", "/cancel", "/approve", "/reject", "/api/alerts")
    return "POST" if path.endswith(actions) else "GET"


@st.composite
def raw_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Any method, path, query, auth and body the API might be sent."""
    path = draw(
        st.one_of(
            st.sampled_from(PATHS),
            hostile_text.map(lambda t: "/api/blasts/" + quote(t or "x", safe="")),
        )
    )
    query = draw(
        st.dictionaries(
            st.sampled_from(["limit", "since", "status", "x"]),
            st.one_of(
                hostile_text,
                st.sampled_from(["²", "١٢", "0", "-1", "20", "9" * 40, "1e3", "2026-13-40"]),
            ),
            max_size=3,
        )
    )
    kind = draw(st.sampled_from(["alert", "json", "text", "deep"]))
    if kind == "alert":
        doc = draw(
            st.fixed_dictionaries(
                {"topic": st.one_of(st.just(TOPIC), hostile_text)},
                optional={
                    "sms": st.fixed_dictionaries({"body": hostile_text}),
                    "email": st.fixed_dictionaries({"subject": hostile_text, "text": hostile_text}),
                    "alert_id": hostile_text,
                    "test_recipients": st.lists(hostile_text, max_size=3),
                    "dry_run": st.just(True),
                    "extra": json_values,
                },
            )
        )
        body = json.dumps(doc).encode()
    elif kind == "json":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "deep":
        body = deeply_nested(draw(st.integers(min_value=1000, max_value=100_000))).encode()
    else:
        body = draw(st.binary(max_size=200))
    auth = draw(
        st.sampled_from(
            [f"Bearer {TOKEN}", f"Bearer {TOKEN}", "", "Bearer ", "Basic x", "Bearer wrong"]
        )
    )
    return {
        "method": draw(
            st.sampled_from([_natural_method(path)] * 6 + ["GET", "POST", "PUT", "HEAD", "OPTIONS"])
        ),
        "url": path,
        "params": query,
        "content": body,
        "headers": {"Authorization": auth, "Content-Type": "application/json"},
    }


def test_raw_requests_never_make_the_api_fail(web: Any) -> None:
    # Two callers: one always holds the token, one never does (and is soon throttled, 429),
    # so the throttle never hides the API from the cases that should reach it.
    operator, stranger = AsgiClient(web), AsgiClient(web, client_host="203.0.113.9")
    tally = Tally("API (raw requests)")

    @given(request=raw_requests())
    @settings(parent=FUZZ)
    def case(request: dict[str, Any]) -> None:
        good = request["headers"]["Authorization"] == f"Bearer {TOKEN}"
        response = (operator if good else stranger).request(**request)
        body = b"" if request["method"] == "HEAD" else response.content
        _assert_refusal_has_a_reason(response.status_code, body or b"-", request)
        tally.add(f"{response.status_code}")

    try:
        with quiet_logs():
            case()
    finally:
        operator.close()
        stranger.close()
    tally.report(http=True)
    assert tally.cases >= BUDGET
