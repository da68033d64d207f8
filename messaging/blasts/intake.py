"""Intake: an SQS message becomes (at most) one blast, expanded into the ledger.

Idempotent end to end: the alert id is the blast's primary key, expansion resumes from its
cursor and writes nothing twice, and the SQS message is deleted only after expansion has
committed, so a crash anywhere means a redelivery that finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from messaging.access.audit import SNS_ACTOR, Actor, AuditAction, AuditLog, Source
from messaging.blasts.approval import ApprovalGate
from messaging.blasts.dry_run import DryRunConfig
from messaging.blasts.expansion import Expander
from messaging.blasts.first_pages import FirstPagesFirst
from messaging.blasts.lifecycle import ENDED_STATUSES, BlastLifecycle, BlastStatus
from messaging.compliance.frequency_caps import FrequencyCaps
from messaging.content.alert import Alert, parse_alert
from messaging.errors import InputError
from messaging.ports import (
    BlastControl,
    BlastRecord,
    BlastStore,
    LedgerStore,
    SendQueue,
    TopicStore,
    Unwrap,
)

log = structlog.get_logger(__name__)


def requested_actor(alert: Alert) -> Actor:
    """Who asked for an alert and through what: our publishers say so in the alert; one
    published straight to SNS without ``requested_by`` is requested by ``sns``."""
    if alert.requested_by is None:
        return SNS_ACTOR
    return Actor(alert.requested_by, Source(alert.requested_via or Source.SNS))


class Intake:
    """Turns intake-queue message bodies into blasts."""

    def __init__(
        self,
        unwrap: Unwrap,
        blasts: BlastStore,
        ledger: LedgerStore,
        queue: SendQueue,
        control: BlastControl,
        dry_run: DryRunConfig | None = None,
        *,
        approval: ApprovalGate | None = None,
        audit: AuditLog | None = None,
        caps: FrequencyCaps | None = None,
        topics: TopicStore | None = None,
    ) -> None:
        self._dry_run = dry_run
        self._caps = caps
        self._topics = topics
        self._approval = approval
        self._audit = audit
        #: The transport's envelope reader (``queues.envelope.unwrap``), injected.
        self._unwrap = unwrap
        self._blasts = blasts
        self._ledger = ledger
        self._queue = queue
        self._control = control
        self._lifecycle = BlastLifecycle(blasts, ledger, control, queue)
        #: This process's alerts short of their first page go before later pages.
        self.first_pages = FirstPagesFirst()

    def handle(self, body: str, heartbeat: Callable[[], None] = lambda: None) -> BlastRecord:
        """Accept one message body; :class:`InputError` if it is not a valid alert."""
        first_page_done = self.first_pages.arrived()
        try:
            return self._handle(body, heartbeat, first_page_done)
        finally:
            first_page_done()  # no page, a duplicate, scheduled, failed: nothing to wait for

    def _handle(
        self, body: str, heartbeat: Callable[[], None], first_page_done: Callable[[], None]
    ) -> BlastRecord:
        unwrapped = self._unwrap(body)
        alert = parse_alert(
            unwrapped.payload, fallback_id=unwrapped.message_id, topic=unwrapped.topic
        )
        topic = unwrapped.topic or alert.topic
        if topic is None:
            raise InputError('raw delivery carries no topic: add "topic" to the alert')
        blast, created = self._blasts.create(alert, topic, unwrapped.message_id)
        bound = log.bind(blast_id=blast.blast_id, topic=topic)
        if not created:
            bound.info("intake.duplicate_alert", status=blast.status, form=unwrapped.form)
        if blast.expanded_at is not None or blast.status in ENDED_STATUSES:
            return blast  # a redelivery of an alert we already finished with
        self._lifecycle.mirror(blast.blast_id)
        if created:
            bound.info(
                "intake.accepted",
                priority=alert.priority,
                channels=alert.channels,
                dry_run=alert.dry_run,
                test=bool(alert.test_recipients),
                form=unwrapped.form,
            )
            if self._audit is not None:
                self._audit.record(
                    requested_actor(alert), AuditAction.ALERT_SENT, blast_id=blast.blast_id
                )
        if blast.status == BlastStatus.SCHEDULED:
            # Kept in the blasts table until ``send_at``; the scheduler releases and expands
            # it (:mod:`messaging.blasts.scheduled`), so the queue message is done with.
            bound.info("intake.scheduled", send_at=str(blast.send_at))
            return blast
        return self.expand(blast, heartbeat, first_page_done)

    def expand(
        self,
        blast: BlastRecord,
        heartbeat: Callable[[], None] = lambda: None,
        first_page_done: Callable[[], None] | None = None,
    ) -> BlastRecord:
        """Expand ``blast`` into the ledger and queue its work (or resume an expansion cut
        short), then complete or expire it as its audience and deadline say. Also how the
        scheduler sends a released scheduled blast."""
        alert = blast.alert
        Expander(
            self._ledger,
            self._blasts,
            self._queue,
            heartbeat=heartbeat,
            dry_run=self._dry_run,
            progress=self._control.progress,
            lifecycle=self._lifecycle,
            approval=self._approval,
            caps=self._caps,
            topics=self._topics,
            first_page_done=first_page_done,
            hold_later_page=self.first_pages.hold,
        ).expand(blast)
        if alert.expired():
            # Published after its own deadline: every recipient ends expired, nothing goes out.
            self._lifecycle.expire(blast.blast_id)
        else:
            self._lifecycle.complete(blast.blast_id)  # an audience with nothing to send
        final = self._blasts.get(blast.blast_id)
        assert final is not None
        return final
