"""The compose page: dry run (preview on the form), test send, or send an alert.

What the form means as an alert is :mod:`.compose`; this module is the page around it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from messaging.access.operators import Permission
from messaging.blasts.lifecycle import ENDED_STATUSES
from messaging.errors import InputError
from workers.web.dashboard.base import DashboardBase, Form, Who, posted, signed_in
from workers.web.dashboard.compose import PRIORITIES, Mode, alert_to_publish, form_values

log = structlog.get_logger(__name__)

#: How long the compose page waits for a published alert to be recorded (and a dry run
#: counted) before it answers anyway.
PUBLISH_WAIT_S: Final = 20.0


class ComposePages(DashboardBase):
    """``/dashboard/compose``."""

    @signed_in
    async def compose_page(self, request: Request, who: Who) -> Response:
        """The compose form (senders and up)."""
        return await self._compose_form(who, form_values({}), None, None, 200)

    async def _compose_form(
        self,
        who: Who,
        values: dict[str, str],
        preview: dict[str, Any] | None,
        error: str | None,
        status: int,
    ) -> Response:
        topics = await run_in_threadpool(self._app.stores.topics.names)
        return self._page(
            "compose.html",
            status=status,
            **self._context(
                *who,
                values=values,
                topics=topics,
                priorities=PRIORITIES,
                preview=preview,
                error=error,
                threshold=self._app.settings.approval_threshold,
                title="Compose",
                nav="compose",
            ),
        )

    @posted
    async def compose(self, request: Request, who: Who, form: Form) -> Response:
        """Dry run (the preview is shown on the form), test send, or send."""
        operator = who[1]
        values = form_values(form)
        if not operator.may(Permission.SEND):
            return self._refused(who, f"{operator.name} ({operator.role}) may not send.")
        try:
            mode = Mode(form.get("mode", ""))
            topic, document = await run_in_threadpool(alert_to_publish, values, mode, operator.name)
            from messaging.blasts.services import publish_alert

            await run_in_threadpool(
                publish_alert, self._app.stores.topics, self._app.publisher, topic, document
            )
        except ValueError:  # an unknown mode
            return await self._compose_form(who, values, None, "Choose an action.", 422)
        except InputError as exc:
            return await self._compose_form(who, values, None, str(exc), 422)
        blast_id = document["alert_id"]
        log.info("dashboard.alert_published", blast_id=blast_id, mode=mode.value)
        if mode is Mode.DRY_RUN:
            preview = await self._wait_dry_run(blast_id)
            return await self._compose_form(who, values, preview, None, 200)
        # The intake records the blast within a second or two: land on its page once it has.
        await self._wait(blast_id, lambda found: bool(found))
        return RedirectResponse(f"/dashboard/blasts/{quote(blast_id, safe='')}", status_code=303)

    async def _wait_dry_run(self, blast_id: str) -> dict[str, Any]:
        """The dry run's summary once the intake has counted it (or as far as it got)."""
        found = await self._wait(
            blast_id, lambda found: bool(found) and found[0]["status"] in ENDED_STATUSES
        )
        return found[0] if found else {"blast_id": blast_id, "status": "not recorded yet"}

    async def _wait(
        self, blast_id: str, done: Callable[[list[dict[str, Any]]], bool]
    ) -> list[dict[str, Any]]:
        """Look at a just-published blast until ``done`` (or :data:`PUBLISH_WAIT_S`)."""
        deadline = time.monotonic() + PUBLISH_WAIT_S
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = await run_in_threadpool(self.board.look, blast_id)
            if done(found):
                break
            await asyncio.sleep(0.25)
        return found
