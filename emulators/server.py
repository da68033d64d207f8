"""Run the emulators: in a daemon thread of the caller (tests, ``rapid demo``) or as their own
process (``python -m emulators``, used by the benchmark).

Both go through uvicorn with the fastest event loop and HTTP parser installed (uvloop and
httptools when present), no lifespan, no access log.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from emulators.control import stopping_event
from emulators.faults import Faults
from emulators.recorder import DEFAULT_MAX_REQUESTS, Recorder
from emulators.sendgrid import create_sendgrid_app
from emulators.twilio import create_twilio_app

#: How long a stopping server waits for requests in flight (e.g. ones held by the timeout
#: fault) before cancelling them, in seconds.
GRACEFUL_SHUTDOWN_S = 1
#: How long :func:`start_in_thread` waits for the server to listen, in seconds.
STARTUP_TIMEOUT_S = 10.0


def server_config(app: ASGIApp, host: str, port: int, *, embedded: bool) -> uvicorn.Config:
    """The uvicorn settings every emulator runs with.

    ``embedded``: the server runs inside someone else's process (a test, the demo), so it must
    not rewrite that process's logging configuration; its warnings go to the host's loggers.
    """
    extra: dict[str, Any] = {"log_config": None} if embedded else {}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",  # uvloop when installed, else asyncio
        http=_arrival_stamping_protocol(),  # httptools when installed, else h11
        lifespan="off",
        log_level="warning",
        access_log=False,
        # Nothing proxies a local emulator; the middleware read every request's headers.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        **extra,
    )


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # no httptools: uvicorn falls back to h11, and the app stamps
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


def _arrival_stamping_protocol() -> type[asyncio.Protocol] | str:
    """:class:`ArrivalStampingProtocol`, or "auto" (h11) without httptools."""
    return ArrivalStampingProtocol if HttpToolsProtocol is not None else "auto"


if HttpToolsProtocol is not None:

    class ArrivalStampingProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol, stamping each request's arrival in its ASGI state
        (``request.state.arrived_at``) as its first bytes are parsed.

        Stamped in the app instead, a request's arrival was when its turn came on the event
        loop, after the requests read in the same pass, each handled in turn: emulator time,
        not the request's. At 2,000/s from two sender processes (`bench_latency --only
        rate`, 16 runs each way, alternated, 2026-12-05) the busiest second the emulator
        counted exceeded our departures' by 37 on average and passed 2,000 in 4 of 16 runs
        (2,073 at most); stamped here, by 23 and in 1 of 16 (2,015). What is left is the
        host's: the emulator waits for a core.
        """

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["state"]["arrived_at"] = time.time()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts so port 0's real port is known."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve until told to stop, then run the app's ``state.on_stop`` coroutines.

    While serving, a watcher sets the app's ``state.stopping`` event as soon as the server is
    asked to stop, so requests held on purpose end before uvicorn's graceful-shutdown wait.
    """
    app = server.config.app
    watcher = asyncio.create_task(_signal_stopping(server, stopping_event(app)))
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        hooks: Sequence[Callable[[], Awaitable[None]]] = getattr(
            getattr(app, "state", None), "on_stop", ()
        )
        for hook in hooks:
            await hook()


async def _signal_stopping(server: uvicorn.Server, stopping: asyncio.Event | None) -> None:
    if stopping is None:
        return
    # uvicorn itself notices should_exit by polling every 0.1 s; do the same.
    while not server.should_exit:
        await asyncio.sleep(0.05)
    stopping.set()


@dataclass(eq=False)
class RunningServer:
    """An emulator served from a daemon thread; see :func:`start_in_thread`."""

    #: Base URL with the real port, e.g. ``http://127.0.0.1:53127``.
    url: str
    port: int
    app: ASGIApp
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and wait for the thread to end (idempotent)."""
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_in_thread(
    app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, timeout: float = STARTUP_TIMEOUT_S
) -> RunningServer:
    """Serve ``app`` from a daemon thread; return once it accepts connections.

    ``port=0`` picks a free port; ``.url`` has the real one. Raises ``RuntimeError`` when the
    server does not come up within ``timeout`` seconds.
    """
    sock = bind_socket(host, port)
    url = url_of(sock)
    config = server_config(app, host, sock.getsockname()[1], embedded=True)
    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
                runner.run(serve(server, sock))
        except BaseException as exc:  # reported to the starting thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"emulator {url}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            cause = failure[0] if failure else None
            raise RuntimeError(f"emulator at {url} did not start") from cause
        time.sleep(0.005)
    return RunningServer(
        url=url, port=int(sock.getsockname()[1]), app=app, server=server, thread=thread
    )


@dataclass(eq=False)
class Emulator:
    """A running emulator and the objects that steer and observe it, in this process."""

    server: RunningServer
    #: What it received; read it directly (no HTTP needed in-process).
    recorder: Recorder
    #: Its fault settings; change them with ``faults.update(...)``.
    faults: Faults

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:53127``."""
        return self.server.url

    def reset(self) -> None:
        """Forget what was received (the Twilio message log too) and turn every fault off."""
        self.recorder.reset()
        self.faults.reset()
        emulator = getattr(getattr(self.server.app, "state", None), "emulator", None)
        clear = getattr(emulator, "clear", None)
        if clear is not None:
            clear()

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self.server.stop()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_twilio(
    *,
    auth_token: str | None = None,
    account_sid: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    recorder: Recorder | None = None,
    faults: Faults | None = None,
) -> Emulator:
    """Start a Twilio emulator in a daemon thread (see :func:`create_twilio_app`)."""
    recorder, faults = recorder or Recorder(), faults or Faults()
    app = create_twilio_app(recorder, faults, auth_token=auth_token, account_sid=account_sid)
    return Emulator(start_in_thread(app, host, port), recorder, faults)


def start_sendgrid(
    *,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    recorder: Recorder | None = None,
    faults: Faults | None = None,
) -> Emulator:
    """Start a SendGrid emulator in a daemon thread (see :func:`create_sendgrid_app`)."""
    recorder, faults = recorder or Recorder(), faults or Faults()
    app = create_sendgrid_app(recorder, faults, api_key=api_key)
    return Emulator(start_in_thread(app, host, port), recorder, faults)


class EmulatorProcess:
    """Both emulators in a process of their own (``python -m emulators``), so they
    do not share our CPU; ``urls`` maps ``twilio`` and ``sendgrid`` to their base URLs."""

    def __init__(self, *args: str) -> None:
        import subprocess

        # Our own module with arguments from our own callers: no untrusted input.
        self._proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "emulators", *args], stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self.urls: dict[str, str] = json.loads(self._proc.stdout.readline())

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        self._proc.terminate()
        self._proc.wait(timeout=10)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m emulators``."""
    parser = argparse.ArgumentParser(
        prog="python -m emulators",
        description="Serve local Twilio and SendGrid API emulators. With neither port given, "
        "both are served on free ports. Prints one JSON line with their URLs once listening.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--twilio-port", type=int, help="serve Twilio on this port (0: any)")
    parser.add_argument("--sendgrid-port", type=int, help="serve SendGrid on this port (0: any)")
    parser.add_argument(
        "--auth-token", help="Twilio auth token clients must present (default: any)"
    )
    parser.add_argument("--account-sid", help="the only Twilio account SID accepted (default: any)")
    parser.add_argument("--api-key", help="SendGrid API key clients must present (default: any)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument("--seed", type=int, help="seed of the fault dice")
    parser.add_argument(
        "--status-callbacks", action="store_true", help="send Twilio status callbacks"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=DEFAULT_MAX_REQUESTS,
        help="raw requests kept per emulator (default: %(default)s)",
    )
    parser.add_argument(
        "--max-messages", type=int, help="messages kept per emulator (default: all)"
    )
    return parser


async def _serve_all(servers: list[tuple[uvicorn.Server, socket.socket]], ready: str) -> None:
    tasks = [asyncio.create_task(serve(server, sock)) for server, sock in servers]
    # Whoever started us waits for the ready line: a server that neither starts nor fails
    # must not keep it waiting forever.
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not all(server.started for server, _ in servers):
        if any(task.done() for task in tasks):
            break  # one failed to start: gather below raises its error
        if time.monotonic() > deadline:
            for server, _ in servers:
                server.should_exit = True
            raise RuntimeError(f"emulators did not start within {STARTUP_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.01)
    else:
        # Each uvicorn server installs its own SIGINT/SIGTERM handler and the last one wins,
        # which would stop only one of them; one handler stops them all.
        def stop_all(signum: int, frame: FrameType | None) -> None:
            for server, _ in servers:
                server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop_all)
        sys.stdout.write(ready + "\n")
        sys.stdout.flush()
    await asyncio.gather(*tasks)


def _freeze_after_full_collections(phase: str, info: dict[str, Any]) -> None:
    """What a full collection leaves alive here is mostly what the emulator remembers (up
    to 100,000 message resources for lookups): freeze it, so the next full collection does
    not scan it all again. Unfrozen, one stopped the process for 84 ms mid-benchmark, and
    the requests that queued meanwhile were stamped together: a provider that counts
    arrivals must not bunch them itself."""
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the emulators in this process until SIGINT or SIGTERM; return the exit code."""
    args = build_parser().parse_args(argv)
    gc.callbacks.append(_freeze_after_full_collections)
    both = args.twilio_port is None and args.sendgrid_port is None
    try:
        faults_settings: dict[str, Any] = {"latency_ms": args.latency_ms, "seed": args.seed}
        faults_settings["status_callbacks"] = args.status_callbacks
        apps: dict[str, tuple[ASGIApp, int]] = {}
        if both or args.twilio_port is not None:
            apps["twilio"] = (
                create_twilio_app(
                    Recorder(max_messages=args.max_messages, max_requests=args.max_requests),
                    Faults(**faults_settings),
                    auth_token=args.auth_token,
                    account_sid=args.account_sid,
                ),
                args.twilio_port or 0,
            )
        if both or args.sendgrid_port is not None:
            apps["sendgrid"] = (
                create_sendgrid_app(
                    Recorder(max_messages=args.max_messages, max_requests=args.max_requests),
                    Faults(**faults_settings),
                    api_key=args.api_key,
                ),
                args.sendgrid_port or 0,
            )
        sockets = {name: bind_socket(args.host, port) for name, (_, port) in apps.items()}
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"emulators: {exc}\n")
        return 1
    servers = [
        (
            uvicorn.Server(
                server_config(app, args.host, sockets[name].getsockname()[1], embedded=False)
            ),
            sockets[name],
        )
        for name, (app, _) in apps.items()
    ]
    ready = json.dumps({name: url_of(sock) for name, sock in sockets.items()})
    # What start-up built (the apps, the API descriptions they validate against) as well:
    # the first full collection scanned it for 104 ms mid-benchmark.
    gc.collect()
    gc.freeze()
    loop_factory = servers[0][0].config.get_loop_factory()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve_all(servers, ready))
    return 0
