"""Rows in doubt: claimed by a sender that died (or gave them up) before writing an outcome.

Whether the provider got such a request is unknown from our side. The sweep settles them
within a minute instead of failing them after ten:

- SMS: Twilio's message log is asked (messages to the number, from the number the row
  would have used, since the claim) for the body we would have rendered. Found: the row is
  ``sent`` with Twilio's SID. Absent: it goes back to ``pending`` and onto its lane, and is
  sent once, by the ordinary path (claim, checks, pace). A dead process's request in flight
  has been answered or dropped long before: it is :data:`~queues.flow.inflight.ALIVE_S`
  silent, and a request times out after 10 s.
- Email: SendGrid offers no cheap lookup, so they end ``failed`` with ``lost_in_flight``
  (lost beats duplicate, docs/architecture.md).

Only rows no live sender holds are touched (:mod:`queues.flow.inflight`), and only once
they were claimed :data:`~messaging.ports.IN_FLIGHT_GRACE_S` ago.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from messaging.blasts.lifecycle import RowState
from messaging.blasts.winner import held_variants
from messaging.content.alert import Alert
from messaging.content.links import ShortLinks
from messaging.content.personalize import sms_body
from messaging.content.sms_encoding import normalize_for_gsm
from messaging.content.templates import RenderError
from messaging.ports import (
    IN_FLIGHT_GRACE_S,
    BlastRecord,
    Claimed,
    HeldRow,
    Outcome,
    ProgressCounters,
    SendingRow,
    SendQueue,
    enqueue_in_batches,
)
from messaging.providers.base import LoggedSms, SmsLog
from messaging.sending.sms import SmsConfig, first_contact_text

log = structlog.get_logger(__name__)

#: The error code of rows nobody can vouch for (email; SMS when Twilio cannot be asked).
LOST_IN_FLIGHT = "lost_in_flight"
#: How far before the claim the log is read: the clocks of our database and Twilio's differ.
CLOCK_SLACK_S = 120.0
#: A first-contact claim this close after a row's claim was that row's (given back when the
#: text turns out never to have gone, so the re-send still says who we are and how to stop).
FIRST_CONTACT_WINDOW_S = 60.0
#: Log lookups in flight at once (each is one Twilio GET).
LOOKUP_CONCURRENCY = 16


@dataclass
class InDoubtReport:
    """What one pass settled."""

    sms_found: int = 0
    sms_resent: int = 0
    email_lost: int = 0
    lookups_failed: int = 0
    by_blast: dict[str, int] = field(default_factory=dict)


class InDoubtLedger(Protocol):
    """What settling needs from the ledger (a subset of the ledger store)."""

    def sending_rows(self, blast_id: str, claimed_before: datetime) -> list[SendingRow]:
        """The blast's rows in ``sending``, claimed before ``claimed_before``."""
        ...

    def record(self, blast_id: str, channel: str, outcomes: Sequence[Outcome]) -> None:
        """Write outcomes (only rows still ``sending`` move)."""
        ...

    def release_first_contact(self, supporter_ids: Sequence[int]) -> None:
        """Give back first-contact claims."""
        ...


class InDoubtSettler:
    """Settles the in-doubt rows of a blast; see the module docstring."""

    def __init__(
        self,
        ledger: InDoubtLedger,
        queue: SendQueue,
        progress: ProgressCounters,
        *,
        sms_log: SmsLog | None = None,
        sms_config: SmsConfig | None = None,
        links: ShortLinks | None = None,
        grace_s: float = IN_FLIGHT_GRACE_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ledger = ledger
        self._queue = queue
        self._progress = progress
        self._sms_log = sms_log
        self._sms_config = sms_config
        #: The senders' short links: the text looked for has the same links.
        self._links = links
        self._grace_s = grace_s
        self._clock = clock

    @property
    def asks_twilio(self) -> bool:
        """True when SMS rows can be settled by asking Twilio (else they wait for STUCK_S)."""
        return self._sms_log is not None and self._sms_config is not None

    def settle(self, blast: BlastRecord, owned: set[HeldRow], report: InDoubtReport) -> int:
        """Settle the blast's rows that no live sender holds; returns how many."""
        cutoff = self._clock() - timedelta(seconds=self._grace_s)
        rows = [
            r
            for r in self._ledger.sending_rows(blast.blast_id, cutoff)
            if (blast.blast_id, r.channel, r.claimed.supporter_id) not in owned
        ]
        if not rows:
            return 0
        settled = self._settle_email(blast, [r for r in rows if r.channel == "email"], report)
        if self.asks_twilio:
            settled += self._settle_sms(blast, [r for r in rows if r.channel == "sms"], report)
        if settled:
            report.by_blast[blast.blast_id] = settled
        return settled

    def _write(self, blast: BlastRecord, channel: str, outcomes: list[Outcome]) -> None:
        deltas: dict[str, int] = {RowState.PENDING: 0}
        for o in outcomes:
            if o.state != RowState.PENDING:  # sending counts as pending in the counters
                deltas[RowState.PENDING] -= 1
                deltas[o.state] = deltas.get(o.state, 0) + 1
        self._progress.add(blast.blast_id, channel, deltas)
        self._ledger.record(blast.blast_id, channel, outcomes)

    def _settle_email(
        self, blast: BlastRecord, rows: list[SendingRow], report: InDoubtReport
    ) -> int:
        if not rows:
            return 0
        outcomes = [
            Outcome(
                r.claimed.supporter_id,
                RowState.FAILED,
                error_code=LOST_IN_FLIGHT,
                error="sender lost between claim and outcome; SendGrid cannot be asked, "
                "so not re-sent to avoid a duplicate",
            )
            for r in rows
        ]
        self._write(blast, "email", outcomes)
        report.email_lost += len(outcomes)
        log.warning("sweep.email_lost_in_flight", blast_id=blast.blast_id, rows=len(outcomes))
        return len(outcomes)

    def _settle_sms(self, blast: BlastRecord, rows: list[SendingRow], report: InDoubtReport) -> int:
        if not rows or blast.alert.sms is None:
            return 0
        assert self._sms_log is not None and self._sms_config is not None
        config, sms_log = self._sms_config, self._sms_log

        def lookup(row: SendingRow) -> tuple[SendingRow, list[LoggedSms] | None]:
            since = row.claimed_at.timestamp() - CLOCK_SLACK_S
            try:
                return row, sms_log.recent_to(
                    row.claimed.destination, config.sender_for(row.claimed.destination), since
                )
            except Exception as exc:  # Twilio away: this row waits for the next pass
                log.warning("sweep.sms_lookup_failed", error=str(exc)[:200])
                return row, None

        with ThreadPoolExecutor(max_workers=min(LOOKUP_CONCURRENCY, len(rows))) as pool:
            answers = list(pool.map(lookup, rows))
        sent: list[Outcome] = []
        again: list[int] = []
        release: list[int] = []
        for row, logged in answers:
            if logged is None:
                report.lookups_failed += 1
                continue
            c = row.claimed
            held = held_variants(
                self._links.store if self._links else None,
                blast.alert,
                blast.blast_id,
                "sms",
                [c.supporter_id],
            )
            match = _find(
                logged, _bodies(config, blast.alert, c, self._links, held.get(c.supporter_id))
            )
            if match is not None:
                sent.append(
                    Outcome(
                        c.supporter_id,
                        RowState.SENT,
                        provider_message_id=match.sid,
                        sender=match.from_number or config.sender_for(c.destination),
                    )
                )
                continue
            again.append(c.supporter_id)
            if c.first_sms_at is not None and _near(c.first_sms_at, row.claimed_at):
                release.append(c.supporter_id)
        if sent:
            self._write(blast, "sms", sent)
            report.sms_found += len(sent)
        if again:
            self._ledger.release_first_contact(release)
            self._write(blast, "sms", [Outcome(sid, RowState.PENDING) for sid in again])
            enqueue_in_batches(self._queue, blast.blast_id, "sms", blast.priority, again)
            report.sms_resent += len(again)
        if sent or again:
            log.warning(
                "sweep.sms_in_doubt_settled",
                blast_id=blast.blast_id,
                found_sent=len(sent),
                sent_again=len(again),
            )
        return len(sent) + len(again)


def _bodies(
    config: SmsConfig, alert: Alert, c: Claimed, links: ShortLinks | None, held: int | None
) -> set[str]:
    """The bodies the row's text could have had: plain, or as the supporter's first text."""
    try:
        body = sms_body(alert, c.supporter_id, c.fields, links, held)
    except RenderError:
        return set()
    return {normalize_for_gsm(body), normalize_for_gsm(first_contact_text(config.org_name, body))}


def _find(logged: list[LoggedSms], bodies: set[str]) -> LoggedSms | None:
    return next((m for m in logged if m.body in bodies), None)


def _near(first_sms_at: datetime, claimed_at: datetime) -> bool:
    delta = (first_sms_at - claimed_at).total_seconds()
    return -1.0 <= delta <= FIRST_CONTACT_WINDOW_S
