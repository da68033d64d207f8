"""boto3 clients for SNS and SQS, built from the settings (never at import)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from config.settings import Settings

#: Long polls hold a connection for up to 20 s; the read timeout must outlast them.
_CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 5, "mode": "adaptive"},
    max_pool_connections=20,
)


def make_session(settings: Settings) -> boto3.Session:
    """A boto3 session for the configured region.

    Against a local emulator (``AWS_ENDPOINT_URL`` set) with no credentials configured,
    placeholder credentials are used: emulators accept any, and requiring real keys to talk
    to moto on loopback would only get real keys pasted into demo shells.
    """
    session = boto3.Session(region_name=settings.aws_region)
    if _is_loopback(settings.aws_endpoint_url):
        # A local emulator: no instance role to find, so do not wait on the EC2 metadata
        # service (seconds of timeouts on a laptop or a CI box) while looking for one.
        session._session.set_config_variable("ec2_metadata_disabled", "true")
    if settings.aws_endpoint_url and session.get_credentials() is None:
        session = boto3.Session(
            region_name=settings.aws_region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - emulator placeholder, not a secret
        )
    return session


def _is_loopback(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    return host in ("127.0.0.1", "localhost", "::1")


def make_cloudwatch(settings: Settings) -> Any:
    """A CloudWatch client (backlog metrics) honouring ``AWS_ENDPOINT_URL``."""
    kwargs: dict[str, Any] = {"config": _CLIENT_CONFIG}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return make_session(settings).client("cloudwatch", **kwargs)


def make_clients(settings: Settings) -> tuple[Any, Any]:
    """``(sns, sqs)`` clients honouring ``AWS_ENDPOINT_URL``."""
    session = make_session(settings)
    kwargs: dict[str, Any] = {"config": _CLIENT_CONFIG}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return session.client("sns", **kwargs), session.client("sqs", **kwargs)
