"""The two-person rule (contract §11): big blasts wait until a second operator approves.

A blast whose audience, after consent, suppression, households and caps, holds more
messages than the threshold is expanded as usual, but its send work is not queued: it waits
as ``awaiting_approval`` with its dry-run figures (counts, segments, cost, ETA and a
rendered sample) in its stats. Another operator than its requester approves it (the work is
queued at once) or rejects it (it is canceled). Test sends and dry runs never wait.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import structlog

from messaging.audit import AuditAction, AuditLog
from messaging.errors import InputError
from messaging.lifecycle import BlastStatus

if TYPE_CHECKING:
    from messaging.alert import Alert
    from messaging.audit import Actor
    from messaging.lifecycle import BlastLifecycle
    from messaging.ports import BlastReads, BlastRecord

log = structlog.get_logger(__name__)

#: Who requested an alert published straight to SNS without ``requested_by``.
SNS_REQUESTER: Final = "sns"


def requester(alert: Alert) -> str:
    """The operator who asked for an alert (``sns`` when it does not say)."""
    return alert.requested_by or SNS_REQUESTER


def needs_approval(alert: Alert, threshold: int | None, upper_bound: int) -> bool:
    """Whether a blast may have to wait, known before expansion: ``upper_bound`` is a count
    its messages cannot exceed (subscribers × channels). Test sends and dry runs never wait;
    ``threshold`` None is ``off``."""
    if threshold is None or alert.dry_run or alert.test_recipients:
        return False
    return upper_bound > threshold


def over_threshold(pending: Mapping[str, int], threshold: int | None) -> bool:
    """Whether the messages a blast would send (pending rows, all channels) exceed the
    threshold. 0 holds every blast, even an empty one (an operator asked for that)."""
    if threshold is None:
        return False
    total = sum(pending.values())
    return total > threshold or threshold == 0


class Approvals:
    """Approve and reject blasts awaiting approval, and record who did."""

    def __init__(self, blasts: BlastReads, lifecycle: BlastLifecycle, audit: AuditLog) -> None:
        self._blasts = blasts
        self._lifecycle = lifecycle
        self._audit = audit

    def _awaiting(self, blast_id: str, verb: str) -> BlastRecord:
        blast = self._blasts.get(blast_id)
        if blast is None:
            raise InputError(f"no blast {blast_id!r}")
        if blast.status != BlastStatus.AWAITING_APPROVAL:
            raise InputError(
                f"blast {blast_id} is {blast.status}; only a blast awaiting approval can be {verb}"
            )
        return blast

    def approve(self, blast_id: str, actor: Actor) -> None:
        """Start sending a waiting blast; refused to its own requester."""
        blast = self._awaiting(blast_id, "approved")
        asked_by = requester(blast.alert)
        if actor.name == asked_by:
            raise InputError(
                f"blast {blast_id} was requested by {asked_by}: another operator must "
                "approve it (two-person rule)"
            )
        if not self._lifecycle.approve(blast_id, actor.name):
            raise InputError(f"blast {blast_id} is no longer awaiting approval")
        self._audit.record(
            actor, AuditAction.BLAST_APPROVED, blast_id=blast_id, detail=f"requested by {asked_by}"
        )
        log.info("blast.approved_by", blast_id=blast_id, operator=actor.name)

    def reject(self, blast_id: str, actor: Actor) -> None:
        """Cancel a waiting blast (its requester may withdraw it too)."""
        blast = self._awaiting(blast_id, "rejected")
        if not self._lifecycle.cancel(blast_id):
            raise InputError(f"blast {blast_id} is no longer awaiting approval")
        self._audit.record(
            actor,
            AuditAction.BLAST_REJECTED,
            blast_id=blast_id,
            detail=f"requested by {requester(blast.alert)}",
        )
