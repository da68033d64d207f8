"""Intake: an SQS message becomes (at most) one blast, expanded into the ledger.

Idempotent end to end: the alert id is the blast's primary key, expansion resumes from its
cursor and writes nothing twice, and the SQS message is deleted only after expansion has
committed, so a crash anywhere means a redelivery that finishes the job.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from messaging import states
from messaging.alert import parse_alert
from messaging.dry_run import DryRunConfig
from messaging.errors import InputError
from messaging.expansion import Expander
from messaging.store.blasts import BlastRecord, BlastStore
from messaging.store.ledger import Ledger
from queues.envelope import unwrap
from queues.flow.control import BlastControl
from queues.names import Names
from queues.sendqueue import SendQueue

log = structlog.get_logger(__name__)


class Intake:
    """Turns intake-queue message bodies into blasts."""

    def __init__(
        self,
        names: Names,
        blasts: BlastStore,
        ledger: Ledger,
        queue: SendQueue,
        control: BlastControl,
        dry_run: DryRunConfig | None = None,
    ) -> None:
        self._dry_run = dry_run
        self._names = names
        self._blasts = blasts
        self._ledger = ledger
        self._queue = queue
        self._control = control

    def handle(self, body: str, heartbeat: Callable[[], None] = lambda: None) -> BlastRecord:
        """Accept one message body; :class:`InputError` if it is not a valid alert."""
        unwrapped = unwrap(body, self._names)
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
        if blast.expanded_at is not None or blast.status in states.ENDED_STATUSES:
            return blast  # a redelivery of an alert we already finished with
        self._control.set(blast.blast_id, blast.status)
        if created:
            bound.info(
                "intake.accepted",
                priority=alert.priority,
                channels=alert.channels,
                dry_run=alert.dry_run,
                test=bool(alert.test_recipients),
                form=unwrapped.form,
            )
        Expander(
            self._ledger,
            self._blasts,
            self._queue,
            heartbeat=heartbeat,
            dry_run=self._dry_run,
            progress=self._control.progress,
        ).expand(blast)
        current = self._blasts.get(blast.blast_id)
        assert current is not None
        if alert.expired() and current.status == states.SENDING_BLAST:
            # Published after its own deadline: every recipient ends expired, nothing goes out.
            self._ledger.close_open(
                current.blast_id, states.EXPIRED, [states.PENDING, states.DEFERRED]
            )
            self._blasts.set_status(current.blast_id, states.EXPIRED_BLAST)
        elif current.status == states.SENDING_BLAST and not self._ledger.has_open(current.blast_id):
            self._blasts.set_status(
                current.blast_id, states.COMPLETED, only_from=[states.SENDING_BLAST]
            )
        final = self._blasts.get(blast.blast_id)
        assert final is not None
        self._control.set(final.blast_id, final.status)
        return final
