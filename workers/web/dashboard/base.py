"""What every dashboard page shares: who is asking (session and operator), CSRF, rendering.

Every page needs a session (:mod:`.sessions`) whose operator is still active in the system
of record; every form posts the session's CSRF token from this origin and is refused
without it. The page families (:mod:`.login`, :mod:`.blast_pages`, :mod:`.compose_pages`,
:mod:`.review_pages`) build on :class:`DashboardBase`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from messaging.access.operators import BOOTSTRAP, Operator, Permission, Role
from messaging.blasts.breakdown import BreakdownReads
from workers.app import App
from workers.web.dashboard.live import LiveBoard
from workers.web.dashboard.render import SECURITY_HEADERS, templates
from workers.web.dashboard.sessions import SESSION_COOKIE, Session, Sessions, same_token
from workers.web.security import OperatorAuth, form_params, read_body

log = structlog.get_logger(__name__)

#: Largest form body, in bytes (a compose form with long templates fits).
FORM_MAX_BODY: Final = 64 * 1024

#: Who is asking: their session, and their operator as the system of record has them now.
Who = tuple[Session, Operator]
#: A posted form's fields.
Form = ImmutableMultiDict[str, str]
_Pages = TypeVar("_Pages", bound="DashboardBase")


class DashboardBase:
    """The app, the operator check, the sessions and the page renderer the pages share."""

    def __init__(
        self, app: App, auth: OperatorAuth, sessions: Sessions, breakdown: BreakdownReads
    ) -> None:
        self._app = app
        self._auth = auth
        self._sessions = sessions
        self._breakdown = breakdown
        self._env = templates()
        self.board = LiveBoard(app.blasts, app.control.progress.read)

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

    async def _form(self, request: Request) -> tuple[Who, Form] | Response:
        """The asker and the form of a POST, or the refusal (login, 403)."""
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        form = form_params(await read_body(request, FORM_MAX_BODY))
        if not same_token(form.get("csrf"), who[0].csrf) or not _same_origin(request):
            log.warning("dashboard.csrf_refused", operator=who[1].name, path=request.url.path)
            return self._refused(who, "This form has expired or did not come from this page.")
        return who, form

    def _refused(self, who: Who, message: str) -> HTMLResponse:
        return self._page(
            "refused.html", status=403, **self._context(*who, message=message, title="Refused")
        )


def _same_origin(request: Request) -> bool:
    """A form post whose browser says where it came from must come from this host."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # "null": a sandboxed or privacy-redirected post
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def signed_in(
    page: Callable[[_Pages, Request, Who], Awaitable[Response]],
) -> Callable[[_Pages, Request], Awaitable[Response]]:
    """A page for a signed-in operator (given as ``who``); anyone else goes to the login form."""

    @functools.wraps(page)
    async def guarded(self: _Pages, request: Request) -> Response:
        who = await self._who(request)
        if who is None:
            return self._to_login(request)
        return await page(self, request, who)

    return guarded


def posted(
    handler: Callable[[_Pages, Request, Who, Form], Awaitable[Response]],
) -> Callable[[_Pages, Request], Awaitable[Response]]:
    """A form post from a signed-in operator carrying their session's CSRF token, from this
    origin (given as ``who`` and ``form``); anything else is refused (login, 403)."""

    @functools.wraps(handler)
    async def guarded(self: _Pages, request: Request) -> Response:
        found = await self._form(request)
        if isinstance(found, Response):
            return found
        return await handler(self, request, *found)

    return guarded
