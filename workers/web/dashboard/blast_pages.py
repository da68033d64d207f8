"""The blasts pages: the live list, one blast with its actions, and the live stream.

Every action re-checks the operator's role (the API's
:class:`~messaging.access.operators.Permission` table) and goes through the API's service,
recorded in the audit log with source ``dashboard``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Final
from urllib.parse import quote

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from messaging.access.audit import Actor, Source
from messaging.access.operators import Permission
from messaging.blasts.lifecycle import ENDED_STATUSES
from messaging.blasts.services import act_on_blast
from messaging.errors import InputError
from workers.app import App
from workers.web.api_surface import BLAST_ACTIONS
from workers.web.dashboard.base import DashboardBase, Form, Who, posted, signed_in
from workers.web.dashboard.live import PUSH_EVERY_S
from workers.web.dashboard.render import SECURITY_HEADERS

log = structlog.get_logger(__name__)

#: A stream ends after this many seconds and the browser reconnects (``retry``), so a
#: revoked or logged-out session stops receiving within this long.
STREAM_MAX_S: Final = 120.0
#: Which button each status shows (the role decides too).
ACTIONS_BY_STATUS: Final = {
    "pause": {"expanding", "sending", "scheduled"},
    "resume": {"paused"},
    "cancel": {"scheduled", "expanding", "awaiting_approval", "sending", "paused"},
    "approve": {"awaiting_approval"},
    "reject": {"awaiting_approval"},
}


def perform(app: App, action: str, blast_id: str, actor: Actor) -> None:
    """A blast action through the service the API and the CLI use (it audits)."""
    act_on_blast(
        action, blast_id, actor, actions=app.actions, approvals=app.approvals, audit=app.audit
    )


class BlastPages(DashboardBase):
    """``/dashboard``, ``/dashboard/blasts/…`` and ``/dashboard/events``."""

    @signed_in
    async def blasts_page(self, request: Request, who: Who) -> Response:
        """Running and recent blasts with their bars, rates and ETAs (live)."""
        blasts = await run_in_threadpool(self.board.look)
        return self._page(
            "blasts.html",
            **self._context(
                *who, blasts=blasts, title="Blasts", nav="blasts", stream="/dashboard/events"
            ),
        )

    @signed_in
    async def blast_page(self, request: Request, who: Who) -> Response:
        """One blast: counts by state, failures by code, deferrals by zone, replies, actions."""
        blast_id = request.path_params["blast_id"]
        return await self._blast(who, blast_id, request.query_params.get("done"), None, 200)

    async def _blast(
        self,
        who: Who,
        blast_id: str,
        done: str | None,
        error: str | None,
        status: int,
    ) -> Response:
        app = self._app

        def load() -> tuple[Any, ...] | None:
            found = self.board.look(blast_id)
            if not found:
                return None
            breakdown = self._breakdown.breakdown(blast_id)
            return found[0], breakdown, app.replies.counts(blast_id)

        loaded = await run_in_threadpool(load)
        if loaded is None:
            return self._page(
                "refused.html",
                status=404,
                **self._context(*who, message=f"No blast {blast_id!r}.", title="Not found"),
            )
        blast, breakdown, replies = loaded
        operator = who[1]
        actions = [
            a
            for a in BLAST_ACTIONS
            if blast["status"] in ACTIONS_BY_STATUS[a] and operator.may(Permission(a))
        ]
        own_request = blast.get("requested_by") == operator.name
        if own_request:  # the two-person rule: the requester cannot approve
            actions = [a for a in actions if a != "approve"]
        return self._page(
            "blast.html",
            status=status,
            **self._context(
                *who,
                blast=blast,
                breakdown=breakdown,
                replies=replies,
                actions=actions,
                own_request=own_request,
                done=done if done in BLAST_ACTIONS else None,
                error=error,
                title=f"Blast {blast_id}",
                nav="blasts",
                stream=None
                if blast["status"] in ENDED_STATUSES
                else f"/dashboard/events?blast={quote(blast_id, safe='')}",
            ),
        )

    @posted
    async def blast_action(self, request: Request, who: Who, form: Form) -> Response:
        """Pause, resume, cancel, approve or reject, as the role allows; audited."""
        operator = who[1]
        blast_id, action = request.path_params["blast_id"], request.path_params["action"]
        if action not in BLAST_ACTIONS:
            return self._refused(who, f"There is no action {action!r}.")
        if not operator.may(Permission(action)):
            log.warning("dashboard.forbidden", operator=operator.name, action=action)
            return self._refused(who, f"{operator.name} ({operator.role}) may not {action}.")
        if await run_in_threadpool(self._app.blasts.get, blast_id) is None:
            return self._refused(who, f"No blast {blast_id!r}.")
        try:
            await run_in_threadpool(
                perform, self._app, action, blast_id, Actor(operator.name, Source.DASHBOARD)
            )
        except InputError as exc:
            return await self._blast(who, blast_id, None, str(exc), 409)
        self.board.forget()
        log.info("dashboard.blast_action", blast_id=blast_id, action=action, by=operator.name)
        return RedirectResponse(
            f"/dashboard/blasts/{quote(blast_id, safe='')}?done={action}", status_code=303
        )

    async def events(self, request: Request) -> Response:
        """Server-Sent Events: the page's blasts every :data:`PUSH_EVERY_S` seconds."""
        who = await self._who(request)
        if who is None:
            return Response("log in first", status_code=401, headers=SECURITY_HEADERS)
        blast_id = request.query_params.get("blast") or None

        async def stream() -> AsyncIterator[str]:
            ends = time.monotonic() + STREAM_MAX_S
            yield "retry: 1000\n\n"
            while time.monotonic() < ends:
                blasts = await self.board.shared_look(blast_id)
                yield f"data: {json.dumps({'blasts': blasts}, separators=(',', ':'))}\n\n"
                if blast_id is not None and blasts and blasts[0]["status"] in ENDED_STATUSES:
                    yield "event: ended\ndata: {}\n\n"
                    return
                await asyncio.sleep(PUSH_EVERY_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )
