"""The HTTP API (contract §7): publish alerts, read and steer blasts, with a bearer token.

Everything the CLI's ``rapid alert send`` and ``rapid blast …`` do, for systems that speak
HTTP rather than SNS. Every route takes a bearer operator token (or the bootstrap
``RAPID_API_TOKEN``) and checks the operator's role (:data:`ROUTE_PERMISSIONS`); every change
is appended to the audit log with the operator's name and source ``api``. This module holds
the route handlers; what they expose is in :mod:`workers.web.api_surface`, the alert body's
validation in :mod:`workers.web.alert_body`, the OpenAPI description in
:mod:`workers.web.openapi`.
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

from messaging.access.audit import Actor, AuditAction, Source, parse_since
from messaging.access.operators import Operator, Permission
from messaging.blasts.services import act_on_blast
from messaging.compliance.replies import VERDICTS, reply_document
from messaging.content.alert import ALERT_ID_PATTERN
from messaging.errors import InputError
from workers.app import App
from workers.web.alert_body import alert_document, alert_from_json
from workers.web.api_surface import (
    BLAST_ACTIONS,
    MAX_AUDIT_LIMIT,
    MAX_LIST_LIMIT,
    MAX_REPLIES_LIMIT,
    ROUTE_PERMISSIONS,
)
from workers.web.openapi import openapi_document
from workers.web.security import API_MAX_BODY, Denied, OperatorAuth, read_body

# The table and the body's validation are still importable from here (the roles test and
# callers written before the split do).
__all__ = ["BLAST_ACTIONS", "ROUTE_PERMISSIONS", "Api", "alert_document"]

log = structlog.get_logger(__name__)


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


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


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
            topic, document = await run_in_threadpool(alert_from_json, body, who.name)
        except ValueError as exc:  # not JSON at all
            return _error(422, f"alert is not valid JSON: {exc}")
        except InputError as exc:
            return _error(422, str(exc))
        from botocore.exceptions import BotoCoreError, ClientError

        from messaging.blasts.services import publish_alert

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
        from messaging.blasts.export import csv_chunks

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
