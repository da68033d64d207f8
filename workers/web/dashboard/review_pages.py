"""What operators look back on: inbound replies to review, and the audit log."""

from __future__ import annotations

from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from messaging.access.audit import Actor, AuditAction, Source
from messaging.access.operators import Permission
from messaging.compliance.replies import VERDICTS
from messaging.errors import InputError
from workers.web.dashboard.base import DashboardBase, Form, Who, posted, signed_in

#: Audit entries per page (the audit store returns at most 1000: 20 pages).
AUDIT_PAGE: Final = 50
AUDIT_MAX_PAGES: Final = 20


class ReviewPages(DashboardBase):
    """``/dashboard/replies`` (and their review) and ``/dashboard/audit``."""

    @signed_in
    async def replies_page(self, request: Request, who: Who) -> Response:
        """Replies needing review (``?all=1``: every recent reply)."""
        every = request.query_params.get("all") == "1"
        replies = await run_in_threadpool(
            self._app.replies.replies, needs_review=not every, limit=200
        )
        return self._page(
            "replies.html",
            **self._context(
                *who,
                replies=replies,
                every=every,
                verdicts=VERDICTS,
                title="Replies",
                nav="replies",
            ),
        )

    @posted
    async def review(self, request: Request, who: Who, form: Form) -> Response:
        """Record a verdict on a reply (approvers); a lifted suppression is audited."""
        operator = who[1]
        if not operator.may(Permission.APPROVE):
            return self._refused(who, f"{operator.name} may not review replies.")
        verdict = form.get("verdict", "")
        reply_id = int(request.path_params["reply_id"])
        if verdict not in VERDICTS:
            return self._refused(who, "Choose a verdict.")
        try:
            done = await run_in_threadpool(
                self._app.replies.review, reply_id, verdict, operator.name
            )
        except InputError as exc:
            return self._refused(who, str(exc))
        if done.lifted:
            await run_in_threadpool(
                self._app.audit.record,
                Actor(operator.name, Source.DASHBOARD),
                AuditAction.OPTOUT_REMOVED,
                value=done.reply.from_number,
                detail=f"reply {reply_id} reviewed: {verdict}",
            )
        return RedirectResponse("/dashboard/replies", status_code=303)

    @signed_in
    async def audit_page(self, request: Request, who: Who) -> Response:
        """The audit log, newest first, :data:`AUDIT_PAGE` entries a page."""
        raw = request.query_params.get("page", "1")
        page = int(raw) if raw.isascii() and raw.isdigit() else 1
        page = min(max(page, 1), AUDIT_MAX_PAGES)
        entries = await run_in_threadpool(self._app.audit.entries, limit=page * AUDIT_PAGE + 1)
        shown = entries[(page - 1) * AUDIT_PAGE : page * AUDIT_PAGE]
        more = len(entries) > page * AUDIT_PAGE and page < AUDIT_MAX_PAGES
        return self._page(
            "audit.html",
            **self._context(
                *who, entries=shown, page=page, more=more, title="Audit log", nav="audit"
            ),
        )
