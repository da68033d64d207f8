"""The ``rapid web`` application: webhooks, unsubscribe, the HTTP API, health and metrics.

:func:`create_app` is the one place the routes are wired to the application object; it
reads nothing from the environment and opens no connection (clients connect on first use).
"""

from __future__ import annotations

import structlog
from starlette.applications import Starlette

from messaging.content.links import LinkCodes
from messaging.content.unsubscribe import UnsubscribeTokens
from messaging.sending.delivery_events import DeliveryEvents
from queues.metrics import build_registry
from workers.app import App
from workers.web.api import Api
from workers.web.health import Health, MetricsPortOnly
from workers.web.links import ShortLinkRoute
from workers.web.security import (
    AUTH_FAILURE_LIMIT,
    AUTH_FAILURE_WINDOW_S,
    OperatorAuth,
    SendGridSignature,
    TwilioSignature,
)
from workers.web.sendgrid_hooks import SendGridHooks
from workers.web.twilio_hooks import TwilioHooks
from workers.web.unsubscribe import UnsubscribePages

log = structlog.get_logger(__name__)


def create_app(app: App) -> Starlette:
    """The Starlette app of ``rapid web`` over ``app``'s settings and clients.

    Raises :class:`~messaging.errors.ConfigError` for a malformed
    ``SENDGRID_WEBHOOK_PUBLIC_KEY``, so the process fails at start (contract §2).
    """
    settings = app.settings
    events = DeliveryEvents(app.stores.delivery_events, app.suppressions)
    # ConfigError without RAPID_SECRET_KEY outside demo/test: unsubscribe links must work.
    keys = settings.unsubscribe_keys()
    if not settings.twilio_auth_token:
        log.warning("web.twilio_webhooks_refused", reason="TWILIO_AUTH_TOKEN is not set")
    registry = build_registry(app.stores.reports, app.redis, app.names)
    auth = operator_auth(app)
    parts = (
        TwilioHooks(
            events,
            app.replies,
            TwilioSignature(settings.twilio_auth_token),
            settings.public_base_url,
        ),
        SendGridHooks(events, SendGridSignature(settings.sendgrid_webhook_public_key)),
        UnsubscribePages(UnsubscribeTokens(keys[0], keys[1:]), app.suppressions, settings.org_name),
        Api(app, auth),
        Health(app.stores.reports, app.redis, registry, app.blasts),
        ShortLinkRoute(
            LinkCodes(keys[0], keys[1:]),
            app.stores.links,
            refcode_param=settings.link_refcode_param,
        ),
    )
    from workers.web.dashboard import dashboard_for

    routes = [route for part in parts for route in part.routes()]
    web = Starlette(routes=[*routes, *dashboard_for(app, auth).routes()])
    web.state.app = app
    web.state.registry = registry
    web.add_middleware(MetricsPortOnly, metrics_port=settings.metrics_port)
    # The one operator check: the API's, and the dashboard's and /metrics' to reuse.
    web.state.auth = auth
    return web


def operator_auth(app: App) -> OperatorAuth:
    """Operator tokens, with failed attempts counted fleet-wide in Redis."""
    from queues.flow.auth_failures import RedisFailureLimiter

    failures = RedisFailureLimiter(
        app.redis, app.names, limit=AUTH_FAILURE_LIMIT, window_s=AUTH_FAILURE_WINDOW_S
    )
    return OperatorAuth(app.operators, failures)
