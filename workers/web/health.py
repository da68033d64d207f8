"""``GET /healthz`` (can this process do its work?) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = structlog.get_logger(__name__)


class Health:
    """Liveness and metrics, both computed when asked."""

    def __init__(self, engine: Engine, redis: Any, registry: CollectorRegistry) -> None:
        self._engine = engine
        self._redis = redis
        self._registry = registry

    def routes(self) -> list[Route]:
        """``/healthz`` and ``/metrics``."""
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    def _check_database(self) -> str:
        try:
            with self._engine.connect() as conn:
                conn.execute(text("SELECT 1"))
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

    async def healthz(self, request: Request) -> Response:
        """200 ``{"status": "ok", "database": "ok", "redis": "ok"}``; 503 naming what is down."""
        database = await run_in_threadpool(self._check_database)
        redis = await run_in_threadpool(self._check_redis)
        ok = database == "ok" and redis == "ok"
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "database": database, "redis": redis},
            status_code=200 if ok else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(self, request: Request) -> Response:
        """The Prometheus text exposition of this app's registry."""
        body = await run_in_threadpool(generate_latest, self._registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
