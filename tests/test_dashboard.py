"""The war room (contract §7 ``GET /dashboard``): login, sessions, CSRF, roles, the stream.

Driven through Starlette's httpx.Client over the real ``rapid web`` app, PostgreSQL and Redis;
the browser itself is exercised in tests/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, insert

from emulators.server import start_in_thread
from messaging.access.operators import Role
from messaging.blasts.breakdown import BreakdownReads
from messaging.blasts.lifecycle import BlastStatus
from messaging.content.alert import Alert, SmsContent
from messaging.store.memory.breakdown import MemoryBreakdown
from messaging.store.memory.tables import MemoryTables, Row
from messaging.store.schema import deliveries, supporters
from messaging.store.sql.breakdown import SqlBreakdown
from tests.running_web import service_settings
from workers.app import App
from workers.web.app import create_app
from workers.web.dashboard.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    MemorySessionStore,
    Sessions,
)

BOOTSTRAP_TOKEN = "bootstrap-token-for-the-dashboard-tests-0123456789"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Web:
    app: App
    make_client: Callable[[], httpx.Client]
    asgi: Any


@pytest.fixture
def web(pg_url: str, prefix: str) -> Iterator[Web]:
    settings = service_settings(
        pg_url,
        prefix,
        api_token=BOOTSTRAP_TOKEN,
        secret_key="dashboard-tests-secret-key-0123456789abcdef",
    )
    app = App(settings)
    asgi = create_app(app)
    server = start_in_thread(asgi)
    clients: list[httpx.Client] = []

    def make_client() -> httpx.Client:
        client = httpx.Client(base_url=server.url, trust_env=False, timeout=30)
        clients.append(client)
        return client

    yield Web(app, make_client, asgi)
    for client in clients:
        client.close()
    server.stop()
    keys = list(app.redis.scan_iter(f"{prefix}:*"))
    if keys:
        app.redis.delete(*keys)
    app.close()


@pytest.fixture
def tokens(web: Web) -> dict[Role, str]:
    """One operator per role, named op-<role>."""
    return {
        role: web.app.operators.add(f"op-{role.value}", role, created_by="test")[1] for role in Role
    }


def _csrf(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, html[:500]
    return found.group(1)


def login(client: httpx.Client, token: str) -> httpx.Response:
    """Fill and post the login form as a browser would."""
    page = client.get("/dashboard/login")
    assert page.status_code == 200
    return client.post("/dashboard/login", data={"csrf": _csrf(page.text), "token": token})


def _blast(app: App, blast_id: str, status: str, requested_by: str = "someone") -> None:
    alert = Alert(alert_id=blast_id, sms=SmsContent(body="Hi"), requested_by=requested_by)
    app.blasts.create(alert, "news", None)
    if status != BlastStatus.EXPANDING:
        app.blasts.finish_expansion(blast_id, {}, to=status)


def _buttons(html: str) -> set[str]:
    return set(re.findall(r'class="act act-(\w+)"', html))


def test_pages_need_a_session(web: Web) -> None:
    # Given no session, when any page is asked for, then it sends the browser to the login
    client = web.make_client()
    for path in ("/dashboard", "/dashboard/compose", "/dashboard/audit", "/dashboard/blasts/x"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/dashboard/login?next=")
    # And the live stream and every form refuse it
    assert client.get("/dashboard/events").status_code == 401
    assert client.post("/dashboard/blasts/x/pause", data={"csrf": "x"}).status_code == 303


def test_login_sets_a_strict_httponly_session_cookie(web: Web, tokens: dict[Role, str]) -> None:
    client = web.make_client()
    # When a wrong token is posted, then 401 and no session
    bad = login(client, "rr_not-a-token")
    assert bad.status_code == 401
    assert "not a valid operator token" in bad.text
    assert SESSION_COOKIE not in client.cookies
    # When the right one is, then a session cookie: HttpOnly, SameSite Strict, not Secure
    # over http
    good = login(client, tokens[Role.VIEWER])
    assert good.status_code == 303 and good.headers["location"] == "/dashboard"
    cookie = next(h for h in good.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie
    page = client.get("/dashboard")
    assert page.status_code == 200 and "op-viewer · viewer" in page.text
    # And the page forbids inline script and anything from elsewhere
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    # And over https the cookie is Secure
    cookie = asyncio.run(_https_login(web, tokens[Role.VIEWER]))
    assert "Secure" in cookie and "HttpOnly" in cookie
    # And the bootstrap token logs in as the admin "bootstrap"
    admin = web.make_client()
    assert login(admin, BOOTSTRAP_TOKEN).status_code == 303
    assert "bootstrap · admin" in admin.get("/dashboard").text


async def _https_login(web: Web, token: str) -> str:
    transport = httpx.ASGITransport(app=web.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="https://rr.example") as client:
        page = await client.get("/dashboard/login")
        done = await client.post(
            "/dashboard/login", data={"csrf": _csrf(page.text), "token": token}
        )
    return next(h for h in done.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))


def test_login_form_has_its_own_csrf_check(web: Web, tokens: dict[Role, str]) -> None:
    # Given a login post without the form's token (a cross-site form), then 403, no session
    client = web.make_client()
    response = client.post("/dashboard/login", data={"csrf": "forged", "token": tokens[Role.ADMIN]})
    assert response.status_code == 403
    assert SESSION_COOKIE not in client.cookies
    # And the double-submit cookie must match the field, not merely exist
    client.get("/dashboard/login")
    assert LOGIN_CSRF_COOKIE in client.cookies
    response = client.post("/dashboard/login", data={"csrf": "forged", "token": tokens[Role.ADMIN]})
    assert response.status_code == 403


def test_login_only_redirects_within_the_dashboard(web: Web, tokens: dict[Role, str]) -> None:
    client = web.make_client()
    page = client.get("/dashboard/login?next=https://evil.example/")
    response = client.post(
        "/dashboard/login",
        data={"csrf": _csrf(page.text), "token": tokens[Role.VIEWER], "next": "//evil.example"},
    )
    assert response.headers["location"] == "/dashboard"


def test_every_form_needs_the_session_csrf_token(web: Web, tokens: dict[Role, str]) -> None:
    # Given a sending blast and an approver logged in
    _blast(web.app, "b1", BlastStatus.SENDING)
    client = web.make_client()
    login(client, tokens[Role.APPROVER])
    # When pause is posted without the token, or with another session's, then 403, nothing
    # changes
    other = web.make_client()
    login(other, tokens[Role.APPROVER])
    other_csrf = _csrf(other.get("/dashboard").text)
    for data in ({}, {"csrf": "guess"}, {"csrf": other_csrf}):
        assert client.post("/dashboard/blasts/b1/pause", data=data).status_code == 403
    assert web.app.blasts.get("b1").status == "sending"
    # And a post from another origin is refused even with the token
    csrf = _csrf(client.get("/dashboard/blasts/b1").text)
    response = client.post(
        "/dashboard/blasts/b1/pause",
        data={"csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert web.app.blasts.get("b1").status == "sending"
    # When it is posted with the page's token, then the blast is paused fleet-wide, audited
    # under the operator with source dashboard
    response = client.post("/dashboard/blasts/b1/pause", data={"csrf": csrf})
    assert response.status_code == 303
    assert web.app.blasts.get("b1").status == "paused"
    entry = web.app.audit.entries(limit=1)[0]
    assert (entry.actor, entry.source, entry.action, entry.blast_id) == (
        "op-approver",
        "dashboard",
        "blast.pause",
        "b1",
    )
    # And the logout form needs it too
    assert client.post("/dashboard/logout", data={}).status_code == 403
    assert client.get("/dashboard").status_code == 200


@pytest.mark.parametrize(
    ("role", "running", "waiting"),
    [
        (Role.VIEWER, set(), set()),
        (Role.SENDER, {"pause"}, set()),
        (Role.APPROVER, {"pause", "cancel"}, {"approve", "reject", "cancel"}),
        (Role.ADMIN, {"pause", "cancel"}, {"approve", "reject", "cancel"}),
    ],
)
def test_buttons_follow_the_role_and_every_post_rechecks_it(
    web: Web, tokens: dict[Role, str], role: Role, running: set[str], waiting: set[str]
) -> None:
    _blast(web.app, "run-1", BlastStatus.SENDING)
    _blast(web.app, "big-1", BlastStatus.AWAITING_APPROVAL)
    client = web.make_client()
    login(client, tokens[role])
    page = client.get("/dashboard/blasts/run-1")
    assert _buttons(page.text) == running
    assert _buttons(client.get("/dashboard/blasts/big-1").text) == waiting
    # When a role posts what it has no button for, then 403 and nothing moves
    csrf = _csrf(page.text)
    for action in {"pause", "cancel"} - running:
        assert (
            client.post(f"/dashboard/blasts/run-1/{action}", data={"csrf": csrf}).status_code == 403
        )
    for action in {"approve", "reject"} - waiting:
        assert (
            client.post(f"/dashboard/blasts/big-1/{action}", data={"csrf": csrf}).status_code == 403
        )
    assert web.app.blasts.get("run-1").status == "sending"
    assert web.app.blasts.get("big-1").status == "awaiting_approval"


def test_the_requester_gets_no_approve_button_and_a_second_operator_approves(
    web: Web, tokens: dict[Role, str]
) -> None:
    _blast(web.app, "big-2", BlastStatus.AWAITING_APPROVAL, requested_by="op-approver")
    own = web.make_client()
    login(own, tokens[Role.APPROVER])
    page = own.get("/dashboard/blasts/big-2")
    assert _buttons(page.text) == {"reject", "cancel"}
    assert "another operator must approve it" in page.text
    # And posting approve anyway is refused by the service (409), not carried out
    response = own.post("/dashboard/blasts/big-2/approve", data={"csrf": _csrf(page.text)})
    assert response.status_code == 409
    assert web.app.blasts.get("big-2").status == "awaiting_approval"
    # When a second operator approves, then it sends, approved by them, audited
    admin = web.make_client()
    login(admin, tokens[Role.ADMIN])
    csrf = _csrf(admin.get("/dashboard/blasts/big-2").text)
    assert admin.post("/dashboard/blasts/big-2/approve", data={"csrf": csrf}).status_code == 303
    record = web.app.blasts.get("big-2")
    assert (record.status, record.approved_by) == ("sending", "op-admin")
    entry = web.app.audit.entries(limit=1)[0]
    assert (entry.actor, entry.source, entry.action) == ("op-admin", "dashboard", "blast.approve")


def test_logout_and_revocation_end_sessions(web: Web, tokens: dict[Role, str]) -> None:
    client = web.make_client()
    login(client, tokens[Role.SENDER])
    cookie = client.cookies[SESSION_COOKIE]
    csrf = _csrf(client.get("/dashboard").text)
    # When the operator logs out, then the old cookie opens nothing, even replayed
    assert client.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
    replay = web.make_client()
    replay.cookies.set(SESSION_COOKIE, cookie)
    assert replay.get("/dashboard").status_code == 303
    # Given a fresh session, when the operator is revoked, then their next click is refused
    login(client, tokens[Role.SENDER])
    assert client.get("/dashboard").status_code == 200
    web.app.operators.revoke("op-sender")
    assert client.get("/dashboard").status_code == 303
    # And a new operator by the same name does not inherit the old session
    web.app.operators.add("op-sender", Role.ADMIN, created_by="test")
    assert client.get("/dashboard").status_code == 303


def test_the_stream_pushes_summaries_with_progress(web: Web, tokens: dict[Role, str]) -> None:
    # Given an ended blast (its stream says so and ends, so the test reads all of it)
    _blast(web.app, "done-1", BlastStatus.SENDING)
    web.app.actions.cancel("done-1")
    client = web.make_client()
    login(client, tokens[Role.VIEWER])
    response = client.get("/dashboard/events?blast=done-1")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith('data: {"blasts"')
    ]
    assert events, response.text
    blast = events[0]["blasts"][0]
    assert blast["blast_id"] == "done-1" and blast["status"] == "canceled"
    assert set(blast["progress"]["sms"]) >= {"done", "total", "rate_per_s", "eta_s"}
    assert "event: ended" in response.text


def test_audit_and_replies_pages(web: Web, tokens: dict[Role, str]) -> None:
    from messaging.access.audit import Actor, AuditAction, Source

    for i in range(60):
        web.app.audit.record(Actor("alice", Source.CLI), AuditAction.BLAST_PAUSED, blast_id=f"b{i}")
    client = web.make_client()
    login(client, tokens[Role.VIEWER])
    first = client.get("/dashboard/audit").text
    assert ">b59<" in first and ">b10<" in first and ">b9<" not in first
    assert "Older" in first
    second = client.get("/dashboard/audit?page=2").text
    assert ">b9<" in second and ">b0<" in second and "Older" not in second
    assert client.get("/dashboard/replies").status_code == 200
    assert client.get("/dashboard/audit?page=abc").status_code == 200


def test_compose_validates_like_the_api(web: Web, tokens: dict[Role, str]) -> None:
    client = web.make_client()
    login(client, tokens[Role.SENDER])
    csrf = _csrf(client.get("/dashboard/compose").text)
    # An alert with no channel is refused with the API's message, and the form keeps values
    response = client.post(
        "/dashboard/compose",
        data={"csrf": csrf, "topic": "news", "mode": "send", "postal_codes": "15213"},
    )
    assert response.status_code == 422
    assert "15213" in response.text and 'role="alert"' in response.text
    # A test send needs staff to send to
    response = client.post(
        "/dashboard/compose",
        data={"csrf": csrf, "topic": "news", "mode": "test", "sms_body": "Hi"},
    )
    assert response.status_code == 422 and "staff" in response.text
    # A viewer may not compose at all
    viewer = web.make_client()
    login(viewer, tokens[Role.VIEWER])
    csrf = _csrf(viewer.get("/dashboard").text)
    response = viewer.post(
        "/dashboard/compose", data={"csrf": csrf, "topic": "news", "mode": "send", "sms_body": "x"}
    )
    assert response.status_code == 403


def test_memory_sessions_expire() -> None:
    now = [0.0]
    sessions = Sessions(MemorySessionStore(clock=lambda: now[0]), ttl_s=60)
    session_id, session = sessions.open("alice", "2026-01-01T00:00:00+00:00")
    assert sessions.get(session_id) == session
    now[0] = 61.0
    assert sessions.get(session_id) is None
    assert sessions.get("x" * 1000) is None


# --- the breakdown (failures by code, deferrals by zone), both backends --------------------


def _rows(now: datetime) -> list[dict[str, Any]]:
    later, latest = now + timedelta(hours=2), now + timedelta(hours=5)
    return [
        {"supporter_id": 1, "state": "failed", "error_code": "21211", "channel": "sms"},
        {"supporter_id": 2, "state": "failed", "error_code": "21211", "channel": "sms"},
        {"supporter_id": 3, "state": "failed", "error_code": "30007", "channel": "sms"},
        {"supporter_id": 1, "state": "failed", "error_code": None, "channel": "email"},
        {"supporter_id": 4, "state": "deferred", "deferred_until": latest, "channel": "sms"},
        {"supporter_id": 5, "state": "deferred", "deferred_until": later, "channel": "sms"},
        {"supporter_id": 6, "state": "deferred", "deferred_until": later, "channel": "sms"},
        {"supporter_id": 7, "state": "sent", "channel": "sms"},
    ]


ZONES = {
    1: None,
    2: None,
    3: None,
    4: "America/Los_Angeles",
    5: "America/New_York",
    6: None,
    7: None,
}


def _check(reads: BreakdownReads, now: datetime) -> None:
    found = reads.breakdown("bd-1")
    assert found.failures == {"email": {"": 1}, "sms": {"21211": 2, "30007": 1}}
    assert [(z.timezone, z.rows, z.first_release) for z in found.deferred] == [
        ("America/New_York", 1, now + timedelta(hours=2)),
        (None, 1, now + timedelta(hours=2)),
        ("America/Los_Angeles", 1, now + timedelta(hours=5)),
    ]
    assert reads.breakdown("nothing").failures == {}


def test_breakdown_memory() -> None:
    now = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)
    tables = MemoryTables()
    for sid, tz in ZONES.items():
        tables.supporters[sid] = {"id": sid, "timezone": tz}
    for r in _rows(now):
        tables.deliveries[("bd-1", r["channel"], r["supporter_id"])] = Row(
            blast_id="bd-1",
            channel=r["channel"],
            supporter_id=r["supporter_id"],
            destination=f"d{r['supporter_id']}",
            state=r["state"],
            created_at=now,
            updated_at=now,
            error_code=r.get("error_code"),
            deferred_until=r.get("deferred_until"),
        )
    _check(MemoryBreakdown(tables), now)


def test_breakdown_sql(engine: Engine) -> None:
    now = datetime(2026, 11, 3, 1, 0, tzinfo=UTC)
    from messaging.store import open_stores

    open_stores(engine).blasts.create(Alert(alert_id="bd-1", sms=SmsContent(body="Hi")), "n", None)
    with engine.begin() as conn:
        for sid, tz in ZONES.items():
            conn.execute(
                insert(supporters).values(
                    id=sid, external_id=f"e{sid}", timezone=tz, created_at=now, updated_at=now
                )
            )
        for r in _rows(now):
            conn.execute(
                insert(deliveries).values(
                    blast_id="bd-1",
                    destination=f"d{r['supporter_id']}",
                    created_at=now,
                    updated_at=now,
                    **r,
                )
            )
    _check(SqlBreakdown(engine), now)


def test_rates_and_etas_only_while_sending() -> None:
    from workers.web.dashboard.live import RateBook, decorate

    t = [0.0]
    rates = RateBook(clock=lambda: t[0])
    counts = {"targeted": 100, "pending": 60, "deferred": 0, "sent": 40}
    summary = {
        "blast_id": "b",
        "status": "sending",
        "created_at": "2026-12-03T10:00:00+00:00",
        "ended_at": None,
        "counts": {"sms": counts},
    }
    now = datetime(2026, 12, 3, 10, 0, 10, tzinfo=UTC)
    decorate(summary, rates, now)
    t[0] = 2.0
    moving = decorate(
        {**summary, "counts": {"sms": {**counts, "sent": 60, "pending": 40}}}, rates, now
    )
    # Given 20 sent in 2 s, then 10/s now, 6/s on average over 10 s, 4 s to go
    assert moving["progress"]["sms"]["rate_per_s"] == 10.0
    assert moving["progress"]["sms"]["avg_rate_per_s"] == 6.0
    assert moving["progress"]["sms"]["eta_s"] == 4.0
    assert moving["progress"]["sms"]["done"] == 60
    # When it is paused, then no rate and no ETA are claimed
    t[0] = 3.0
    paused = decorate({**summary, "status": "paused"}, rates, now)
    assert paused["progress"]["sms"]["rate_per_s"] == 0.0
    assert paused["progress"]["sms"]["eta_s"] is None


def test_a_blast_with_variants_shows_counts_per_variant(web: Web, tokens: dict[Role, str]) -> None:
    from messaging.content.alert import parse_alert

    alert = parse_alert(
        json.dumps(
            {
                "alert_id": "ab-1",
                "variants": [{"sms": {"body": "Hi A"}}, {"sms": {"body": "Hi B"}}],
            }
        ),
        fallback_id="ab-1",
        topic="news",
    )
    web.app.blasts.create(alert, "news", None)
    client = web.make_client()
    login(client, tokens[Role.VIEWER])
    page = client.get("/dashboard/blasts/ab-1").text
    assert "Counts by variant" in page
    assert re.search(r'<th scope="row">A</th><td>sms</td>', page)
    assert re.search(r'<th scope="row">B</th><td>sms</td>', page)
