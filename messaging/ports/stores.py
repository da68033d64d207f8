"""Other stores: supporters, provider events, reports, retention, replies, breaker windows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

#: Longest email address RFC 5321 allows.
EMAIL_LEN = 320
#: Longest external id and name a store keeps for a supporter (the import rejects longer ones).
EXTERNAL_ID_LEN = 128
NAME_LEN = 200


class SupporterRow(NamedTuple):
    """One supporter as the import will store it: every value already normalised.

    ``None`` means "no value" (stored as NULL). The opt-ins are plain booleans because an
    absent or unusable opt-in is no consent (contract §5). ``topics`` matters only when the
    file has a ``topics`` column.
    """

    external_id: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    postal_code: str | None = None
    state: str | None = None
    tags: str | None = None
    timezone: str | None = None
    sms_opt_in: bool = False
    email_opt_in: bool = False
    #: The file's custom columns (contract §5), ``{"name": "value"}``; None: the file had none.
    fields: dict[str, str] | None = None
    topics: tuple[str, ...] = ()


#: Columns an import may set, in table order. ``external_id`` is the key, never updated.
SUPPORTER_COLUMNS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "phone",
    "email",
    "postal_code",
    "state",
    "tags",
    "timezone",
    "sms_opt_in",
    "email_opt_in",
    "fields",
)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did: supporters inserted and updated, topics registered for the first time.

    ``updated`` counts the supporters that already existed, whether or not the file changed
    any of their values (an unchanged row is not rewritten).
    """

    inserted: int
    updated: int
    new_topics: frozenset[str] = field(default_factory=frozenset)


class SupporterWriter(Protocol):
    """Bulk upsert of supporters and their subscriptions (the CSV import)."""

    def write_batch(
        self, rows: Sequence[SupporterRow], columns_present: frozenset[str]
    ) -> BatchResult:
        """Upsert ``rows`` by external id in one transaction (the last duplicate wins)."""
        ...


class DeliveryEventStore(Protocol):
    """Provider events (status callbacks, inbound SMS, SendGrid events) on the ledger."""

    def sms_destination(self, message_sid: str) -> str | None:
        """The phone a sent SMS went to, or None if the SID is not (yet) in the ledger."""
        ...

    def settle_sms(self, message_sid: str, values: Mapping[str, Any]) -> bool:
        """Move the ``sent`` SMS with this SID to ``values["state"]``; True if it moved."""
        ...

    def park_sms_status(self, message_sid: str, values: Mapping[str, Any]) -> None:
        """Keep a status that overtook its send; a failure outranks a delivery."""
        ...

    def inbound_seen(self, message_sid: str) -> bool:
        """True when this inbound MessageSid was recorded before."""
        ...

    def record_inbound(self, message: Mapping[str, Any]) -> bool:
        """Store one inbound SMS; False if its MessageSid was already stored."""
        ...

    def seen_events(self, provider: str, ids: Sequence[str]) -> set[str]:
        """Which of these provider event ids were applied before."""
        ...

    def apply_email_outcomes(
        self,
        delivered: Sequence[tuple[str, int, datetime]],
        failed: Sequence[tuple[str, int, str, str]],
        provider: str,
        event_ids: Sequence[str],
        now: datetime,
    ) -> None:
        """``delivered`` (blast, supporter, at) and ``failed`` (blast, supporter, code,
        error) refine ``sent`` emails; the event ids are marked applied; one transaction."""
        ...


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """The system of record's share of the fleet metrics."""

    #: Ledger rows of blasts that have not ended: ``{(channel, state): rows}``.
    open_rows: dict[tuple[str, str], int]
    #: Blasts per status.
    blasts: dict[str, int]


class ReportStore(Protocol):
    """Aggregates for metrics, autoscaling and health."""

    def ping(self) -> None:
        """Raise if the database does not answer."""
        ...

    def fleet_counts(self) -> FleetCounts:
        """Row counts of open blasts and blast counts per status."""
        ...

    def lane_backlog(
        self, blast_statuses: Sequence[str], channels: Sequence[str], row_states: Sequence[str]
    ) -> dict[tuple[str, str], int]:
        """Rows in ``row_states`` of blasts in ``blast_statuses``: ``{(channel, priority): n}``."""
        ...

    def live_outcomes(
        self,
        blast_statuses: Sequence[str],
        channels: Sequence[str],
        row_states: Sequence[str],
        carrier_codes: Sequence[str],
    ) -> tuple[dict[tuple[str, str], int], int]:
        """``({(channel, state): rows}, SMS rows failed with one of carrier_codes)``."""
        ...


class LedgerRetention(Protocol):
    """The ledger's upkeep: its counts folded, its old rows dropped (issue #21).

    Blast counts (``BlastReads.state_counts``) are kept with every ledger write, so neither
    call changes what a blast reports.
    """

    def compact_counts(self, max_rows: int) -> int:
        """Fold up to ``max_rows`` pending count deltas into the counts; how many were."""
        ...

    def prune_batch(self, ended_before: datetime, max_rows: int) -> int:
        """Delete up to ``max_rows`` ledger rows of blasts that ended before
        ``ended_before``, in one short transaction; how many went (0: nothing left)."""
        ...


@dataclass(frozen=True, slots=True)
class NewReply:
    """An inbound SMS to store, with what it asked for (contract §12)."""

    message_sid: str | None
    from_number: str
    to_number: str | None
    body: str
    #: ``opt_out`` | ``opt_in`` | ``help`` | ``needs_review`` | ``other``.
    kind: str
    reason: str
    supporter_id: int | None
    #: The blast it answers: the last one sent to that phone.
    blast_id: str | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class Reply(NewReply):
    """A stored reply."""

    id: int = 0
    #: ``opt_out`` or ``not_opt_out`` once a person has reviewed it.
    review_verdict: str | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None

    @property
    def needs_review(self) -> bool:
        """True while a person still has to look at it."""
        return self.kind == "needs_review" and self.reviewed_at is None


class ReplyLog(Protocol):
    """Where inbound SMS are kept (the inbound webhook's side)."""

    def seen(self, message_sid: str) -> bool:
        """True when this MessageSid was stored before."""
        ...

    def add(self, reply: NewReply) -> Reply | None:
        """Store one reply; None if its MessageSid was already stored."""
        ...

    def last_sms_to(self, phone: str) -> tuple[int | None, str | None]:
        """``(supporter id, blast id)`` of the last SMS sent to ``phone`` among recent
        blasts, else ``(a supporter with that phone or None, None)``."""
        ...


class ReplyReview(Protocol):
    """Replies as operators read and review them (CLI, API), and counts per blast."""

    def replies(
        self, *, needs_review: bool = False, from_number: str | None = None, limit: int = 100
    ) -> list[Reply]:
        """Newest first; only those awaiting review with ``needs_review``, only one phone's
        with ``from_number``."""
        ...

    def review(self, reply_id: int, verdict: str, by: str, at: datetime) -> Reply | None:
        """Record a person's verdict; None if there is no such reply."""
        ...

    def counts(self, blast_id: str) -> dict[str, int]:
        """Replies answering ``blast_id`` per kind (the opt-out-rate breaker reads it)."""
        ...


class ReplyStore(ReplyLog, ReplyReview, Protocol):
    """Both sides, as the backends implement them."""


# --- circuit breakers (messaging/safety/breakers.py) --------------------------------------------


@dataclass(frozen=True, slots=True)
class RecentOutcomes:
    """The blast's last finished sends, as the breakers judge them."""

    #: Finished sends in the window (sent, delivered or failed), at most the window size.
    sends: int
    #: Of those, failed for any reason (carrier filtering included).
    failed: int
    #: Of those, failed with a carrier-filtering code.
    carrier_filtered: int
    #: SMS sent (or delivered) by the blast so far: the opt-out rate's denominator.
    sms_sent: int


class BreakerWindow(Protocol):
    """Reads a blast's recent outcomes from the ledger."""

    def recent(self, blast_id: str, window: int) -> RecentOutcomes:
        """The last ``window`` finished sends of the blast, counted."""
        ...
