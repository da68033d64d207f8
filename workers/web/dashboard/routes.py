"""The war room (contract §7 ``GET /dashboard``): pages, forms and the live stream.

Every page needs a session (:mod:`.sessions`); every form posts the session's CSRF token
and is refused without it; every action re-checks the operator's role in the system of
record (the same :class:`~messaging.operators.Permission` table as the API) and goes
through the same services as the API, recorded in the audit log with source ``dashboard``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from config.logging import mask_text
from messaging.audit import Actor, AuditAction, Source
from messaging.breakdown import BreakdownReads
from messaging.compliance.replies import VERDICTS
from messaging.errors import InputError
from messaging.lifecycle import ENDED_STATUSES
from messaging.operators import BOOTSTRAP, Operator, Permission, Role
from messaging.services import act_on_blast
from workers.app import App
from workers.web.api_surface import BLAST_ACTIONS
from workers.web.dashboard.compose import PRIORITIES, Mode, alert_to_publish, form_values
from workers.web.dashboard.live import PUSH_EVERY_S, LiveBoard
from workers.web.dashboard.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Session,
    Sessions,
    new_token,
    same_token,
)
from workers.web.security import Denied, OperatorAuth, client_address, form_params, read_body

log = structlog.get_logger(__name__)

HERE: Final = Path(__file__).parent
#: Largest form body, in bytes (a compose form with long templates fits).
FORM_MAX_BODY: Final = 64 * 1024
#: A stream ends after this many seconds and the browser reconnects (``retry``), so a
#: revoked or logged-out session stops receiving within this long.
STREAM_MAX_S: Final = 120.0
#: How long the compose page waits for a published alert to be recorded (and a dry run
#: counted) before it answers anyway.
PUBLISH_WAIT_S: Final = 20.0
#: Audit entries per page (the audit store returns at most 1000: 20 pages).
AUDIT_PAGE: Final = 50
AUDIT_MAX_PAGES: Final = 20
#: Every dashboard response: nothing inline, nothing from elsewhere (all assets are local).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: Which button each status shows (the role decides too).
ACTIONS_BY_STATUS: Final = {
    "pause": {"expanding", "sending", "scheduled"},
    "resume": {"paused"},
    "cancel": {"scheduled", "expanding", "awaiting_approval", "sending", "paused"},
    "approve": {"awaiting_approval"},
    "reject": {"awaiting_approval"},
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _when(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def templates() -> Environment:
    """The dashboard's Jinja2 environment (autoescaped: every value is text)."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = _duration
    env.filters["when"] = _when
    env.filters["masked"] = mask_text
    env.filters["num"] = lambda n: f"{n:,}" if isinstance(n, int) else n
    return env


def perform(app: App, action: str, blast_id: str, actor: Actor) -> None:
    """A blast action through the service the API and the CLI use (it audits)."""
    act_on_blast(
        action, blast_id, actor, actions=app.actions, approvals=app.approvals, audit=app.audit
    )


class Dashboard:
    """``/dashboard`` routes over one :class:`~workers.app.App`."""

    def __init__(
        self, app: App, auth: OperatorAuth, sessions: Sessions, breakdown: BreakdownReads
    ) -> None:
        self._app = app
        self._auth = auth
        self._sessions = sessions
        self._breakdown = breakdown
        self._env = templates()
        self.board = LiveBoard(app.blasts, app.control.progress.read)

    def routes(self) -> list[BaseRoute]:
        """Every dashboard route (the static files included)."""
        return [
            Route("/dashboard", self.blasts_page, methods=["GET"]),
            Route("/dashboard/login", self.login_page, methods=["GET"]),
            Route("/dashboard/login", self.login, methods=["POST"]),
            Route("/dashboard/logout", self.logout, methods=["POST"]),
            Route("/dashboard/events", self.events, methods=["GET"]),
            Route("/dashboard/compose", self.compose_page, methods=["GET"]),
            Route("/dashboard/compose", self.compose, methods=["POST"]),
            Route("/dashboard/replies", self.replies_page, methods=["GET"]),
            Route("/dashboard/replies/{reply_id:int}/review", self.review, methods=["POST"]),
            Route("/dashboard/audit", self.audit_page, methods=["GET"]),
            Route("/dashboard/blasts/{blast_id}", self.blast_page, methods=["GET"]),
            Route("/dashboard/blasts/{blast_id}/{action}", self.blast_action, methods=["POST"]),
            Mount("/dashboard/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # --- plumbing -----------------------------------------------------------------------

    def _page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self._env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def _operator_of(self, session: Session) -> Operator | None:
        """The session's operator as the system of record has them now (revoked: None)."""
        if session.operator == BOOTSTRAP:
            if not self._app.settings.api_token:
                return None
            return Operator(BOOTSTRAP, Role.ADMIN, datetime.min.replace(tzinfo=UTC), BOOTSTRAP)
        for operator in self._app.operators.list():
            if (
                operator.name == session.operator
                and operator.active
                and operator.created_at.isoformat() == session.operator_created_at
            ):
                return operator
        return None

    async def _who(self, request: Request) -> tuple[Session, Operator] | None:
        def find() -> tuple[Session, Operator] | None:
            session = self._sessions.get(request.cookies.get(SESSION_COOKIE))
            operator = self._operator_of(session) if session is not None else None
            return (session, operator) if session and operator else None

        return await run_in_threadpool(find)

    def _to_login(self, request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)

    def _context(self, session: Session, operator: Operator, **extra: Any) -> dict[str, Any]:
        return {
            "operator": operator,
            "csrf": session.csrf,
            "may": {p.value for p in Permission if operator.may(p)},
            **extra,
        }

    async def _form(
        self, request: Request
    ) -> tuple[Session, Operator, ImmutableMultiDict[str, str]] | Response:
        """The session, operator and form of a POST, or the refusal (login, 403)."""
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        form = form_params(await read_body(request, FORM_MAX_BODY))
        if not same_token(form.get("csrf"), who[0].csrf) or not _same_origin(request):
            log.warning("dashboard.csrf_refused", operator=who[1].name, path=request.url.path)
            return self._refused(who, "This form has expired or did not come from this page.")
        return who[0], who[1], form

    def _refused(self, who: tuple[Session, Operator], message: str) -> HTMLResponse:
        return self._page(
            "refused.html", status=403, **self._context(*who, message=message, title="Refused")
        )

    # --- login --------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        """The login form (with its own CSRF token: no session holds one yet)."""
        return self._login_form(request, message=None, status=200)

    def _login_form(self, request: Request, message: str | None, status: int) -> Response:
        token = new_token()
        next_url = _safe_next(request.query_params.get("next"))
        response = self._page(
            "login.html", status=status, csrf=token, next=next_url, message=message, title="Log in"
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            max_age=3600,
            path="/dashboard/login",
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        return response

    async def login(self, request: Request) -> Response:
        """Check the operator token (the API's check, failures counted) and open a session."""
        form = form_params(await read_body(request, FORM_MAX_BODY))
        if not same_token(form.get("csrf"), request.cookies.get(LOGIN_CSRF_COOKIE)):
            return self._login_form(request, "The login form expired; try again.", 403)
        address = client_address(request)
        found = await run_in_threadpool(
            self._auth.authenticate, form.get("token", "").strip() or None, address
        )
        if isinstance(found, Denied):
            message = (
                "Too many failed attempts from this address; try again later."
                if found.status == 429
                else "That token is not a valid operator token."
            )
            return self._login_form(request, message, found.status)
        session_id, _ = await run_in_threadpool(
            self._sessions.open, found.name, found.created_at.isoformat()
        )
        log.info("dashboard.login", operator=found.name, address=address)
        response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=self._sessions.ttl_s,
            path="/dashboard",
            httponly=True,
            samesite="strict",
            secure=_https(request),
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/dashboard/login")
        return response

    async def logout(self, request: Request) -> Response:
        """End the session everywhere."""
        found = await self._form(request)
        if isinstance(found, Response):
            return found
        await run_in_threadpool(self._sessions.close, request.cookies.get(SESSION_COOKIE))
        log.info("dashboard.logout", operator=found[1].name)
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/dashboard")
        return response

    # --- blasts -------------------------------------------------------------------------

    async def blasts_page(self, request: Request) -> Response:
        """Running and recent blasts with their bars, rates and ETAs (live)."""
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        blasts = await run_in_threadpool(self.board.look)
        return self._page(
            "blasts.html",
            **self._context(
                *who, blasts=blasts, title="Blasts", nav="blasts", stream="/dashboard/events"
            ),
        )

    async def blast_page(self, request: Request) -> Response:
        """One blast: counts by state, failures by code, deferrals by zone, replies, actions."""
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        blast_id = request.path_params["blast_id"]
        return await self._blast(who, blast_id, request.query_params.get("done"), None, 200)

    async def _blast(
        self,
        who: tuple[Session, Operator],
        blast_id: str,
        done: str | None,
        error: str | None,
        status: int,
    ) -> Response:
        app = self._app

        def load() -> tuple[Any, ...] | None:
            found = self.board.look(blast_id)
            if not found:
                return None
            breakdown = self._breakdown.breakdown(blast_id)
            return found[0], breakdown, app.replies.counts(blast_id)

        loaded = await run_in_threadpool(load)
        if loaded is None:
            return self._page(
                "refused.html",
                status=404,
                **self._context(*who, message=f"No blast {blast_id!r}.", title="Not found"),
            )
        blast, breakdown, replies = loaded
        operator = who[1]
        actions = [
            a
            for a in BLAST_ACTIONS
            if blast["status"] in ACTIONS_BY_STATUS[a] and operator.may(Permission(a))
        ]
        own_request = blast.get("requested_by") == operator.name
        if own_request:  # the two-person rule: the requester cannot approve
            actions = [a for a in actions if a != "approve"]
        return self._page(
            "blast.html",
            status=status,
            **self._context(
                *who,
                blast=blast,
                breakdown=breakdown,
                replies=replies,
                actions=actions,
                own_request=own_request,
                done=done if done in BLAST_ACTIONS else None,
                error=error,
                title=f"Blast {blast_id}",
                nav="blasts",
                stream=None
                if blast["status"] in ENDED_STATUSES
                else f"/dashboard/events?blast={quote(blast_id, safe='')}",
            ),
        )

    async def blast_action(self, request: Request) -> Response:
        """Pause, resume, cancel, approve or reject, as the role allows; audited."""
        found = await self._form(request)
        if isinstance(found, Response):
            return found
        session, operator, _ = found
        blast_id, action = request.path_params["blast_id"], request.path_params["action"]
        if action not in BLAST_ACTIONS:
            return self._refused((session, operator), f"There is no action {action!r}.")
        if not operator.may(Permission(action)):
            log.warning("dashboard.forbidden", operator=operator.name, action=action)
            return self._refused(
                (session, operator), f"{operator.name} ({operator.role}) may not {action}."
            )
        if await run_in_threadpool(self._app.blasts.get, blast_id) is None:
            return self._refused((session, operator), f"No blast {blast_id!r}.")
        try:
            await run_in_threadpool(
                perform, self._app, action, blast_id, Actor(operator.name, Source.DASHBOARD)
            )
        except InputError as exc:
            return await self._blast((session, operator), blast_id, None, str(exc), 409)
        self.board.forget()
        log.info("dashboard.blast_action", blast_id=blast_id, action=action, by=operator.name)
        return RedirectResponse(
            f"/dashboard/blasts/{quote(blast_id, safe='')}?done={action}", status_code=303
        )

    async def events(self, request: Request) -> Response:
        """Server-Sent Events: the page's blasts every :data:`PUSH_EVERY_S` seconds."""
        who = await self._who(request)
        if who is None:
            return Response("log in first", status_code=401, headers=SECURITY_HEADERS)
        blast_id = request.query_params.get("blast") or None

        async def stream() -> AsyncIterator[str]:
            ends = time.monotonic() + STREAM_MAX_S
            yield "retry: 1000\n\n"
            while time.monotonic() < ends:
                blasts = await self.board.shared_look(blast_id)
                yield f"data: {json.dumps({'blasts': blasts}, separators=(',', ':'))}\n\n"
                if blast_id is not None and blasts and blasts[0]["status"] in ENDED_STATUSES:
                    yield "event: ended\ndata: {}\n\n"
                    return
                await asyncio.sleep(PUSH_EVERY_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )

    # --- compose ------------------------------------------------------------------------

    async def compose_page(self, request: Request) -> Response:
        """The compose form (senders and up)."""
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        return await self._compose_form(who, form_values({}), None, None, 200)

    async def _compose_form(
        self,
        who: tuple[Session, Operator],
        values: dict[str, str],
        preview: dict[str, Any] | None,
        error: str | None,
        status: int,
    ) -> Response:
        topics = await run_in_threadpool(self._app.stores.topics.names)
        return self._page(
            "compose.html",
            status=status,
            **self._context(
                *who,
                values=values,
                topics=topics,
                priorities=PRIORITIES,
                preview=preview,
                error=error,
                threshold=self._app.settings.approval_threshold,
                title="Compose",
                nav="compose",
            ),
        )

    async def compose(self, request: Request) -> Response:
        """Dry run (the preview is shown on the form), test send, or send."""
        found = await self._form(request)
        if isinstance(found, Response):
            return found
        session, operator, form = found
        who = (session, operator)
        values = form_values(form)
        if not operator.may(Permission.SEND):
            return self._refused(who, f"{operator.name} ({operator.role}) may not send.")
        try:
            mode = Mode(form.get("mode", ""))
            topic, document = await run_in_threadpool(alert_to_publish, values, mode, operator.name)
            from messaging.services import publish_alert

            await run_in_threadpool(
                publish_alert, self._app.stores.topics, self._app.publisher, topic, document
            )
        except ValueError:  # an unknown mode
            return await self._compose_form(who, values, None, "Choose an action.", 422)
        except InputError as exc:
            return await self._compose_form(who, values, None, str(exc), 422)
        blast_id = document["alert_id"]
        log.info("dashboard.alert_published", blast_id=blast_id, mode=mode.value)
        if mode is Mode.DRY_RUN:
            preview = await self._wait_dry_run(blast_id)
            return await self._compose_form(who, values, preview, None, 200)
        # The intake records the blast within a second or two: land on its page once it has.
        await self._wait(blast_id, lambda found: bool(found))
        return RedirectResponse(f"/dashboard/blasts/{quote(blast_id, safe='')}", status_code=303)

    async def _wait_dry_run(self, blast_id: str) -> dict[str, Any]:
        """The dry run's summary once the intake has counted it (or as far as it got)."""
        found = await self._wait(
            blast_id, lambda found: bool(found) and found[0]["status"] in ENDED_STATUSES
        )
        return found[0] if found else {"blast_id": blast_id, "status": "not recorded yet"}

    async def _wait(
        self, blast_id: str, done: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        """Look at a just-published blast until ``done`` (or :data:`PUBLISH_WAIT_S`)."""
        deadline = time.monotonic() + PUBLISH_WAIT_S
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = await run_in_threadpool(self.board.look, blast_id)
            if done(found):
                break
            await asyncio.sleep(0.25)
        return found

    # --- replies and audit --------------------------------------------------------------

    async def replies_page(self, request: Request) -> Response:
        """Replies needing review (``?all=1``: every recent reply)."""
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        every = request.query_params.get("all") == "1"
        replies = await run_in_threadpool(
            self._app.replies.replies, needs_review=not every, limit=200
        )
        return self._page(
            "replies.html",
            **self._context(
                *who,
                replies=replies,
                every=every,
                verdicts=VERDICTS,
                title="Replies",
                nav="replies",
            ),
        )

    async def review(self, request: Request) -> Response:
        """Record a verdict on a reply (approvers); a lifted suppression is audited."""
        found = await self._form(request)
        if isinstance(found, Response):
            return found
        session, operator, form = found
        if not operator.may(Permission.APPROVE):
            return self._refused((session, operator), f"{operator.name} may not review replies.")
        verdict = form.get("verdict", "")
        reply_id = int(request.path_params["reply_id"])
        if verdict not in VERDICTS:
            return self._refused((session, operator), "Choose a verdict.")
        try:
            done = await run_in_threadpool(
                self._app.replies.review, reply_id, verdict, operator.name
            )
        except InputError as exc:
            return self._refused((session, operator), str(exc))
        if done.lifted:
            await run_in_threadpool(
                self._app.audit.record,
                Actor(operator.name, Source.DASHBOARD),
                AuditAction.OPTOUT_REMOVED,
                value=done.reply.from_number,
                detail=f"reply {reply_id} reviewed: {verdict}",
            )
        return RedirectResponse("/dashboard/replies", status_code=303)

    async def audit_page(self, request: Request) -> Response:
        """The audit log, newest first, :data:`AUDIT_PAGE` entries a page."""
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        raw = request.query_params.get("page", "1")
        page = int(raw) if raw.isascii() and raw.isdigit() else 1
        page = min(max(page, 1), AUDIT_MAX_PAGES)
        entries = await run_in_threadpool(self._app.audit.entries, limit=page * AUDIT_PAGE + 1)
        shown = entries[(page - 1) * AUDIT_PAGE : page * AUDIT_PAGE]
        more = len(entries) > page * AUDIT_PAGE and page < AUDIT_MAX_PAGES
        return self._page(
            "audit.html",
            **self._context(
                *who, entries=shown, page=page, more=more, title="Audit log", nav="audit"
            ),
        )


def _https(request: Request) -> bool:
    """Cookies are ``Secure`` whenever the browser reached us over https."""
    return request.url.scheme == "https"


def _same_origin(request: Request) -> bool:
    """A form post whose browser says where it came from must come from this host."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # "null": a sandboxed or privacy-redirected post
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def _safe_next(raw: str | None) -> str:
    """Where to go after login: a dashboard path only (no open redirect)."""
    if raw and raw.startswith("/dashboard") and "//" not in raw and "\\" not in raw:
        return raw
    return "/dashboard"


def dashboard_for(app: App, auth: OperatorAuth) -> Dashboard:
    """The dashboard over ``app``: sessions in its Redis, breakdowns from its database."""
    from messaging.store.sql.breakdown import SqlBreakdown
    from workers.web.dashboard.sessions import RedisSessionStore

    return Dashboard(
        app, auth, Sessions(RedisSessionStore(app.redis, app.names)), SqlBreakdown(app.engine)
    )
