"""Validate requests recorded by the emulators against the vendors' OpenAPI files.

The emulators serve the providers' real paths, so a recorded request is replayed onto the
spec's own server (``https://api.twilio.com``, ``https://api.sendgrid.com``) and checked by
openapi-core: path, method, security (Basic / Bearer), content type and body schema.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from emulators.recorder import RecordedRequest

SPECS_DIR = Path(__file__).parent / "specs"
#: The vendor's spec file and server URL, per provider.
SPEC_FILES = {"twilio": "twilio_api_v2010.json", "sendgrid": "tsg_mail_v3.json"}
SERVERS = {"twilio": "https://api.twilio.com", "sendgrid": "https://api.sendgrid.com"}


def load_spec(provider: str) -> dict[str, Any]:
    """The provider's spec as a dict, with the known vendor bugs patched in memory."""
    spec: dict[str, Any] = json.loads((SPECS_DIR / SPEC_FILES[provider]).read_text("utf-8"))
    if provider == "sendgrid":
        body = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
        custom_args = body["schema"]["properties"]["custom_args"]
        # The vendor file types message-level custom_args as a string, but the API takes (and
        # the official client sends) an object of strings, like the personalization-level
        # one. Patched here rather than in the file, which stays byte-identical to upstream.
        custom_args["type"] = "object"
        custom_args["additionalProperties"] = {"type": "string"}
    return spec


@functools.cache
def openapi(provider: str) -> OpenAPI:
    """openapi-core's view of the provider's spec, built once per test session."""
    # spec_validator_cls=None: checking the vendor's 1.8 MB document itself against the
    # OpenAPI meta-schema takes seconds and is the vendor's job; we validate requests only.
    return OpenAPI.from_dict(load_spec(provider), config=Config(spec_validator_cls=None))


class RawRequest:
    """openapi-core's ``Request`` protocol over raw parts: host, method, path, headers, body."""

    def __init__(
        self,
        host_url: str,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...],
        body: bytes,
        query: str = "",
    ) -> None:
        self.host_url = host_url
        self.method = method.lower()
        self.path = path
        self.body: bytes | None = body
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(query, keep_blank_values=True)),
            header=Headers(list(headers)),
            cookie=ImmutableMultiDict(),
        )

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` with its parameters, lower-cased, as openapi-core expects."""
        return str(self.parameters.header.get("Content-Type", "")).lower()


def as_spec_request(recorded: RecordedRequest) -> RawRequest:
    """The recorded request as if it had been sent to the provider's real server."""
    return RawRequest(
        SERVERS[recorded.provider],
        recorded.method,
        recorded.path,
        recorded.headers,
        recorded.body,
        recorded.query,
    )


def _describe(error: Exception) -> str:
    cause = error.__cause__
    details = [str(e.message) for e in getattr(cause, "schema_errors", ())]
    if not details and cause is not None:
        details = [repr(cause)]
    return f"{type(error).__name__}: {error} {'; '.join(details)}".strip()


def request_errors(recorded: RecordedRequest) -> list[str]:
    """Every way the recorded request breaks the provider's spec; empty when it conforms."""
    api = openapi(recorded.provider)
    return [_describe(error) for error in api.iter_request_errors(as_spec_request(recorded))]


def assert_conforms(recorded: RecordedRequest) -> None:
    """Fail with the spec violations when the recorded request does not conform."""
    errors = request_errors(recorded)
    assert not errors, f"{recorded.method} {recorded.path} breaks the spec: {errors}"
