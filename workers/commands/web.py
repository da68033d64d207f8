"""``rapid web``: webhooks, unsubscribe, the HTTP API, health and metrics on ``$PORT``."""

from __future__ import annotations

import signal
from types import FrameType

import click
import structlog

from workers.app import App

pass_app = click.make_pass_decorator(App)
log = structlog.get_logger(__name__)

#: Every interface: on a Procfile platform the router reaches the process from outside.
DEFAULT_HOST = "0.0.0.0"  # noqa: S104
#: How long a stopping server lets requests in flight finish, in seconds (contract §9.6:
#: a process exits within 30 s of SIGTERM).
GRACEFUL_SHUTDOWN_S = 20
#: Keep-alive of idle client connections, in seconds: longer than a load balancer's idle
#: timeout would leave it sending requests onto connections we are closing.
KEEP_ALIVE_S = 5


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="TCP port (default: $PORT, 8000).")
@pass_app
def web(app: App, host: str, port: int | None) -> None:
    """Webhooks, unsubscribe pages, the HTTP API, /healthz and /metrics."""
    import uvicorn

    from messaging.store.db import check_connection
    from workers.web.app import create_app

    check_connection(app.engine)
    config = uvicorn.Config(
        create_app(app),
        host=host,
        port=port or app.settings.port,
        # Logging was configured by the entry point (structlog, masked); keep it.
        log_config=None,
        # Off: access lines carry the raw path, and an unsubscribe path holds a token that
        # encodes the address. Handlers log what matters, masked.
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    log.info("web.starting", host=host, port=config.port)
    # uvicorn handles SIGTERM/SIGINT itself: stop accepting, finish requests in flight (up
    # to GRACEFUL_SHUTDOWN_S), then return. Afterwards it re-raises the signal to the handler
    # it found installed; ours absorbs it, so the command returns normally: the app's pools
    # are closed and the exit code is 0, as for the other workers.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped_by)
    uvicorn.Server(config).run()
    log.info("web.stopped")


def _stopped_by(signum: int, _frame: FrameType | None) -> None:
    log.info("web.stop_signal", signal=signal.Signals(signum).name)


COMMANDS = [web]
