"""A provider refusing our credentials is a fleet event, not a per-recipient retry.

When Twilio or SendGrid answers 401/403, every further call would be refused the same way
until an operator fixes the secret. So the first sender to see it pauses every running
blast that uses the channel, fleet-wide, with ``pause_reason: provider_auth`` and a
one-line ``pause_detail``; the refused recipients go back to ``pending`` (nothing is counted
failed for it) and ``rapid blast resume`` after the fix sends each of them once (the
ledger's claims hold). Each automatic pause is in the audit log, from ``fleet``.
"""

from __future__ import annotations

from typing import Protocol

import structlog

from messaging.access.audit import Actor, AuditAction, AuditLog, Source
from messaging.blasts.lifecycle import BlastStatus, PauseReason
from messaging.ports import BlastReads

log = structlog.get_logger(__name__)

#: The audit log's actor for pauses the fleet makes by itself.
FLEET = Actor("fleet", Source.FLEET)
#: Blast statuses a refusal pauses (the others send nothing, or have ended).
RUNNING = (BlastStatus.SENDING, BlastStatus.EXPANDING)


class Pauser(Protocol):
    """The one move this needs from the blast lifecycle."""

    def pause(
        self, blast_id: str, reason: PauseReason = PauseReason.OPERATOR, detail: str | None = None
    ) -> bool:
        """``expanding|sending → paused`` with why; True if it moved."""
        ...


class ProviderAuthPause:
    """Called with ``(channel, detail)`` by a sender that met a 401/403 (see
    :meth:`messaging.sending.common.SendContext.provider_refused`)."""

    def __init__(self, blasts: BlastReads, lifecycle: Pauser, audit: AuditLog | None) -> None:
        self._blasts = blasts
        self._lifecycle = lifecycle
        self._audit = audit

    def __call__(self, channel: str, detail: str) -> list[str]:
        """Pause every running blast that sends ``channel``; returns the blasts paused."""
        why = f"{channel} provider refused our credentials: {detail}"[:300]
        paused = []
        for status in RUNNING:
            for blast_id in self._blasts.ids_with_status(status):
                blast = self._blasts.get(blast_id)
                if blast is None or channel not in blast.alert.channels:
                    continue
                if not self._lifecycle.pause(blast_id, PauseReason.PROVIDER_AUTH, why):
                    continue  # paused, canceled or ended meanwhile
                paused.append(blast_id)
                if self._audit is not None:
                    self._audit.record(
                        FLEET,
                        AuditAction.BLAST_PAUSED,
                        blast_id=blast_id,
                        detail={"reason": PauseReason.PROVIDER_AUTH.value, "detail": why},
                    )
        if paused:
            log.error("fleet.paused_provider_auth", channel=channel, blasts=paused, detail=why)
        return paused
