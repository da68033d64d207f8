"""A local SendGrid v3 Mail Send API that speaks the real wire format.

``POST /v3/mail/send`` takes the same JSON body and bearer key as SendGrid, validates the
essentials the way SendGrid does (answering 400 with SendGrid's ``{"errors": [...]}``), and
answers 202 with an empty body and an ``X-Message-Id`` header. ``GET /v3/scopes`` lists the
key's permissions (what ``rapid doctor`` reads to check a key). Each recipient of an accepted
request becomes one recorded message, with the subject and content as that recipient would
see them (legacy ``substitutions`` applied).
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
import json
import re
import secrets
import time
import zlib
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulators.control import Reply, arrived_at, control_routes, json_reply, provider_call
from emulators.faults import Fault, FaultConfig, Faults
from emulators.recorder import Recorder

#: Most personalizations, and most recipients (to + cc + bcc), in one request.
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
#: SendGrid refuses request bodies above 30 MB.
MAX_BODY_BYTES = 30 * 1024 * 1024
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.{}"
# Deliberately loose, like SendGrid's own first check: one @, no spaces, a dot in the domain.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

UNAUTHORIZED = "The provided authorization grant is invalid, expired, or revoked"
#: SendGrid's messages for statuses set through ``email_errors`` (400 names the address).
STATUS_MESSAGES: dict[int, str] = {
    400: "Does not contain a valid address.",
    403: "access forbidden",
    413: "content too large",
    429: "too many requests",
    500: "internal server error",
    503: "service unavailable",
}

Error = tuple[str, str | None, str | None]  # message, field, help
#: What ``GET /v3/scopes`` says the emulator's key may do.
SCOPES = ("mail.send", "scopes.read")


def errors_reply(
    status: int, errors: list[Error], headers: Mapping[str, str] | None = None
) -> Reply:
    """SendGrid's error JSON."""
    payload = {"errors": [{"message": m, "field": f, "help": h} for m, f, h in errors]}
    return json_reply(status, payload, headers)


def fault_reply(fault: Fault, config: FaultConfig) -> Reply:
    """SendGrid's answer to an injected fault."""
    if fault == "429":
        reset = int(time.time()) + config.retry_after_s
        headers = {
            "Retry-After": str(config.retry_after_s),
            "X-RateLimit-Limit": "600",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
        }
        return errors_reply(429, [(STATUS_MESSAGES[429], None, None)], headers)
    if fault == "500":
        return errors_reply(500, [(STATUS_MESSAGES[500], None, None)])
    return errors_reply(503, [(STATUS_MESSAGES[503], None, None)])  # after the hold


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _type_error(field: str, expected: str, value: Any) -> Error:
    return (f"Invalid type. Expected: {expected}, given: {_type_name(value)}.", field, None)


def _string_map_errors(field: str, value: Any) -> list[Error]:
    """``custom_args``, ``headers``, ``substitutions``: objects of strings."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return [_type_error(field, "object", value)]
    return [
        _type_error(f"{field}.{key}", "string", item)
        for key, item in value.items()
        if not isinstance(item, str)
    ]


def _address_errors(field: str, value: Any, what: str) -> list[Error]:
    if not isinstance(value, dict) or not isinstance(value.get("email"), str):
        return [
            (
                f"The {what} object must be provided for every email send. It is an object that "
                "requires the email parameter, but may also contain a name parameter.",
                field,
                _HELP.format("from"),
            )
        ]
    if not _EMAIL.match(value["email"]):
        return [(f"The {what} email does not contain a valid address.", f"{field}.email", None)]
    return []


def validate(mail: Any) -> list[Error]:
    """The errors SendGrid would report for this request body, all of them, in its order."""
    if not isinstance(mail, dict):
        return [_type_error("", "object", mail)]
    errors: list[Error] = []
    personalizations = mail.get("personalizations")
    if personalizations is None or personalizations == []:
        errors.append(
            (
                "The personalizations field is required and must have at least one "
                "personalization.",
                "personalizations",
                _HELP.format("personalizations"),
            )
        )
        personalizations = []
    elif not isinstance(personalizations, list):
        errors.append(_type_error("personalizations", "array", personalizations))
        personalizations = []
    elif len(personalizations) > MAX_PERSONALIZATIONS:
        errors.append(
            (
                f"The personalization block is limited to {MAX_PERSONALIZATIONS} personalizations "
                f"per API request. You have provided {len(personalizations)} personalizations. "
                "Please consider splitting this into multiple requests and resending your request.",
                "personalizations",
                _HELP.format("personalizations"),
            )
        )
    recipients = 0
    for i, p in enumerate(personalizations):
        field = f"personalizations.{i}"
        if not isinstance(p, dict):
            errors.append(_type_error(field, "object", p))
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.append(
                (
                    "The to array is required for all personalization objects, and must have at "
                    "least one email object with a valid email address.",
                    f"{field}.to",
                    _HELP.format("personalizations.to"),
                )
            )
        seen: set[str] = set()
        for kind in ("to", "cc", "bcc"):
            entries = p.get(kind)
            if entries is None or (kind == "to" and not isinstance(entries, list)):
                continue
            if not isinstance(entries, list):
                errors.append(_type_error(f"{field}.{kind}", "array", entries))
                continue
            for j, entry in enumerate(entries):
                email = entry.get("email") if isinstance(entry, dict) else None
                if not isinstance(email, str) or not _EMAIL.match(email):
                    errors.append(
                        ("Does not contain a valid address.", f"{field}.{kind}.{j}.email", None)
                    )
                    continue
                recipients += 1
                if email.lower() in seen:
                    errors.append(
                        (
                            "Each email address in the personalization block should be unique "
                            "between to, cc, and bcc. We found the first duplicate instance of "
                            f"[{email}] in the {field}.{kind} field.",
                            field,
                            _HELP.format("personalizations"),
                        )
                    )
                seen.add(email.lower())
        if "from" in p:
            errors.extend(_address_errors(f"{field}.from", p["from"], "from"))
        for name in ("custom_args", "headers", "substitutions"):
            errors.extend(_string_map_errors(f"{field}.{name}", p.get(name)))
    if recipients > MAX_RECIPIENTS:
        errors.append(
            (
                f"There is a limit of {MAX_RECIPIENTS} total recipients (to + cc + bcc) per "
                "request.",
                "personalizations",
                _HELP.format("personalizations"),
            )
        )

    errors.extend(_address_errors("from", mail.get("from"), "from"))

    template_id = mail.get("template_id")
    has_subject = isinstance(mail.get("subject"), str) and bool(mail["subject"])
    every_personalization_has_subject = bool(personalizations) and all(
        isinstance(p, dict) and isinstance(p.get("subject"), str) and p["subject"]
        for p in personalizations
    )
    if not template_id and not has_subject and not every_personalization_has_subject:
        errors.append(
            (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined.",
                "subject",
                _HELP.format("subject"),
            )
        )

    content = mail.get("content")
    if content is not None and not isinstance(content, list):
        errors.append(_type_error("content", "array", content))
    elif not content and not template_id:
        errors.append(
            (
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block. We typically suggest both "
                "text/plain and text/html blocks are included, but only one block is required.",
                "content",
                _HELP.format("contents"),
            )
        )
    else:
        for k, block in enumerate(content or []):
            if not isinstance(block, dict):
                errors.append(_type_error(f"content.{k}", "object", block))
                continue
            if not isinstance(block.get("type"), str) or not block["type"]:
                errors.append(
                    (
                        "The content type must be a string at least one character in length.",
                        f"content.{k}.type",
                        _HELP.format("contents.type"),
                    )
                )
            elif block["type"] == "text/plain" and k != 0:
                errors.append(
                    (
                        "If present, text/plain must be first, followed by text/html, followed "
                        "by any other content.",
                        f"content.{k}.type",
                        _HELP.format("contents.type"),
                    )
                )
            if not isinstance(block.get("value"), str) or not block["value"]:
                errors.append(
                    (
                        "The content value must be a string at least one character in length.",
                        f"content.{k}.value",
                        _HELP.format("contents.value"),
                    )
                )

    for name in ("custom_args", "headers"):
        errors.extend(_string_map_errors(name, mail.get(name)))
    return errors


def _substitute(text: str, substitutions: Mapping[str, str]) -> str:
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def expand(mail: dict[str, Any], message_id: str, received_at: float) -> list[dict[str, Any]]:
    """One record per recipient of a valid request, as that recipient's message would be."""
    records: list[dict[str, Any]] = []
    sender = mail["from"]
    content = mail.get("content") or []
    for index, p in enumerate(mail["personalizations"]):
        subs: Mapping[str, str] = p.get("substitutions") or {}
        subject = p.get("subject") or mail.get("subject")
        rendered = {block["type"]: _substitute(block["value"], subs) for block in content}
        headers = {**(mail.get("headers") or {}), **(p.get("headers") or {})}
        custom_args = {**(mail.get("custom_args") or {}), **(p.get("custom_args") or {})}
        p_sender = p.get("from") or sender
        for kind in ("to", "cc", "bcc"):
            for entry in p.get(kind) or []:
                records.append(
                    {
                        "provider": "sendgrid",
                        "x_message_id": message_id,
                        "personalization_index": index,
                        "recipient_type": kind,
                        "to": entry["email"],
                        "to_name": entry.get("name"),
                        "from": p_sender["email"],
                        "from_name": p_sender.get("name"),
                        "reply_to": (mail.get("reply_to") or {}).get("email"),
                        "subject": _substitute(subject, subs) if subject else subject,
                        "content": rendered,
                        "headers": headers,
                        "custom_args": custom_args,
                        "categories": mail.get("categories") or [],
                        "template_id": mail.get("template_id"),
                        "dynamic_template_data": p.get("dynamic_template_data"),
                        "send_at": p.get("send_at", mail.get("send_at")),
                        "asm": mail.get("asm"),
                        "received_at": received_at,
                    }
                )
    return records


class SendGridEmulator:
    """State and handlers of one emulated SendGrid account (see :func:`create_sendgrid_app`)."""

    def __init__(self, recorder: Recorder, faults: Faults, *, api_key: str | None = None) -> None:
        self.recorder = recorder
        self.faults = faults
        self.api_key = api_key

    async def send_endpoint(self, request: Request) -> Response:
        """``POST /v3/mail/send``."""
        return await provider_call(
            request,
            provider="sendgrid",
            recorder=self.recorder,
            faults=self.faults,
            authenticate=self.authenticate,
            fault_reply=fault_reply,
            handle=self.send,
        )

    def authenticate(self, request: Request) -> Reply | None:
        """``Authorization: Bearer <key>``; any non-empty key when none is configured."""
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if (
            scheme.lower() == "bearer"
            and key
            and (self.api_key is None or hmac.compare_digest(key.encode(), self.api_key.encode()))
        ):
            config = self.faults.config
            if not config.reject_credentials:
                return None
            if config.reject_status == 403:  # a key without the scope, a suspended account
                return errors_reply(403, [(STATUS_MESSAGES[403], None, None)])
        return errors_reply(401, [(UNAUTHORIZED, None, None)])

    async def scopes_endpoint(self, request: Request) -> Response:
        """``GET /v3/scopes``: the key's permissions (a cheap authenticated read)."""
        return await provider_call(
            request,
            provider="sendgrid",
            recorder=self.recorder,
            faults=self.faults,
            authenticate=self.authenticate,
            fault_reply=fault_reply,
            handle=lambda _request, _body: json_reply(200, {"scopes": list(SCOPES)}),
        )

    def send(self, request: Request, body: bytes) -> Reply:
        """Validate like SendGrid, record one message per recipient, answer 202."""
        if len(body) > MAX_BODY_BYTES:
            return errors_reply(413, [(STATUS_MESSAGES[413], None, None)])
        if request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error):
                return errors_reply(
                    400, [("The request body could not be decompressed.", None, None)]
                )
        try:
            mail = json.loads(body)
        except ValueError:
            return errors_reply(400, [("Bad Request", None, None)])
        errors = validate(mail)
        if errors:
            return errors_reply(400, errors)
        failure = self._email_error(mail)
        if failure is not None:
            return failure
        message_id = secrets.token_urlsafe(16)  # 16 bytes: 22 URL-safe characters, like SendGrid
        self.recorder.add_messages(expand(mail, message_id, arrived_at(request)))
        return Reply(202, b"", {"X-Message-Id": message_id}, media_type=None)

    def _email_error(self, mail: dict[str, Any]) -> Reply | None:
        email_errors = self.faults.config.email_errors
        if not email_errors:
            return None
        for i, p in enumerate(mail["personalizations"]):
            for kind in ("to", "cc", "bcc"):
                for j, entry in enumerate(p.get(kind) or []):
                    status = email_errors.get(entry["email"].lower())
                    if status is not None:
                        message = STATUS_MESSAGES.get(status, f"error {status}")
                        field = f"personalizations.{i}.{kind}.{j}.email" if status == 400 else None
                        return errors_reply(status, [(message, field, None)])
        return None


def create_sendgrid_app(
    recorder: Recorder, faults: Faults, *, api_key: str | None = None
) -> Starlette:
    """Build the SendGrid emulator's ASGI app.

    ``api_key``: the key clients must present as ``Authorization: Bearer …`` (``None``: any).
    ``app.state.emulator`` is the :class:`SendGridEmulator`.
    """
    emulator = SendGridEmulator(recorder, faults, api_key=api_key)
    routes = [
        Route("/v3/mail/send", emulator.send_endpoint, methods=["POST"]),
        Route("/v3/scopes", emulator.scopes_endpoint, methods=["GET"]),
        *control_routes(recorder, faults),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return errors_reply(404, [("not found", None, None)]).to_response()

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return errors_reply(405, [("method not allowed", None, None)]).to_response()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    app.state.emulator = emulator
    # Set by the server when it stops, so requests held by the timeout fault let go.
    app.state.stopping = asyncio.Event()
    app.state.on_stop = []
    return app
