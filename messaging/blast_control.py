"""Operator actions on a blast: pause, resume, cancel, and the re-drive they share.

Every action writes the system of record first, then the fleet-wide copy in Redis that
senders read before each provider call, so it takes effect everywhere within a second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from messaging import states
from messaging.errors import InputError
from messaging.store.blasts import BlastRecord, BlastStore
from messaging.store.ledger import Ledger
from queues.flow.control import BlastControl
from queues.sendqueue import BATCH_SIZE, SendQueue, enqueue_in_batches

log = structlog.get_logger(__name__)

#: How long a cancel waits for sends already in flight (each is one provider call) to land.
CANCEL_DRAIN_S = 15.0


@dataclass
class BlastActions:
    """Pause, resume, cancel and re-drive, wired to the stores and the queue."""

    blasts: BlastStore
    ledger: Ledger
    queue: SendQueue
    control: BlastControl

    def _get(self, blast_id: str) -> BlastRecord:
        blast = self.blasts.get(blast_id)
        if blast is None:
            raise InputError(f"no blast {blast_id!r}")
        return blast

    def pause(self, blast_id: str) -> BlastRecord:
        """Stop sending; what is pending stays pending."""
        blast = self._get(blast_id)
        if not self.blasts.set_status(
            blast_id, states.PAUSED, only_from=[states.SENDING_BLAST, states.EXPANDING]
        ):
            raise InputError(
                f"blast {blast_id} is {blast.status}; only a sending blast can be paused"
            )
        self.control.set(blast_id, states.PAUSED)
        log.info("blast.paused", blast_id=blast_id)
        return self._get(blast_id)

    def resume(self, blast_id: str) -> BlastRecord:
        """Send again; nothing already sent is sent again (the ledger claims hold)."""
        blast = self._get(blast_id)
        target = states.SENDING_BLAST if blast.expanded_at else states.EXPANDING
        if not self.blasts.set_status(blast_id, target, only_from=[states.PAUSED]):
            raise InputError(
                f"blast {blast_id} is {blast.status}; only a paused blast can be resumed"
            )
        self.control.set(blast_id, target)
        queued = self.redrive(self._get(blast_id))
        log.info("blast.resumed", blast_id=blast_id, requeued=queued)
        return self._get(blast_id)

    def cancel(self, blast_id: str, *, drain_s: float = CANCEL_DRAIN_S) -> BlastRecord:
        """Stop for good; every recipient not yet handed to a provider ends ``canceled``.

        The fleet-wide switch flips first, so senders stop within a second. The blast is
        recorded as canceled once the sends that were already in flight have landed, so
        that an ended blast never shows recipients pending (contract §6).
        """
        blast = self._get(blast_id)
        if blast.ended:
            raise InputError(f"blast {blast_id} has already ended ({blast.status})")
        self.control.set(blast_id, states.CANCELED_BLAST)
        closed = self.ledger.close_open(
            blast_id, states.CANCELED, [states.PENDING, states.DEFERRED]
        )
        deadline = time.monotonic() + drain_s
        while self.ledger.has_state(blast_id, states.SENDING) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.blasts.set_status(blast_id, states.CANCELED_BLAST)
        # Rows a racing batch put back to pending while we waited.
        closed += self.ledger.close_open(
            blast_id, states.CANCELED, [states.PENDING, states.DEFERRED]
        )
        log.info("blast.canceled", blast_id=blast_id, closed=closed)
        return self._get(blast_id)

    def redrive(self, blast: BlastRecord) -> int:
        """Queue send work for every pending row of a blast; returns the rows queued."""
        queued = 0
        for channel in blast.alert.channels:
            after = 0
            while ids := self.ledger.open_ids(
                blast.blast_id, channel, states.PENDING, after, BATCH_SIZE[channel] * 10
            ):
                enqueue_in_batches(self.queue, blast.blast_id, channel, blast.priority, ids)
                queued += len(ids)
                after = ids[-1]
        return queued
