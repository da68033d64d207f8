"""``GET /healthz`` (can this process do its work?) and ``GET /metrics`` (Prometheus).

``/metrics`` is not public (contract §7): on ``PORT`` (the load balancer's) it takes a
bearer operator token, checked by the same operator check as the API; on ``METRICS_PORT``
(a second listener kept inside the network) it is open, and that port serves nothing else.
"""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from messaging.blasts.lifecycle import BlastStatus, PauseReason
from messaging.ports import BlastReads, ReportStore

log = structlog.get_logger(__name__)


class Health:
    """Liveness and metrics, both computed when asked."""

    def __init__(
        self,
        reports: ReportStore,
        redis: Any,
        registry: CollectorRegistry,
        blasts: BlastReads | None = None,
    ) -> None:
        self._reports = reports
        self._redis = redis
        self._registry = registry
        #: Where a provider's refusal of our credentials shows (blasts it paused).
        self._blasts = blasts

    def routes(self) -> list[Route]:
        """``/healthz`` and ``/metrics``."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    def _check_database(self) -> str:
        try:
            self._reports.ping()
        except Exception as exc:
            # The error text may carry the database URL: log its type only.
            log.warning("health.database_down", error_type=type(exc).__name__)
            return "down"
        return "ok"

    def _check_redis(self) -> str:
        try:
            self._redis.ping()
        except Exception as exc:
            log.warning("health.redis_down", error_type=type(exc).__name__)
            return "down"
        return "ok"

    def _provider_auth(self) -> list[str]:
        """The one-line details of blasts paused because a provider refused our credentials."""
        if self._blasts is None:
            return []
        details = set()
        try:
            for blast_id in self._blasts.ids_with_status(BlastStatus.PAUSED):
                blast = self._blasts.get(blast_id)
                if blast is not None and blast.pause_reason == PauseReason.PROVIDER_AUTH:
                    details.add(blast.pause_detail or "provider refused our credentials")
        except Exception as exc:  # the database check says it; this is a detail
            log.warning("health.provider_auth_unknown", error_type=type(exc).__name__)
        return sorted(details)

    async def healthz(self, request: Request) -> Response:
        """200 ``{"status": "ok", "database": "ok", "redis": "ok"}``; 503 naming what is down.

        A provider refusing our credentials (blasts paused with ``provider_auth``) is not a
        reason to take this process out of a load balancer: still 200, with ``"status":
        "degraded"`` and each refusal's one line under ``"provider_auth"``.
        """
        database = await run_in_threadpool(self._check_database)
        redis = await run_in_threadpool(self._check_redis)
        ok = database == "ok" and redis == "ok"
        body: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "database": database,
            "redis": redis,
        }
        refused = await run_in_threadpool(self._provider_auth) if database == "ok" else []
        if refused:
            body["provider_auth"] = refused
            if ok:
                body["status"] = "degraded"
        return JSONResponse(
            body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"}
        )

    async def metrics(self, request: Request) -> Response:
        """The Prometheus text exposition of this app's registry, to whom may read it."""
        if not on_metrics_port(request):
            refused = await run_in_threadpool(_refusal, request)
            if refused is not None:
                return refused
        body = await run_in_threadpool(generate_latest, self._registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _metrics_port(scope: Any) -> int | None:
    app = scope.get("app")
    rapid = getattr(getattr(app, "state", None), "app", None)
    return getattr(getattr(rapid, "settings", None), "metrics_port", None)


def on_metrics_port(request: Request) -> bool:
    """True when the request came in on ``METRICS_PORT`` (the listener's own port)."""
    port = _metrics_port(request.scope)
    server = request.scope.get("server")
    return port is not None and server is not None and server[1] == port


def _refusal(request: Request) -> Response | None:
    """None when the caller holds an operator token that may read; else the answer to send.

    The check is the app's one operator check (``state.auth``, the API's); without one the
    metrics are refused, never served.
    """
    from messaging.access.operators import Permission

    auth = getattr(request.app.state, "auth", None)
    if auth is None:
        return JSONResponse({"error": "metrics need an operator token"}, status_code=403)
    found = auth.authorize(request, Permission.READ)
    status = getattr(found, "status", None)
    if isinstance(status, int):  # a Denied: 401, 403 or 429
        log.warning("metrics.denied", status=status)
        return JSONResponse(
            {"error": getattr(found, "message", "denied")},
            status_code=status,
            headers=getattr(found, "headers", None) or None,
        )
    return None


class MetricsPortOnly:
    """ASGI middleware: a request on ``METRICS_PORT`` reaches ``/metrics`` and ``/healthz`` only.

    The port is meant for the scraper inside the network; webhooks, the API and unsubscribe
    pages stay on the public port, so opening one port never exposes the other's routes.
    """

    #: Paths served on the metrics port.
    PATHS = frozenset({"/metrics", "/healthz"})

    def __init__(self, app: Any, metrics_port: int | None) -> None:
        self._app = app
        self._port = metrics_port

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, or answer 404 for other paths on the metrics port."""
        server = scope.get("server")
        if (
            scope["type"] == "http"
            and self._port is not None
            and server is not None
            and server[1] == self._port
            and scope.get("path") not in self.PATHS
        ):
            await JSONResponse({"error": "not found"}, status_code=404)(scope, receive, send)
            return
        await self._app(scope, receive, send)
