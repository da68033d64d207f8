"""The HTTP API's roles (contract §11): every route × every role, over a real ``rapid web``.

Operator tokens are checked on every route, the bootstrap ``RAPID_API_TOKEN`` acts as the
admin ``bootstrap``, failed bearer attempts are limited fleet-wide (Redis), and tokens never
reach the logs or the database in clear.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from messaging.access.operators import Role, allows
from messaging.content.alert import Alert, SmsContent
from messaging.store.schema import audit_log, operators
from tests.running_web import Web, make_web_fixture, queue_on_topic
from workers.web.api import ROUTE_PERMISSIONS
from workers.web.app import create_app
from workers.web.security import AUTH_FAILURE_LIMIT

pytestmark = pytest.mark.integration

BOOTSTRAP_TOKEN = "bootstrap-token-for-the-role-tests-0123456789"

#: The contract's table, written out independently of the code's: the least role each
#: route needs. ``None``: the route needs no token.
LEAST_ROLE: dict[tuple[str, str], Role] = {
    ("POST", "/api/alerts"): Role.SENDER,
    ("GET", "/api/blasts"): Role.VIEWER,
    ("GET", "/api/blasts/{blast_id}"): Role.VIEWER,
    ("GET", "/api/blasts/{blast_id}/export"): Role.VIEWER,
    ("GET", "/api/audit"): Role.VIEWER,
    ("POST", "/api/blasts/{blast_id}/pause"): Role.SENDER,
    ("POST", "/api/blasts/{blast_id}/resume"): Role.APPROVER,
    ("POST", "/api/blasts/{blast_id}/cancel"): Role.APPROVER,
    ("POST", "/api/blasts/{blast_id}/approve"): Role.APPROVER,
    ("POST", "/api/blasts/{blast_id}/reject"): Role.APPROVER,
    ("GET", "/api/replies"): Role.VIEWER,
    # Reviewing a reply may lift a suppression: an approver's call.
    ("POST", "/api/replies/{reply_id}/review"): Role.APPROVER,
}
#: Routes anyone may read.
PUBLIC = {("GET", "/api/openapi.json")}
ORDER = [Role.VIEWER, Role.SENDER, Role.APPROVER, Role.ADMIN]


make_web = make_web_fixture(
    api_token=BOOTSTRAP_TOKEN, secret_key="role-tests-secret-key-0123456789abcdef"
)


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return make_web()


@pytest.fixture
def tokens(web: Web) -> dict[Role, str]:
    """One operator per role."""
    return {
        role: web.app.operators.add(f"op-{role.value}", role, created_by="test")[1] for role in Role
    }


def _path(route: str) -> str:
    return route.replace("{blast_id}", "b1").replace("{reply_id}", "1")


def _body(method: str, route: str) -> dict[str, Any]:
    if route == "/api/alerts":
        # A topic that is not provisioned: an authorised caller gets 422, not 401/403.
        return {"json": {"topic": "nowhere", "sms": {"body": "Hi"}}}
    return {}


def test_every_api_route_is_in_the_permission_table(web: Web) -> None:
    # Given the routes the web app serves under /api/, then each one needs a permission
    # (none is left open by forgetting it), and the table agrees with the contract's roles
    api_routes = {
        (method, route.path)
        for route in create_app(web.app).routes
        if route.path.startswith("/api/")
        for method in (route.methods or set()) - {"HEAD"}
    }
    concrete = {
        (m, p.replace("{action}", a))
        for m, p in api_routes
        for a in (["pause", "resume", "cancel", "approve", "reject"] if "{action}" in p else [""])
    }
    assert concrete - PUBLIC <= set(ROUTE_PERMISSIONS), concrete - PUBLIC - set(ROUTE_PERMISSIONS)
    for route, least in LEAST_ROLE.items():
        assert route in ROUTE_PERMISSIONS, route
        for role in ORDER:
            assert allows(role, ROUTE_PERMISSIONS[route]) == (
                ORDER.index(role) >= ORDER.index(least)
            ), (route, role)


@pytest.mark.parametrize("route", list(LEAST_ROLE), ids=lambda r: f"{r[0]} {r[1]}")
def test_roles_matrix(web: Web, tokens: dict[Role, str], route: tuple[str, str]) -> None:
    # Given a blast b1 and one operator per role
    web.app.blasts.create(Alert(alert_id="b1", sms=SmsContent(body="Hi")), "news", None)
    method, path = route
    least = LEAST_ROLE[route]
    # When no token or a wrong one is given, then 401
    assert web.api(method, _path(path), None, **_body(method, path)).status_code == 401
    assert web.api(method, _path(path), "rr_wrong", **_body(method, path)).status_code == 401
    for role in ORDER:
        # When each role calls it, then roles below the least one get 403, the rest get in
        response = web.api(method, _path(path), tokens[role], **_body(method, path))
        if ORDER.index(role) < ORDER.index(least):
            assert response.status_code == 403, (role, response.text)
            assert f"op-{role.value} ({role.value}) may not" in response.json()["error"]
        else:
            assert response.status_code not in (401, 403, 429), (role, response.text)
    # And the bootstrap token is an admin
    response = web.api(method, _path(path), BOOTSTRAP_TOKEN, **_body(method, path))
    assert response.status_code not in (401, 403, 429), response.text


def test_revoked_tokens_and_servers_without_a_bootstrap_token(
    web: Web, tokens: dict[Role, str], make_web: Callable[..., Web]
) -> None:
    # Given a server without RAPID_API_TOKEN, then operator tokens still work
    bare = make_web(api_token=None)
    assert bare.api("GET", "/api/blasts", tokens[Role.VIEWER]).status_code == 200
    assert bare.api("GET", "/api/blasts", BOOTSTRAP_TOKEN).status_code == 401
    # When an operator is revoked, then their token is refused at once, on every server
    web.app.operators.revoke("op-viewer")
    assert web.api("GET", "/api/blasts", tokens[Role.VIEWER]).status_code == 401
    assert bare.api("GET", "/api/blasts", tokens[Role.VIEWER]).status_code == 401


def test_failed_bearer_attempts_are_limited_fleet_wide(
    make_web: Callable[..., Web], tokens: dict[Role, str]
) -> None:
    # Given two web servers sharing Redis
    first, second = make_web(), make_web()
    # When one address fails AUTH_FAILURE_LIMIT times, spread over both servers
    for i in range(AUTH_FAILURE_LIMIT - 1):
        web = first if i % 2 else second
        assert web.api("GET", "/api/blasts", f"rr_guess{i}").status_code == 401
    limited = first.api("GET", "/api/blasts", "rr_last-guess")
    # Then the failure that reaches the limit, and every later call from that address,
    # valid token or not, gets 429 with a Retry-After, on both servers
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 300
    assert second.api("GET", "/api/blasts", tokens[Role.ADMIN]).status_code == 429
    assert first.api("GET", "/api/blasts", None).status_code == 429


def test_an_alert_is_requested_by_the_calling_operator(web: Web, tokens: dict[Role, str]) -> None:
    # Given a provisioned topic whose SNS topic feeds a queue made for this test
    queue_url = queue_on_topic(web.app, "news", "roles")
    # When the sender posts an alert that claims someone else asked for it
    response = web.api(
        "POST",
        "/api/alerts",
        tokens[Role.SENDER],
        json={"topic": "news", "sms": {"body": "Hi"}, "requested_by": "op-admin"},
    )
    assert response.status_code == 202, response.text
    # Then the published alert names the sender, from the API
    message = web.app.sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"][0]
    alert = json.loads(message["Body"])
    assert alert["requested_by"] == "op-sender" and alert["requested_via"] == "api"


def test_tokens_never_reach_the_logs_or_the_database(
    web: Web, tokens: dict[Role, str], make_web: Callable[..., Web]
) -> None:
    web.app.blasts.create(Alert(alert_id="b1", sms=SmsContent(body="Hi")), "news", None)
    with capture_logs() as logs:
        for token in [*tokens.values(), "rr_wrong-guess-token"]:
            web.api("GET", "/api/blasts/b1", token)
            web.api("POST", "/api/blasts/b1/approve", token)
    text = json.dumps(logs, default=str)
    for token in tokens.values():
        assert token not in text
    assert "rr_wrong-guess-token" not in text
    with web.app.engine.connect() as conn:
        stored = json.dumps(
            [list(r) for r in conn.execute(select(operators))]
            + [list(r) for r in conn.execute(select(audit_log))],
            default=str,
        )
    for token in tokens.values():
        assert token not in stored


def test_audit_route_lists_entries_newest_first(web: Web, tokens: dict[Role, str]) -> None:
    web.app.blasts.create(Alert(alert_id="b1", sms=SmsContent(body="Hi")), "news", None)
    # When an approver pauses... (b1 is expanding: pausing is allowed) and cancels it
    assert web.api("POST", "/api/blasts/b1/pause", tokens[Role.SENDER]).status_code == 200
    assert web.api("POST", "/api/blasts/b1/cancel", tokens[Role.APPROVER]).status_code == 200
    # Then a viewer reads both, newest first, with who and where from
    entries = web.api("GET", "/api/audit", tokens[Role.VIEWER]).json()
    assert [(e["action"], e["actor"], e["source"], e["blast_id"]) for e in entries[:2]] == [
        ("blast.cancel", "op-approver", "api", "b1"),
        ("blast.pause", "op-sender", "api", "b1"),
    ]
    assert web.api("GET", "/api/audit?since=bogus", tokens[Role.VIEWER]).status_code == 422
    future = web.api("GET", "/api/audit?since=2999-01-01T00:00:00Z", tokens[Role.VIEWER])
    assert future.json() == []
