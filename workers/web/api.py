"""The HTTP API (contract §7): publish alerts, read and steer blasts, with a bearer token.

Everything the CLI's ``rapid alert send`` and ``rapid blast …`` do, for systems that speak
HTTP rather than SNS. Every route takes a bearer operator token (or the bootstrap
``RAPID_API_TOKEN``) and checks the operator's role (:data:`ROUTE_PERMISSIONS`); every change
is appended to the audit log with the operator's name and source ``api``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from messaging.alert import ALERT_ID_PATTERN, new_alert_id, parse_alert
from messaging.audit import Actor, AuditAction, Source, parse_since
from messaging.compliance.replies import VERDICTS, reply_document
from messaging.errors import InputError
from messaging.lifecycle import BLAST_STATUSES, COUNT_KEYS
from messaging.operators import Operator, Permission
from messaging.services import act_on_blast
from messaging.suppression import classify
from messaging.topics import validate_topic_name
from workers.app import App
from workers.web.security import API_MAX_BODY, Denied, OperatorAuth, read_body

log = structlog.get_logger(__name__)

#: Blast actions the API exposes: the first three are methods of
#: :class:`~messaging.blast_control.BlastActions`, the last two of
#: :class:`~messaging.approval.Approvals`.
BLAST_ACTIONS: Final = ("cancel", "pause", "resume", "approve", "reject")
#: What each route requires (contract §11); the roles matrix test walks this table.
ROUTE_PERMISSIONS: Final[dict[tuple[str, str], Permission]] = {
    ("POST", "/api/alerts"): Permission.SEND,
    ("GET", "/api/blasts"): Permission.READ,
    ("GET", "/api/blasts/{blast_id}"): Permission.READ,
    ("GET", "/api/blasts/{blast_id}/export"): Permission.READ,
    ("GET", "/api/audit"): Permission.READ,
    ("GET", "/api/replies"): Permission.READ,
    # Reviewing may lift a suppression the reply caused: an approver's call.
    ("POST", "/api/replies/{reply_id}/review"): Permission.APPROVE,
    **{("POST", f"/api/blasts/{{blast_id}}/{a}"): Permission(a) for a in BLAST_ACTIONS},
}
#: Most blasts ``GET /api/blasts`` returns at once.
MAX_LIST_LIMIT: Final = 200
#: Most replies ``GET /api/replies`` returns at once.
MAX_REPLIES_LIMIT: Final = 1000
#: Most entries ``GET /api/audit`` returns at once.
MAX_AUDIT_LIMIT: Final = 1000


def _in_range(raw: str, maximum: int) -> bool:
    """True for ASCII digits from 1 to ``maximum`` (``str.isdigit`` accepts "²", which int()
    refuses: that was a 500)."""
    return _LIMIT_RE.fullmatch(raw) is not None and 1 <= int(raw) <= maximum


#: A query-string count: a few ASCII digits, nothing else.
_LIMIT_RE: Final = re.compile(r"[0-9]{1,6}")
#: A blast id in a path (contract §4's alert id).
_ALERT_ID_RE: Final = re.compile(ALERT_ID_PATTERN.strip("^$"))
#: A reply id in a path: a positive BIGINT.
_REPLY_ID_RE: Final = re.compile(r"[1-9][0-9]{0,17}")


def _alert_from_body(body: bytes, requested_by: str) -> tuple[str, dict[str, Any]]:
    """Parse and validate an alert body; run off the event loop.

    Validation compiles and trial-renders templates (bounded, but milliseconds): on the loop, a
    hostile alert would stall /healthz and every STOP webhook meanwhile.
    """
    try:
        data = json.loads(body)
    except RecursionError:  # [[[[…]]]] thousands deep
        raise InputError("alert is not valid JSON: nested too deeply") from None
    return alert_document(data, requested_by=requested_by)


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def alert_document(data: Any, *, requested_by: str) -> tuple[str, dict[str, Any]]:
    """Validate a ``POST /api/alerts`` body; returns (topic, the document to publish).

    The body is the alert of contract §4 plus ``"topic"``. The requester is the calling
    operator, whatever the body says. Raises :class:`InputError` with every problem in one
    line, exactly as the CLI would.
    """
    if not isinstance(data, dict):
        raise InputError('the body must be a JSON object: an alert plus "topic"')
    topic = data.get("topic")
    if not isinstance(topic, str):
        raise InputError("topic: required, the alert topic to publish to")
    validate_topic_name(topic)
    document = dict(data)
    document["requested_by"] = requested_by
    document["requested_via"] = Source.API.value
    if not document.get("alert_id"):
        document["alert_id"] = new_alert_id(topic)
    recipients = document.get("test_recipients")
    if isinstance(recipients, list) and all(isinstance(v, str) for v in recipients):
        # Stored normalised, as `rapid alert send --test-recipient` does, so they match
        # supporters' E.164 phones and lower-cased emails.
        document["test_recipients"] = [classify(v)[1] for v in recipients]
    parse_alert(json.dumps(document), fallback_id=document["alert_id"], topic=topic)
    return topic, document


class Api:
    """``/api/…`` routes."""

    def __init__(self, app: App, auth: OperatorAuth) -> None:
        self._app = app
        self._auth = auth

    def routes(self) -> list[Route]:
        """Every API route."""
        return [
            Route("/api/openapi.json", self.openapi, methods=["GET"]),
            Route("/api/alerts", self.create_alert, methods=["POST"]),
            Route("/api/blasts", self.list_blasts, methods=["GET"]),
            Route("/api/blasts/{blast_id}", self.get_blast, methods=["GET"]),
            Route("/api/blasts/{blast_id}/export", self.export_blast, methods=["GET"]),
            Route("/api/blasts/{blast_id}/{action}", self.blast_action, methods=["POST"]),
            Route("/api/audit", self.list_audit, methods=["GET"]),
            Route("/api/replies", self.list_replies, methods=["GET"]),
            Route("/api/replies/{reply_id}/review", self.review_reply, methods=["POST"]),
        ]

    async def _authorize(self, request: Request, permission: Permission) -> Operator | Response:
        """The calling operator, or the refusal to answer with (401, 403 or 429)."""
        found = await run_in_threadpool(self._auth.authorize, request, permission)
        if isinstance(found, Denied):
            return _error(found.status, found.message, **found.headers)
        return found

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI 3.1 description of this API (public: it holds no secrets)."""
        return JSONResponse(openapi_document())

    async def create_alert(self, request: Request) -> Response:
        """Validate an alert and publish it to its topic's SNS topic; 202 with the blast id."""
        who = await self._authorize(request, Permission.SEND)
        if isinstance(who, Response):
            return who
        body = await read_body(request, API_MAX_BODY)
        try:
            topic, document = await run_in_threadpool(_alert_from_body, body, who.name)
        except ValueError as exc:  # not JSON at all
            return _error(422, f"alert is not valid JSON: {exc}")
        except InputError as exc:
            return _error(422, str(exc))
        from botocore.exceptions import BotoCoreError, ClientError

        from messaging.services import publish_alert

        try:
            message_id = await run_in_threadpool(
                publish_alert, self._app.stores.topics, self._app.publisher, topic, document
            )
        except InputError as exc:  # the topic is not provisioned
            return _error(422, str(exc))
        except (BotoCoreError, ClientError) as exc:
            log.error("api.publish_failed", topic=topic, error_type=type(exc).__name__)
            return _error(503, "SNS did not accept the alert; try again")
        log.info("api.alert_published", topic=topic, blast_id=document["alert_id"])
        return JSONResponse(
            {"blast_id": document["alert_id"], "sns_message_id": message_id}, status_code=202
        )

    async def list_blasts(self, request: Request) -> Response:
        """Recent blasts, newest first (``?limit=``, default 20)."""
        if isinstance(who := await self._authorize(request, Permission.READ), Response):
            return who
        raw = request.query_params.get("limit", "20")
        if not _in_range(raw, MAX_LIST_LIMIT):
            return _error(422, f"limit: a whole number from 1 to {MAX_LIST_LIMIT}")
        blasts = self._app.blasts

        def load() -> list[dict[str, Any]]:
            return blasts.summaries(blasts.recent(int(raw)), self._app.control.progress.read)

        return JSONResponse(await run_in_threadpool(load))

    def _summary(self, blast_id: str) -> dict[str, Any] | None:
        record = self._app.blasts.get(blast_id)
        if record is None:
            return None
        return self._app.blasts.summaries([record], self._app.control.progress.read)[0]

    def _act(self, action: str, blast_id: str, actor: Actor) -> None:
        app = self._app
        act_on_blast(
            action,
            blast_id,
            actor,
            actions=app.actions,
            approvals=app.approvals,
            audit=app.audit,
        )

    async def list_audit(self, request: Request) -> Response:
        """Audit entries, newest first (``?since=`` ISO 8601, ``?limit=``, default 100)."""
        if isinstance(who := await self._authorize(request, Permission.READ), Response):
            return who
        raw = request.query_params.get("limit", "100")
        if not _in_range(raw, MAX_AUDIT_LIMIT):
            return _error(422, f"limit: a whole number from 1 to {MAX_AUDIT_LIMIT}")
        try:
            since = parse_since(request.query_params.get("since"))
        except InputError as exc:
            return _error(422, str(exc))
        entries = await run_in_threadpool(self._app.audit.entries, since=since, limit=int(raw))
        return JSONResponse([e.to_dict() for e in entries])

    async def list_replies(self, request: Request) -> Response:
        """Inbound SMS, newest first (``?needs_review=true``, ``?limit=``, default 100)."""
        if isinstance(who := await self._authorize(request, Permission.READ), Response):
            return who
        raw = request.query_params.get("limit", "100")
        if not _in_range(raw, MAX_REPLIES_LIMIT):
            return _error(422, f"limit: a whole number from 1 to {MAX_REPLIES_LIMIT}")
        flag = request.query_params.get("needs_review", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            return _error(422, "needs_review: true or false")
        found = await run_in_threadpool(
            self._app.replies.replies, needs_review=flag in ("true", "1"), limit=int(raw)
        )
        return JSONResponse([reply_document(r) for r in found])

    async def review_reply(self, request: Request) -> Response:
        """Mark a reply reviewed: ``{"verdict": "opt_out" | "not_opt_out"}``."""
        if isinstance(who := await self._authorize(request, Permission.APPROVE), Response):
            return who
        raw_id = request.path_params["reply_id"]
        body = await read_body(request, API_MAX_BODY)
        try:
            data = json.loads(body or b"{}")
        except ValueError as exc:
            return _error(422, f"body is not valid JSON: {exc}")
        except RecursionError:
            return _error(422, "body is not valid JSON: nested too deeply")
        verdict = data.get("verdict") if isinstance(data, dict) else None
        if verdict not in VERDICTS:
            return _error(422, f"verdict: one of {', '.join(VERDICTS)}")
        if not _REPLY_ID_RE.fullmatch(raw_id):  # isdigit() took "²", which int() refuses
            return _error(404, f"no reply {raw_id!r}")
        try:
            done = await run_in_threadpool(self._app.replies.review, int(raw_id), verdict, who.name)
        except InputError as exc:
            return _error(404, str(exc))
        if done.lifted:
            await run_in_threadpool(
                self._app.audit.record,
                Actor(who.name, Source.API),
                AuditAction.OPTOUT_REMOVED,
                value=done.reply.from_number,
                detail=f"reply {raw_id} reviewed: {verdict}",
            )
        log.info("api.reply_reviewed", reply_id=raw_id, verdict=verdict, operator=who.name)
        return JSONResponse(reply_document(done.reply))

    async def get_blast(self, request: Request) -> Response:
        """The blast's state and counts, as ``rapid blast show --json`` prints them."""
        if isinstance(who := await self._authorize(request, Permission.READ), Response):
            return who
        blast_id = request.path_params["blast_id"]
        if not _ALERT_ID_RE.fullmatch(blast_id):  # never an id; NUL made the database fail
            return _error(404, f"no blast {blast_id!r}")
        summary = await run_in_threadpool(self._summary, blast_id)
        if summary is None:
            return _error(404, f"no blast {blast_id!r}")
        return JSONResponse(summary)

    async def export_blast(self, request: Request) -> Response:
        """One CSV row per recipient and channel (as ``rapid blast export``), streamed."""
        if isinstance(who := await self._authorize(request, Permission.READ), Response):
            return who
        blast_id = request.path_params["blast_id"]
        if not _ALERT_ID_RE.fullmatch(blast_id):
            return _error(404, f"no blast {blast_id!r}")
        if await run_in_threadpool(self._app.blasts.get, blast_id) is None:
            return _error(404, f"no blast {blast_id!r}")
        from messaging.export import csv_chunks

        log.info("api.blast_exported", blast_id=blast_id, operator=who.name)
        # A sync iterator: Starlette pulls each chunk in a worker thread (the rows come
        # from a server-side cursor), so the event loop never waits on the database.
        chunks = csv_chunks(self._app.stores.exports.export_rows(blast_id))
        return StreamingResponse(
            chunks,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{blast_id}.csv"'},
        )

    async def blast_action(self, request: Request) -> Response:
        """Cancel, pause, resume, approve or reject a blast fleet-wide; 409 if its status
        does not allow it (or the approver is the requester)."""
        blast_id, action = request.path_params["blast_id"], request.path_params["action"]
        if action not in BLAST_ACTIONS:
            return _error(404, f"no action {action!r}; use one of {', '.join(BLAST_ACTIONS)}")
        if isinstance(who := await self._authorize(request, Permission(action)), Response):
            return who
        valid_id = _ALERT_ID_RE.fullmatch(blast_id) is not None
        if not valid_id or await run_in_threadpool(self._app.blasts.get, blast_id) is None:
            return _error(404, f"no blast {blast_id!r}")
        actor = Actor(who.name, Source.API)
        try:
            await run_in_threadpool(self._act, action, blast_id, actor)
        except InputError as exc:
            return _error(409, str(exc))
        log.info("api.blast_action", blast_id=blast_id, action=action, operator=who.name)
        summary = await run_in_threadpool(self._summary, blast_id)
        return JSONResponse(summary)


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI description, written by hand (it is small and must stay exact)."""
    error = {"$ref": "#/components/schemas/Error"}
    blast = {"$ref": "#/components/schemas/Blast"}
    reply = {"$ref": "#/components/schemas/Reply"}

    def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        if schema is None:
            return {"description": description}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    auth_errors = {
        "401": answer("Missing or unknown bearer operator token.", error),
        "403": answer("The operator's role does not allow this route.", error),
        "429": answer("Too many failed bearer attempts from this address.", error),
    }
    blast_id = {"name": "blast_id", "in": "path", "required": True, "schema": {"type": "string"}}
    counts = {
        "type": "object",
        "properties": {k: {"type": "integer", "minimum": 0} for k in COUNT_KEYS},
    }
    action_paths: dict[str, Any] = {
        f"/api/blasts/{{blast_id}}/{action}": {
            "post": {
                "summary": f"{action.capitalize()} a blast fleet-wide (within a second).",
                "operationId": f"{action}Blast",
                "parameters": [blast_id],
                "responses": {
                    "200": answer("The blast after the action.", blast),
                    **auth_errors,
                    "404": answer("No such blast.", error),
                    "409": answer(
                        "The blast's status does not allow this action, or its requester "
                        "tried to approve it.",
                        error,
                    ),
                },
            }
        }
        for action in BLAST_ACTIONS
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rapid Response API",
            "version": "1",
            "description": "Publish alerts and steer blasts. Bearer: an operator token "
            "(`rapid operators add`) or RAPID_API_TOKEN; each route needs a role.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/alerts": {
                "post": {
                    "summary": "Publish an alert (contract §4) to an alert topic.",
                    "operationId": "createAlert",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Alert"}}
                        },
                    },
                    "responses": {
                        "202": answer(
                            "Published; the blast id is the alert id.",
                            {
                                "type": "object",
                                "required": ["blast_id", "sns_message_id"],
                                "properties": {
                                    "blast_id": {"type": "string"},
                                    "sns_message_id": {"type": "string"},
                                },
                            },
                        ),
                        **auth_errors,
                        "413": answer("Body too large."),
                        "422": answer("Invalid alert, or the topic is not provisioned.", error),
                        "503": answer("SNS did not accept the alert.", error),
                    },
                }
            },
            "/api/blasts": {
                "get": {
                    "summary": "Recent blasts, newest first.",
                    "operationId": "listBlasts",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                        }
                    ],
                    "responses": {
                        "200": answer("Blasts.", {"type": "array", "items": blast}),
                        **auth_errors,
                        "422": answer("Bad limit.", error),
                    },
                }
            },
            "/api/blasts/{blast_id}": {
                "get": {
                    "summary": "A blast's state and counts (as `rapid blast show --json`).",
                    "operationId": "getBlast",
                    "parameters": [blast_id],
                    "responses": {
                        "200": answer("The blast.", blast),
                        **auth_errors,
                        "404": answer("No such blast.", error),
                    },
                }
            },
            "/api/blasts/{blast_id}/export": {
                "get": {
                    "summary": "One CSV row per recipient and channel (`rapid blast export`).",
                    "operationId": "exportBlast",
                    "parameters": [blast_id],
                    "responses": {
                        "200": {
                            "description": "external_id, channel, destination, state, "
                            "error_code, sent_at, delivered_at, clicked_at, variant",
                            "content": {"text/csv": {"schema": {"type": "string"}}},
                        },
                        **auth_errors,
                        "404": answer("No such blast.", error),
                    },
                }
            },
            **action_paths,
            "/api/replies": {
                "get": {
                    "summary": "Inbound SMS, newest first (contract §12).",
                    "operationId": "listReplies",
                    "parameters": [
                        {"name": "needs_review", "in": "query", "schema": {"type": "boolean"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_REPLIES_LIMIT,
                            },
                        },
                    ],
                    "responses": {
                        "200": answer("Replies.", {"type": "array", "items": reply}),
                        **auth_errors,
                        "422": answer("Bad needs_review or limit.", error),
                    },
                }
            },
            "/api/replies/{reply_id}/review": {
                "post": {
                    "summary": "Mark a reply reviewed; not_opt_out lifts what it suppressed.",
                    "operationId": "reviewReply",
                    "parameters": [
                        {
                            "name": "reply_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["verdict"],
                                    "properties": {"verdict": {"enum": list(VERDICTS)}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": answer("The reviewed reply.", reply),
                        **auth_errors,
                        "404": answer("No such reply.", error),
                        "413": answer("Body too large."),
                        "422": answer("Bad verdict.", error),
                    },
                }
            },
            "/api/audit": {
                "get": {
                    "summary": "The audit log, newest first.",
                    "operationId": "listAudit",
                    "parameters": [
                        {"name": "since", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_LIMIT},
                        },
                    ],
                    "responses": {
                        "200": answer(
                            "Entries.",
                            {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                        ),
                        **auth_errors,
                        "422": answer("Bad since or limit.", error),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Reply": {
                    "type": "object",
                    "required": ["id", "received_at", "from", "body", "kind", "needs_review"],
                    "properties": {
                        "id": {"type": "integer"},
                        "received_at": {"type": "string", "format": "date-time"},
                        "from": {"type": "string"},
                        "to": {"type": ["string", "null"]},
                        "body": {"type": "string"},
                        "kind": {"enum": ["opt_out", "opt_in", "help", "needs_review", "other"]},
                        "reason": {"type": "string"},
                        "needs_review": {"type": "boolean"},
                        "supporter_id": {"type": ["integer", "null"]},
                        "blast_id": {"type": ["string", "null"]},
                        "review": {
                            "type": ["object", "null"],
                            "properties": {
                                "verdict": {"enum": list(VERDICTS)},
                                "by": {"type": "string"},
                                "at": {"type": "string", "format": "date-time"},
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Alert": {
                    "type": "object",
                    "required": ["topic"],
                    "properties": {
                        "topic": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"},
                        "alert_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                        "priority": {"enum": ["urgent", "normal", "bulk"]},
                        "sms": {
                            "type": "object",
                            "required": ["body"],
                            "properties": {"body": {"type": "string"}},
                        },
                        "email": {
                            "type": "object",
                            "required": ["subject"],
                            "properties": {
                                "subject": {"type": "string"},
                                "text": {"type": "string"},
                                "html": {"type": "string"},
                            },
                        },
                        "audience": {
                            "type": "object",
                            "properties": {
                                "postal_codes": {"type": "array", "items": {"type": "string"}},
                                "states": {"type": "array", "items": {"type": "string"}},
                                "tags": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "send_by": {"type": "string", "format": "date-time"},
                        "test_recipients": {"type": "array", "items": {"type": "string"}},
                        "dry_run": {"type": "boolean"},
                    },
                },
                "AuditEntry": {
                    "type": "object",
                    "required": ["id", "at", "actor", "source", "action"],
                    "properties": {
                        "id": {"type": "integer"},
                        "at": {"type": "string", "format": "date-time"},
                        "actor": {"type": "string"},
                        "source": {"enum": [s.value for s in Source]},
                        "action": {"type": "string"},
                        "blast_id": {"type": ["string", "null"]},
                        "value": {"type": ["string", "null"]},
                        "detail": {"type": ["string", "null"]},
                    },
                },
                "Blast": {
                    "type": "object",
                    "required": ["blast_id", "topic", "status", "created_at", "counts"],
                    "properties": {
                        "blast_id": {"type": "string"},
                        "topic": {"type": "string"},
                        "status": {"enum": list(BLAST_STATUSES)},
                        "created_at": {"type": "string", "format": "date-time"},
                        "counts": {"type": "object", "additionalProperties": counts},
                        "variants": {
                            "type": "object",
                            "description": "an A/B test's counts per variant ('0', '1', …) "
                            "and channel, from the ledger; only when the alert has variants",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": counts,
                            },
                        },
                        "counts_source": {
                            "enum": ["live", "ledger"],
                            "description": "live: Redis counters of a running blast, "
                            "reconciled with the ledger every scheduler pass; ledger: counted "
                            "from the ledger rows (ended blasts)",
                        },
                    },
                },
            },
        },
    }
