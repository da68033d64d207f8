"""What the HTTP tests share: a real ``rapid web`` on loopback, and webhooks signed the way the
providers sign them (Twilio's ``RequestValidator`` over the public URL; SendGrid's ECDSA P-256
over ``timestamp + body``, with a key pair made here)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import EllipsisType
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from twilio.request_validator import RequestValidator

from config.settings import Settings
from emulators.server import RunningServer, start_in_thread
from tests.conftest import REDIS_TEST_URL
from workers.app import App


def service_settings(
    pg_url: str, prefix: str, moto_url: str | None = None, **fields: Any
) -> Settings:
    """Settings of an app on this test's PostgreSQL, Redis and (given) moto, plus ``fields``."""
    return Settings(
        prefix=prefix,
        database_url=pg_url,
        redis_url=REDIS_TEST_URL,
        aws_endpoint_url=moto_url,
        **fields,
    )


def sendgrid_key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key and its public half as SendGrid shows it: base64 of the DER SPKI."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


#: The key the tests' SendGrid signs with; configure ``SG_PUBLIC`` as the app's public key.
SG_PRIVATE, SG_PUBLIC = sendgrid_key_pair()


def sendgrid_headers(
    body: bytes, key: ec.EllipticCurvePrivateKey = SG_PRIVATE, timestamp: str | None = None
) -> dict[str, str]:
    """SendGrid's signature headers for ``body`` (signed now unless ``timestamp`` says)."""
    ts = timestamp or str(int(time.time()))
    signature = key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        "Content-Type": "application/json",
    }


def queue_on_topic(app: App, topic: str, queue_name: str) -> str:
    """Provision alert topic ``topic`` and subscribe a new queue to it; the queue's URL.

    The test reads what the API published there, raw (no SNS envelope).
    """
    from messaging.store.sql.topics import SqlTopicStore

    arn = app.sns.create_topic(Name=app.names.alert_topic(topic))["TopicArn"]
    SqlTopicStore(app.engine).register(topic, arn)
    queue_url: str = app.sqs.create_queue(QueueName=f"{app.names.prefix}-{queue_name}")["QueueUrl"]
    queue_arn = app.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    app.sns.subscribe(
        TopicArn=arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return queue_url


@dataclass
class Web:
    """A running ``rapid web`` and a client for it."""

    app: App
    server: RunningServer
    http: httpx.Client

    def api(
        self, method: str, path: str, token: str | EllipsisType | None = ..., **kw: Any
    ) -> httpx.Response:
        """Call the API with ``token`` (by default the app's ``RAPID_API_TOKEN``; None: none)."""
        bearer = self.app.settings.api_token if token is ... else token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return self.http.request(method, path, headers=headers, **kw)

    def twilio(
        self, path: str, params: dict[str, str], *, token: str | None = None, url: str = ""
    ) -> httpx.Response:
        """POST a form signed like Twilio does (the app's token, for its public URL, unless
        ``token`` or ``url`` say)."""
        settings = self.app.settings
        signature = RequestValidator(token or settings.twilio_auth_token).compute_signature(
            url or f"{settings.public_base_url}{path}", params
        )
        return self.http.post(
            path,
            content=urlencode(params),
            headers={
                "X-Twilio-Signature": signature,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )

    def sendgrid(self, events: Any, **sign: Any) -> httpx.Response:
        """POST a signed SendGrid event batch (``sign``: :func:`sendgrid_headers`' options)."""
        body = json.dumps(events).encode()
        return self.http.post(
            "/webhooks/sendgrid/events", content=body, headers=sendgrid_headers(body, **sign)
        )


@contextmanager
def web_servers(settings: Settings) -> Iterator[Callable[..., Web]]:
    """``make(port=0, **overrides)`` starts a ``rapid web`` with ``settings`` (overridden);
    all are stopped, and their Redis keys deleted, at the end."""
    started: list[Web] = []

    def make(port: int = 0, **overrides: Any) -> Web:
        app = App(settings.with_overrides(**overrides))
        from workers.web.app import create_app

        server = start_in_thread(create_app(app), port=port)
        web = Web(app, server, httpx.Client(base_url=server.url, trust_env=False, timeout=30))
        started.append(web)
        return web

    try:
        yield make
    finally:
        for web in started:
            web.http.close()
            web.server.stop()
            # Only a Redis this test reached, and only the test's own prefix.
            if "redis" in web.app.__dict__ and web.app.settings.redis_url == REDIS_TEST_URL:
                keys = list(web.app.redis.scan_iter(f"{web.app.settings.prefix}*"))
                if keys:
                    web.app.redis.delete(*keys)
            web.app.close()


def make_web_fixture(**fields: Any) -> Any:
    """A test module's ``make_web`` fixture: :func:`web_servers` on :func:`service_settings`
    with ``fields`` (the module's secrets). Use as ``make_web = make_web_fixture(...)``."""

    @pytest.fixture
    def make_web(pg_url: str, moto_url: str, prefix: str) -> Iterator[Callable[..., Web]]:
        with web_servers(service_settings(pg_url, prefix, moto_url, **fields)) as make:
            yield make

    return make_web
