"""The two-person rule (contract §11): big blasts wait until a second operator approves.

A blast whose audience, after consent, suppression, households and caps, holds more
messages than the threshold is expanded as usual, but its send work is not queued: it waits
as ``awaiting_approval`` with its dry-run figures (counts, segments, cost, ETA and a
rendered sample) in its stats. Another operator than its requester approves it (the work is
queued at once) or rejects it (it is canceled). Test sends and dry runs never wait.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from messaging.access.audit import AuditAction, AuditLog
from messaging.blasts.lifecycle import BlastStatus
from messaging.errors import InputError

if TYPE_CHECKING:
    from messaging.access.audit import Actor
    from messaging.blasts.dry_run import DryRunConfig
    from messaging.blasts.lifecycle import BlastLifecycle
    from messaging.content.alert import Alert
    from messaging.ports import BlastReads, BlastRecord, PendingView

log = structlog.get_logger(__name__)

#: Who requested an alert published straight to SNS without ``requested_by``.
SNS_REQUESTER: Final = "sns"


def requester(alert: Alert) -> str:
    """The operator who asked for an alert (``sns`` when it does not say)."""
    return alert.requested_by or SNS_REQUESTER


def needs_approval(alert: Alert, threshold: int | None, upper_bound: int) -> bool:
    """Whether a blast may have to wait, known before expansion: ``upper_bound`` is a count
    its messages cannot exceed (the audience's consenting, reachable members per channel,
    before suppression and households). Test sends and dry runs never wait; ``threshold``
    None is ``off``; 0 is every blast."""
    if threshold is None or alert.dry_run or alert.test_recipients:
        return False
    return threshold == 0 or upper_bound > threshold


def over_threshold(pending: Mapping[str, int], threshold: int | None) -> bool:
    """Whether the messages a blast would send (its pending rows, all channels together,
    after consent, suppression, households and caps) exceed the threshold (0: always)."""
    if threshold is None:
        return False
    return threshold == 0 or sum(pending.values()) > threshold


#: Recipients whose messages a blast awaiting approval shows rendered.
SAMPLE_RECIPIENTS: Final = 2


@dataclass(frozen=True, slots=True)
class ApprovalGate:
    """What expansion asks: may this blast have to wait, and, once expanded, does it?"""

    #: ``RAPID_APPROVAL_THRESHOLD``: None is ``off``.
    threshold: int | None
    #: The dry-run figures a waiting blast shows (prices, rates, quiet hours).
    dry_run: DryRunConfig

    def may_hold(self, alert: Alert, audience_stats: Mapping[str, Any]) -> bool:
        """Before expansion: True when the blast might exceed the threshold, so its send
        work must wait for the final count (``audience_stats`` as the ledger reports it)."""
        bound = sum(int(audience_stats.get(c, {}).get("eligible", 0)) for c in alert.channels)
        return needs_approval(alert, self.threshold, bound)

    def holds(self, pending: Mapping[str, int]) -> bool:
        """After expansion: True when the blast must wait for a second operator."""
        return over_threshold(pending, self.threshold)

    def preview(self, view: PendingView, alert: Alert) -> dict[str, Any]:
        """What the approver sees: the dry-run estimate (recipients, segments, cost, ETA)
        and the messages of :data:`SAMPLE_RECIPIENTS` recipients, rendered."""
        from messaging.blasts.dry_run import estimate

        return {
            "threshold": self.threshold,
            "estimate": estimate(view, alert, self.dry_run),
            "sample": render_sample(view, alert),
        }


def render_sample(view: PendingView, alert: Alert) -> list[dict[str, str]]:
    """The first recipients' messages as they would go out (first-contact text aside)."""
    from messaging.content.templates import SMS_RENDERED_MAX_CHARS, RenderError, render

    samples: list[dict[str, str]] = []
    for channel in alert.channels:
        for fields in view.sample(channel, SAMPLE_RECIPIENTS):
            item = {"channel": channel, "external_id": str(fields.get("external_id", ""))}
            try:
                if channel == "sms" and alert.sms is not None:
                    item["body"] = render(alert.sms.body, fields, max_chars=SMS_RENDERED_MAX_CHARS)
                elif alert.email is not None:
                    item["subject"] = render(alert.email.subject, fields)
                    if alert.email.text:
                        item["text"] = render(alert.email.text, fields)
            except RenderError as exc:
                item["error"] = str(exc)
            samples.append(item)
    return samples


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
