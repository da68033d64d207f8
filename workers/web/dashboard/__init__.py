"""The war room: ``rapid web``'s dashboard (contract §7 ``GET /dashboard``)."""

from workers.web.dashboard.routes import Dashboard, dashboard_for

__all__ = ["Dashboard", "dashboard_for"]
