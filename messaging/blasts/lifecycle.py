"""The blast lifecycle: every status a blast and a ledger row can be in, and every move.

Blast statuses (``blasts.status``)::

    scheduled ──send_at──▶ expanding ──expanded──▶ sending ──nothing owed──▶ completed
                              │    └──over threshold──▶ awaiting_approval ──approve──▶ sending
                              └──pause──▶ paused ◀──pause── sending
                                            └──resume──▶ sending (or expanding, if not expanded)
    any status that has not ended ──cancel (or reject)──▶ canceled
    any status that has not ended except expanding ──send_by passed──▶ expired

Ledger row states (``deliveries.state``; the picture is in ``docs/architecture.md``)::

    pending ──claim──▶ sending ──provider accepted──▶ sent ──callback──▶ delivered | failed
       │                  ├──refused / template failed──▶ failed
       │                  ├──suppressed since expansion──▶ suppressed
       │                  ├──quiet hours──▶ deferred ──window ends──▶ pending
       │                  └──transient error, rate horizon full, paused──▶ pending
       ├──blast canceled──▶ canceled
       └──send_by passed──▶ expired
    duplicate, suppressed, capped: decided at expansion; fallback: the SMS was replaced by
    the alert's email (quiet hours fallback).

Every blast transition goes through :class:`BlastLifecycle`, always in this order:

1. the database, with a conditional update (``… WHERE status IN (allowed sources)``) that
   says whether the blast moved; nothing else happens when it did not;
2. the fleet-wide Redis copy of the status (:class:`~messaging.ports.BlastControl`), which
   senders read before every provider call;
3. counters and the log.

So the system of record is never behind Redis: a crash between 1 and 2 leaves the fleet
one step behind a database that is right, and repeating the action (or the sweep, which
re-mirrors every live blast) puts the copy right. StrEnum values are the strings stored in
the database, so stored data reads back equal to the members.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import structlog

from messaging.ports import BATCH_SIZE, enqueue_in_batches

if TYPE_CHECKING:
    from messaging.ports import BlastControl, BlastRecord, BlastStore, LedgerStore, SendQueue

log = structlog.get_logger(__name__)


class BlastStatus(StrEnum):
    """Where a blast is in its life (contract §6 ``status``)."""

    #: Published with ``send_at`` in the future; nothing expanded yet.
    SCHEDULED = "scheduled"
    EXPANDING = "expanding"
    #: Expanded, over the approval threshold: sends nothing until a second operator approves.
    AWAITING_APPROVAL = "awaiting_approval"
    SENDING = "sending"
    #: Sends nothing; ``pause_reason`` says why (:class:`PauseReason`).
    PAUSED = "paused"
    CANCELED = "canceled"
    COMPLETED = "completed"
    EXPIRED = "expired"


class RowState(StrEnum):
    """Where one ledger row (one recipient on one channel) is."""

    PENDING = "pending"
    #: Claimed by a sender, provider call in flight. Counted as pending until it lands.
    SENDING = "sending"
    SENT = "sent"
    #: A refinement of sent: the carrier or mailbox confirmed delivery.
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"
    DEFERRED = "deferred"
    EXPIRED = "expired"
    CANCELED = "canceled"
    #: Over the supporter's frequency cap across blasts; decided at expansion.
    CAPPED = "capped"
    #: An SMS not sent because the alert's email went instead (quiet hours fallback).
    FALLBACK = "fallback"


class PauseReason(StrEnum):
    """Why a blast is paused (contract §6 ``pause_reason``, §13)."""

    OPERATOR = "operator"
    PROVIDER_AUTH = "provider_auth"
    CARRIER_FILTERING = "carrier_filtering"
    FAILURE_RATE = "failure_rate"
    OPTOUT_RATE = "optout_rate"


#: Every blast status, in the order a blast meets them.
BLAST_STATUSES: Final = tuple(BlastStatus)
#: A blast in one of these has ended: nothing more will be sent for it.
ENDED_STATUSES: Final = frozenset(
    {BlastStatus.CANCELED, BlastStatus.COMPLETED, BlastStatus.EXPIRED}
)
#: Statuses in which senders may hand messages to a provider.
SENDABLE_STATUSES: Final = frozenset({BlastStatus.EXPANDING, BlastStatus.SENDING})
#: Statuses whose rows wait, pending, until a transition re-drives them (resume, approve,
#: release): a sender that meets one leaves its rows pending and does not re-queue them.
HOLDING_STATUSES: Final = frozenset(
    {BlastStatus.PAUSED, BlastStatus.AWAITING_APPROVAL, BlastStatus.SCHEDULED}
)

#: Every allowed blast transition: ``{from: {to, …}}``. The store's conditional updates
#: take their ``only_from`` from here, so no caller can move a blast any other way.
BLAST_TRANSITIONS: Final[Mapping[BlastStatus, frozenset[BlastStatus]]] = {
    BlastStatus.SCHEDULED: frozenset(
        {BlastStatus.EXPANDING, BlastStatus.CANCELED, BlastStatus.EXPIRED}
    ),
    BlastStatus.EXPANDING: frozenset(
        {
            BlastStatus.SENDING,
            BlastStatus.AWAITING_APPROVAL,
            BlastStatus.PAUSED,
            BlastStatus.CANCELED,
        }
    ),
    BlastStatus.AWAITING_APPROVAL: frozenset(
        {BlastStatus.SENDING, BlastStatus.CANCELED, BlastStatus.EXPIRED}
    ),
    BlastStatus.SENDING: frozenset(
        {BlastStatus.PAUSED, BlastStatus.COMPLETED, BlastStatus.CANCELED, BlastStatus.EXPIRED}
    ),
    BlastStatus.PAUSED: frozenset(
        {
            BlastStatus.SENDING,
            BlastStatus.EXPANDING,
            # Paused while expanding, then found over the approval threshold.
            BlastStatus.AWAITING_APPROVAL,
            BlastStatus.CANCELED,
            BlastStatus.EXPIRED,
        }
    ),
    BlastStatus.CANCELED: frozenset(),
    BlastStatus.COMPLETED: frozenset(),
    BlastStatus.EXPIRED: frozenset(),
}


def sources(to: BlastStatus) -> list[BlastStatus]:
    """The statuses a blast may move to ``to`` from (the ``only_from`` of its update)."""
    return [s for s, targets in BLAST_TRANSITIONS.items() if to in targets]


#: Row states that still owe work.
OPEN: Final = frozenset({RowState.PENDING, RowState.SENDING, RowState.DEFERRED})
#: Row states that end a row (``sent`` may still be refined to delivered/failed).
TERMINAL: Final = frozenset(set(RowState) - OPEN)
#: Open rows a cancel or an expiry closes at once; ``sending`` rows are in a provider call.
CLOSABLE: Final = (RowState.PENDING, RowState.DEFERRED)

#: The keys of every channel's counts in ``rapid blast show --json`` (contract §6).
#: ``delivered`` and ``clicked`` refine ``sent``; ``sending`` rows count as ``pending``.
COUNT_KEYS: Final = (
    "targeted",
    "sent",
    "delivered",
    "failed",
    "suppressed",
    "duplicate",
    "deferred",
    "expired",
    "canceled",
    "capped",
    "fallback",
    "pending",
    "clicked",
)


def counts_from_states(by_state: Mapping[str, int], *, clicked: int = 0) -> dict[str, int]:
    """The contract's counts of one channel from row counts per ledger state."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    for state, n in by_state.items():
        if state in (RowState.SENT, RowState.DELIVERED):
            counts["sent"] += n
            if state == RowState.DELIVERED:
                counts["delivered"] += n
        elif state in (RowState.PENDING, RowState.SENDING):
            counts["pending"] += n
        elif state in counts and state not in ("targeted", "clicked"):
            counts[state] += n
        else:  # an unknown state must not vanish from the totals
            counts["pending"] += n
        counts["targeted"] += n
    counts["clicked"] = clicked
    return counts


def as_written(by_state: Mapping[str, int]) -> dict[str, int]:
    """The ledger's counts the way live-counter writers keep them: ``sending`` rows count
    as pending (a sender moves a claimed row from pending to its outcome), or finishing
    them would take them from pending twice."""
    counts = dict(by_state)
    claimed = counts.pop(RowState.SENDING, 0)
    if claimed:
        counts[RowState.PENDING] = counts.get(RowState.PENDING, 0) + claimed
    return counts


#: How long a cancel waits for sends already in flight (each is one provider call) to land.
CANCEL_DRAIN_S = 15.0
#: Pending rows read per query when re-driving a blast, in send batches of the channel.
REDRIVE_PAGE_BATCHES = 10


class BlastLifecycle:
    """The one place a blast changes status: database, then Redis, then counters and log.

    Each method returns whether the blast moved; a transition the current status does not
    allow (completing a canceled blast, resuming one that is not paused) moves nothing and
    returns False. Operator-facing errors are :class:`messaging.blasts.blast_control.BlastActions`'.
    """

    def __init__(
        self,
        blasts: BlastStore,
        ledger: LedgerStore,
        control: BlastControl,
        queue: SendQueue,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.blasts = blasts
        self.ledger = ledger
        self.control = control
        self.queue = queue
        self._sleep = sleep
        self._monotonic = monotonic

    # --- the one move -------------------------------------------------------------------

    def _move(
        self,
        blast_id: str,
        to: BlastStatus,
        only_from: list[BlastStatus],
        event: str,
        stored: Mapping[str, Any] | None = None,
        **logged: Any,
    ) -> bool:
        """1. database (conditional), 2. the fleet's copy, 3. log. True if it moved."""
        allowed = [s for s in only_from if to in BLAST_TRANSITIONS[s]]
        moved = self.blasts.set_status(blast_id, to, only_from=allowed, **(stored or {}))
        if moved:
            self.control.set(blast_id, to)
            log.info(event, blast_id=blast_id, status=str(to), **_loggable(stored), **logged)
        return moved

    def mirror(self, blast_id: str) -> str | None:
        """Copy the stored status to the fleet (repairs a mirror a crash left behind)."""
        current = self.blasts.status(blast_id)
        if current is None:
            return None
        self.control.set(blast_id, current[0])
        return current[0]

    # --- transitions --------------------------------------------------------------------

    def release(self, blast_id: str) -> bool:
        """A scheduled blast is due: ``scheduled → expanding``."""
        return self._move(
            blast_id, BlastStatus.EXPANDING, [BlastStatus.SCHEDULED], "blast.released"
        )

    def finish_expansion(
        self, blast_id: str, stats: dict[str, Any], *, hold_for_approval: bool = False
    ) -> bool:
        """Record expansion done; ``expanding → sending`` (or ``→ awaiting_approval``).

        A blast paused or ended meanwhile keeps its status (its stats are still recorded).
        """
        to = BlastStatus.AWAITING_APPROVAL if hold_for_approval else BlastStatus.SENDING
        moved = self.blasts.finish_expansion(blast_id, stats, to=to)
        if moved:
            self.control.set(blast_id, to)
            log.info("blast.expansion_finished", blast_id=blast_id, status=str(to))
        else:
            self.mirror(blast_id)
        return moved

    def await_approval(self, blast_id: str) -> bool:
        """``expanding → awaiting_approval``: its rows wait, pending, for :meth:`approve`."""
        return self._move(
            blast_id,
            BlastStatus.AWAITING_APPROVAL,
            [BlastStatus.EXPANDING],
            "blast.awaiting_approval",
        )

    def approve(self, blast_id: str, approved_by: str) -> bool:
        """``awaiting_approval → sending``, recording who approved; re-drives its rows."""
        moved = self._move(
            blast_id,
            BlastStatus.SENDING,
            [BlastStatus.AWAITING_APPROVAL],
            "blast.approved",
            {"approved_by": approved_by},
        )
        if moved:
            self._redrive_id(blast_id)
        return moved

    def pause(
        self, blast_id: str, reason: PauseReason = PauseReason.OPERATOR, detail: str | None = None
    ) -> bool:
        """``expanding|sending → paused`` with why; rows stay pending until :meth:`resume`."""
        return self._move(
            blast_id,
            BlastStatus.PAUSED,
            [BlastStatus.SENDING, BlastStatus.EXPANDING],
            "blast.paused",
            {"pause_reason": PauseReason(reason), "pause_detail": detail},
        )

    def resume(self, blast_id: str) -> bool:
        """``paused → sending`` (``→ expanding`` if expansion had not finished); re-drives
        every pending row. Nothing already sent is sent again: the ledger claims hold."""
        current = self.blasts.status(blast_id)
        if current is None:
            return False
        to = BlastStatus.SENDING if current[1] else BlastStatus.EXPANDING
        if to == BlastStatus.SENDING and self._owes_approval(blast_id):
            # Paused while expanding, and its final count was over the approval threshold:
            # resuming must not skip the second operator.
            to = BlastStatus.AWAITING_APPROVAL
        moved = self._move(blast_id, to, [BlastStatus.PAUSED], "blast.resumed")
        if moved and to == BlastStatus.SENDING:
            self._redrive_id(blast_id)
        return moved

    def _owes_approval(self, blast_id: str) -> bool:
        """Expansion found the blast over the approval threshold and no one approved it."""
        blast = self.blasts.get(blast_id)
        return blast is not None and "approval" in blast.stats and blast.approved_by is None

    def complete(self, blast_id: str, *, seen_sending: bool = False) -> bool:
        """``sending → completed`` once expanded and no row owes work.

        ``seen_sending``: the caller saw the blast expanded and sending (a sender, after every
        batch): the status read is skipped, the move itself still requires ``sending``."""
        if not seen_sending and self.blasts.status(blast_id) != (BlastStatus.SENDING, True):
            return False
        if self.ledger.has_open(blast_id):
            return False
        return self._move(blast_id, BlastStatus.COMPLETED, [BlastStatus.SENDING], "blast.completed")

    def expire(self, blast_id: str) -> bool:
        """``send_by`` passed: open rows end ``expired``, then the blast, once no send is in
        flight (a later pass finishes it otherwise). Expanding blasts are left to finish
        their expansion first (its rows would otherwise be written after the close)."""
        current = self.blasts.status(blast_id)
        if current is None or current[0] in ENDED_STATUSES:
            return False
        if current[0] == BlastStatus.EXPANDING:
            return False
        closed = self.ledger.close_open(blast_id, RowState.EXPIRED, list(CLOSABLE))
        if self.ledger.has_open(blast_id):
            return False
        return self._move(
            blast_id,
            BlastStatus.EXPIRED,
            sources(BlastStatus.EXPIRED),
            "blast.expired",
            closed=closed,
        )

    def cancel(self, blast_id: str, *, drain_s: float = CANCEL_DRAIN_S) -> bool:
        """Stop for good: the blast is recorded ``canceled`` (database, then the fleet's
        copy, so senders stop within a second), every row not yet handed to a provider ends
        ``canceled``, and the call returns once sends already in flight have landed.

        Repeating a cancel of a canceled blast re-applies the mirror and the close (a
        crash halfway leaves nothing open) and returns False.
        """
        moved = self._move(
            blast_id, BlastStatus.CANCELED, sources(BlastStatus.CANCELED), "blast.canceled"
        )
        current = self.blasts.status(blast_id)
        if current is None or current[0] != BlastStatus.CANCELED:
            return False
        if not moved:
            self.control.set(blast_id, BlastStatus.CANCELED)
        closed = self.ledger.close_open(blast_id, RowState.CANCELED, list(CLOSABLE))
        deadline = self._monotonic() + drain_s
        while self.ledger.has_state(blast_id, RowState.SENDING) and self._monotonic() < deadline:
            self._sleep(0.1)
        # Rows a racing batch put back to pending while we waited.
        closed += self.ledger.close_open(blast_id, RowState.CANCELED, list(CLOSABLE))
        log.info("blast.cancel_closed", blast_id=blast_id, closed=closed)
        return moved

    # --- re-drive -----------------------------------------------------------------------

    def _redrive_id(self, blast_id: str) -> int:
        blast = self.blasts.get(blast_id)
        return self.redrive(blast) if blast is not None else 0

    def redrive(self, blast: BlastRecord) -> int:
        """Queue send work for every pending row of a blast; returns the rows queued."""
        queued = 0
        for channel in blast.alert.channels:
            after = 0
            page = BATCH_SIZE[channel] * REDRIVE_PAGE_BATCHES
            while ids := self.ledger.open_ids(
                blast.blast_id, channel, RowState.PENDING, after, page
            ):
                enqueue_in_batches(self.queue, blast.blast_id, channel, blast.priority, ids)
                queued += len(ids)
                after = ids[-1]
        return queued


def _loggable(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in (fields or {}).items() if v}
