"""The war room (contract §7 ``GET /dashboard``): every page family behind one route table.

The pages live by family (:mod:`.login`, :mod:`.blast_pages`, :mod:`.compose_pages`,
:mod:`.review_pages`), on what they share (:mod:`.base`: sessions, CSRF, rendering).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from workers.app import App
from workers.web.dashboard.blast_pages import BlastPages
from workers.web.dashboard.compose_pages import ComposePages
from workers.web.dashboard.login import LoginPages
from workers.web.dashboard.render import HERE
from workers.web.dashboard.review_pages import ReviewPages
from workers.web.dashboard.sessions import Sessions
from workers.web.security import OperatorAuth


class Dashboard(LoginPages, BlastPages, ComposePages, ReviewPages):
    """``/dashboard`` routes over one :class:`~workers.app.App`."""

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


def dashboard_for(app: App, auth: OperatorAuth) -> Dashboard:
    """The dashboard over ``app``: sessions in its Redis, breakdowns from its database."""
    from messaging.store.sql.breakdown import SqlBreakdown
    from workers.web.dashboard.sessions import RedisSessionStore

    return Dashboard(
        app, auth, Sessions(RedisSessionStore(app.redis, app.names)), SqlBreakdown(app.engine)
    )
