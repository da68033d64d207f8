"""What the HTTP API exposes: its blast actions, the permission each route needs, its limits.

One table that the handlers (:mod:`workers.web.api`), the OpenAPI description
(:mod:`workers.web.openapi`), the dashboard and the roles test all read.
"""

from __future__ import annotations

from typing import Final

from messaging.access.operators import Permission

#: Blast actions the API exposes: the first three are methods of
#: :class:`~messaging.blasts.blast_control.BlastActions`, the last two of
#: :class:`~messaging.blasts.approval.Approvals`.
BLAST_ACTIONS: Final = ("cancel", "pause", "resume", "approve", "reject")
#: What each route requires (contract §11); the roles matrix test walks this table.
ROUTE_PERMISSIONS: Final[dict[tuple[str, str], Permission]] = {
    ("POST", "/api/alerts"): Permission.SEND,
    ("GET", "/api/blasts"): Permission.READ,
    ("GET", "/api/blasts/{blast_id}"): Permission.READ,
    ("GET", "/api/blasts/{blast_id}/export"): Permission.READ,
    ("GET", "/api/audit"): Permission.READ,
    ("GET", "/api/replies"): Permission.READ,
    # Reviewing may lift a suppression the reply caused: an approver's call.
    ("POST", "/api/replies/{reply_id}/review"): Permission.APPROVE,
    **{("POST", f"/api/blasts/{{blast_id}}/{a}"): Permission(a) for a in BLAST_ACTIONS},
}
#: Most blasts ``GET /api/blasts`` returns at once.
MAX_LIST_LIMIT: Final = 200
#: Most replies ``GET /api/replies`` returns at once.
MAX_REPLIES_LIMIT: Final = 1000
#: Most entries ``GET /api/audit`` returns at once.
MAX_AUDIT_LIMIT: Final = 1000
