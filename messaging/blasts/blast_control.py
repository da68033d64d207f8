"""Operator actions on a blast: pause, resume, cancel, approve, reject, and the re-drive.

Each is a :class:`~messaging.blasts.lifecycle.BlastLifecycle` transition (the database first, then
the fleet-wide Redis copy senders read before each provider call, so it takes effect
everywhere within a second); this module adds what an operator needs to hear when the
blast's status does not allow it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from messaging.blasts.lifecycle import CANCEL_DRAIN_S, BlastLifecycle, BlastStatus, PauseReason
from messaging.errors import InputError
from messaging.ports import BlastControl, BlastRecord, BlastStore, LedgerStore, SendQueue


@dataclass
class BlastActions:
    """Pause, resume, cancel, approve, reject and re-drive, wired to the stores and queue."""

    blasts: BlastStore
    ledger: LedgerStore
    queue: SendQueue
    control: BlastControl
    lifecycle: BlastLifecycle = field(init=False)

    def __post_init__(self) -> None:
        self.lifecycle = BlastLifecycle(self.blasts, self.ledger, self.control, self.queue)

    def _get(self, blast_id: str) -> BlastRecord:
        blast = self.blasts.get(blast_id)
        if blast is None:
            raise InputError(f"no blast {blast_id!r}")
        return blast

    def pause(
        self, blast_id: str, reason: PauseReason = PauseReason.OPERATOR, detail: str | None = None
    ) -> BlastRecord:
        """Stop sending; what is pending stays pending."""
        blast = self._get(blast_id)
        if not self.lifecycle.pause(blast_id, reason, detail):
            raise InputError(
                f"blast {blast_id} is {blast.status}; only a sending blast can be paused"
            )
        return self._get(blast_id)

    def resume(self, blast_id: str) -> BlastRecord:
        """Send again; nothing already sent is sent again (the ledger claims hold)."""
        blast = self._get(blast_id)
        if not self.lifecycle.resume(blast_id):
            raise InputError(
                f"blast {blast_id} is {blast.status}; only a paused blast can be resumed"
            )
        return self._get(blast_id)

    def cancel(self, blast_id: str, *, drain_s: float = CANCEL_DRAIN_S) -> BlastRecord:
        """Stop for good; every recipient not yet handed to a provider ends ``canceled``."""
        blast = self._get(blast_id)
        if blast.ended:
            if blast.status == BlastStatus.CANCELED:  # repeat the close a crash may have cut
                self.lifecycle.cancel(blast_id, drain_s=0)
            raise InputError(f"blast {blast_id} has already ended ({blast.status})")
        if not self.lifecycle.cancel(blast_id, drain_s=drain_s):
            raise InputError(f"blast {blast_id} has already ended ({self._get(blast_id).status})")
        return self._get(blast_id)

    def approve(self, blast_id: str, approved_by: str) -> BlastRecord:
        """Let a blast that waits for approval send; its requester may not approve it."""
        blast = self._get(blast_id)
        if blast.requested_by is not None and blast.requested_by == approved_by:
            raise InputError(f"blast {blast_id} needs an approver other than its requester")
        if not self.lifecycle.approve(blast_id, approved_by):
            raise InputError(f"blast {blast_id} is {blast.status}; it is not awaiting approval")
        return self._get(blast_id)

    def reject(self, blast_id: str, *, drain_s: float = CANCEL_DRAIN_S) -> BlastRecord:
        """Refuse a blast that waits for approval: it ends ``canceled``, nothing sent."""
        blast = self._get(blast_id)
        if blast.status != BlastStatus.AWAITING_APPROVAL:
            raise InputError(f"blast {blast_id} is {blast.status}; it is not awaiting approval")
        return self.cancel(blast_id, drain_s=drain_s)

    def redrive(self, blast: BlastRecord) -> int:
        """Queue send work for every pending row of a blast; returns the rows queued."""
        return self.lifecycle.redrive(blast)
