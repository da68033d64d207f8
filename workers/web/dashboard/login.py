"""Logging in and out of the dashboard with an operator token.

The login form carries its own CSRF token in a cookie (no session holds one yet); a token
is checked by the API's check, failures counted per address.
"""

from __future__ import annotations

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from workers.web.dashboard.base import FORM_MAX_BODY, DashboardBase, Form, Who, posted
from workers.web.dashboard.sessions import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    new_token,
    same_token,
)
from workers.web.security import Denied, client_address, form_params, read_body

log = structlog.get_logger(__name__)


class LoginPages(DashboardBase):
    """``/dashboard/login`` and ``/dashboard/logout``."""

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

    @posted
    async def logout(self, request: Request, who: Who, form: Form) -> Response:
        """End the session everywhere."""
        await run_in_threadpool(self._sessions.close, request.cookies.get(SESSION_COOKIE))
        log.info("dashboard.logout", operator=who[1].name)
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/dashboard")
        return response


def _https(request: Request) -> bool:
    """Cookies are ``Secure`` whenever the browser reached us over https."""
    return request.url.scheme == "https"


def _safe_next(raw: str | None) -> str:
    """Where to go after login: a dashboard path only (no open redirect)."""
    if raw and raw.startswith("/dashboard") and "//" not in raw and "\\" not in raw:
        return raw
    return "/dashboard"
