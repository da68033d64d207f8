"""``rapid web``: webhooks, unsubscribe, the HTTP API, health and metrics on ``$PORT``.

With ``METRICS_PORT`` set, a second listener serves ``/metrics`` (and ``/healthz``) only,
without a token, for a scraper inside the network.
"""

from __future__ import annotations

import signal
import socket
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
    log.info("web.starting", host=host, port=config.port, metrics_port=app.settings.metrics_port)
    # uvicorn handles SIGTERM/SIGINT itself: stop accepting, finish requests in flight (up
    # to GRACEFUL_SHUTDOWN_S), then return. Afterwards it re-raises the signal to the handler
    # it found installed; ours absorbs it, so the command returns normally: the app's pools
    # are closed and the exit code is 0, as for the other workers.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped_by)
    server = uvicorn.Server(config)
    if app.settings.metrics_port is None:
        server.run()
    else:
        # One server, two listeners: the app tells them apart by the local port of each
        # connection (MetricsPortOnly), so /metrics needs no token on METRICS_PORT only.
        server.run(sockets=[config.bind_socket(), _listen(host, app.settings.metrics_port)])
    log.info("web.stopped")


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), as uvicorn binds its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _stopped_by(signum: int, _frame: FrameType | None) -> None:
    log.info("web.stop_signal", signal=signal.Signals(signum).name)


COMMANDS = [web]
