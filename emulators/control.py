"""What both emulators share: the request pipeline and the ``/_emulator/*`` control routes.

Every provider request goes through :func:`provider_call`: latency, authentication, the fault
dice, then the provider's own handler; the raw request and its outcome are recorded whatever
happened, so tests can validate rejected requests against the vendor's spec too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.faults import Fault, FaultConfig, Faults
from emulators.recorder import Recorder

#: Prefix of the routes that control the emulator rather than emulate the provider.
CONTROL_PREFIX = "/_emulator"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer, built by pure functions so handlers are easy to test."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str | None = "application/json"

    def to_response(self) -> Response:
        """The Starlette response carrying this reply."""
        return Response(
            self.body, self.status, headers=dict(self.headers), media_type=self.media_type
        )


def json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON reply, compact like the providers' own (UTF-8, nothing escaped that need not
    be). orjson, not json: in the benchmarks the emulator shares the host's two cores with
    the fleet it answers, and the standard encoder was a tenth of its CPU per request."""
    return Reply(status, orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS), headers or {})


#: Checks credentials: ``None`` when they are good, else the 401 reply.
Authenticate = Callable[[Request], Reply | None]
#: Builds the provider's answer to an injected fault.
FaultReply = Callable[[Fault, FaultConfig], Reply]
#: The provider's handler proper, given the request and its raw body.
Handle = Callable[[Request, bytes], Reply]


async def hold(request: Request, seconds: float, stopping: asyncio.Event | None = None) -> None:
    """Wait ``seconds``, or less if the client hangs up (it timed out: nobody listens) or the
    server is ``stopping`` (so a stop never waits for a held request)."""

    async def disconnected() -> None:
        # The body is already read, so the next ASGI message can only be the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(disconnected())]
    if stopping is not None:
        waits.append(asyncio.ensure_future(stopping.wait()))
    _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def stopping_event(app: Any) -> asyncio.Event | None:
    """The event an emulator app's long waits watch; :mod:`.server` sets it on stop."""
    return getattr(getattr(app, "state", None), "stopping", None)


def arrived_at(request: Request) -> float:
    """When ``request`` arrived: stamped by the server as its first bytes were parsed, by
    :func:`provider_call` otherwise (now, outside both)."""
    return getattr(request.state, "arrived_at", None) or time.time()


async def provider_call(
    request: Request,
    *,
    provider: str,
    recorder: Recorder,
    faults: Faults,
    authenticate: Authenticate,
    fault_reply: FaultReply,
    handle: Handle,
) -> Response:
    """Answer one provider request: latency, auth, faults, handler; record it all."""
    # A provider counts a request against its rate when it arrives, not when it answers:
    # ``received_at`` is when its first bytes were parsed (the server stamps it, see
    # :mod:`emulators.server`), else this moment; before the simulated latency either way.
    request.state.arrived_at = arrived_at(request)
    body = await request.body()
    delay = faults.latency_s()
    if delay > 0:
        await asyncio.sleep(delay)
    fault: Fault | None = None
    reply = authenticate(request)
    if reply is None:
        fault = faults.roll()
        reply = fault_reply(fault, faults.config) if fault is not None else handle(request, body)
    recorder.add_request(
        provider=provider,
        method=request.method,
        # The scope's own: ``request.url`` parses the Host header and builds a URL
        # object, a twentieth of the emulator's CPU per request.
        path=request.scope["path"],
        query=request.scope["query_string"].decode("latin-1"),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
        body=body,
        status=reply.status,
        outcome="timeout" if fault == "timeout" else str(reply.status),
        received_at=request.state.arrived_at,
    )
    if fault == "timeout":
        await hold(request, faults.config.timeout_hold_s, stopping_event(request.app))
    return reply.to_response()


def _since(request: Request) -> int:
    raw = request.query_params.get("since", "0")
    try:
        return max(int(raw), 0)
    except ValueError:
        return 0


def control_routes(recorder: Recorder, faults: Faults) -> list[Route]:
    """Routes under ``/_emulator`` to set faults and read what was received.

    - ``GET|POST|DELETE /_emulator/faults``: read, change (partial JSON object), reset faults;
    - ``GET|DELETE /_emulator/messages[?since=N]``: accepted messages, ``{"messages", "next"}``;
    - ``GET|DELETE /_emulator/requests[?since=N]``: raw requests, ``{"requests", "next"}``;
    - ``GET|DELETE /_emulator/stats``: counts of requests by outcome;
    - ``POST /_emulator/reset``: all of the above back to empty, faults off.
    """

    async def get_faults(request: Request) -> Response:
        return JSONResponse(faults.config.to_json())

    async def post_faults(request: Request) -> Response:
        try:
            changes = json.loads(await request.body() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("the body must be a JSON object of fault settings")
            config = faults.update(**changes)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(config.to_json())

    async def delete_faults(request: Request) -> Response:
        return JSONResponse(faults.reset().to_json())

    async def get_messages(request: Request) -> Response:
        since = _since(request)
        messages = recorder.messages(since)
        next_seq = messages[-1]["seq"] + 1 if messages else max(since, recorder.next_message_seq)
        return JSONResponse({"messages": messages, "next": next_seq})

    async def delete_messages(request: Request) -> Response:
        recorder.clear_messages()
        return Response(status_code=204)

    async def get_requests(request: Request) -> Response:
        since = _since(request)
        requests = recorder.requests(since)
        next_seq = requests[-1].seq + 1 if requests else max(since, recorder.next_request_seq)
        return JSONResponse({"requests": [r.to_json() for r in requests], "next": next_seq})

    async def delete_requests(request: Request) -> Response:
        recorder.clear_requests()
        return Response(status_code=204)

    async def get_stats(request: Request) -> Response:
        return JSONResponse(recorder.stats())

    async def delete_stats(request: Request) -> Response:
        recorder.clear_stats()
        return Response(status_code=204)

    async def post_reset(request: Request) -> Response:
        recorder.reset()
        faults.reset()
        return Response(status_code=204)

    p = CONTROL_PREFIX
    return [
        Route(f"{p}/faults", get_faults, methods=["GET"]),
        Route(f"{p}/faults", post_faults, methods=["POST"]),
        Route(f"{p}/faults", delete_faults, methods=["DELETE"]),
        Route(f"{p}/messages", get_messages, methods=["GET"]),
        Route(f"{p}/messages", delete_messages, methods=["DELETE"]),
        Route(f"{p}/requests", get_requests, methods=["GET"]),
        Route(f"{p}/requests", delete_requests, methods=["DELETE"]),
        Route(f"{p}/stats", get_stats, methods=["GET"]),
        Route(f"{p}/stats", delete_stats, methods=["DELETE"]),
        Route(f"{p}/reset", post_reset, methods=["POST"]),
    ]
