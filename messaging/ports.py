"""The small Protocols the domain needs, and the records they carry.

Each Protocol has an in-memory twin (``messaging/store/memory/`` for the stores) used by
the unit tests, and real adapters that receive their clients in their constructors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    from config.caps import FrequencyCap
    from config.settings import QuietHours
    from messaging.alert import Alert

# ============================================================================================
# Stores: the system of record (backends in messaging/store/{sql,memory}/, see its README)
# ============================================================================================

#: Fields of a supporter a template may use.
#: ``fields`` is the import's custom columns as one mapping (``{{ fields.ward }}``).
TEMPLATE_FIELDS = (
    "first_name",
    "last_name",
    "postal_code",
    "state",
    "timezone",
    "external_id",
    "fields",
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A recipient this worker now owns: the provider call is its alone to make."""

    supporter_id: int
    destination: str
    attempts: int
    fields: dict[str, Any]
    first_sms_at: datetime | None


@dataclass(frozen=True, slots=True)
class SendingRow:
    """A row in ``sending`` as the sweep sees it: its channel, what a claim of it reads, and
    when it was claimed (messaging/in_doubt.py settles those no live sender holds)."""

    channel: str
    claimed: Claimed
    claimed_at: datetime


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per field, and
# a batch makes one per recipient.
@dataclass(slots=True)
class Outcome:
    """What happened to one claimed recipient."""

    supporter_id: int
    state: str
    provider_message_id: str | None = None
    sender: str | None = None
    error_code: str | None = None
    error: str | None = None
    segments: int | None = None
    #: For ``deferred``: when the quiet window ends and the row may be released.
    deferred_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExpandedPage:
    """What one page of expansion wrote for one channel."""

    #: The new ``pending`` rows' supporter ids, ascending (the send work).
    pending_ids: list[int]
    #: Rows written per state (the blast's live counters).
    by_state: dict[str, int]


#: Frequency caps at expansion: given a channel and a page's new ``pending`` supporter ids,
#: those over their cap (their rows are written ``capped`` in the page's transaction).
CapScreen = Callable[[str, list[int]], set[int]]


class PendingView(Protocol):
    """The ``pending`` rows of one blast, as a dry run sees them before rolling back."""

    def pending_count(self, channel: str) -> int:
        """Rows of ``channel`` a real send would send."""
        ...

    def sms_sample(self, limit: int) -> list[tuple[dict[str, Any], datetime | None]]:
        """Up to ``limit`` SMS recipients: ``(template fields, first_sms_at)``."""
        ...

    def sms_by_timezone(self) -> dict[str | None, int]:
        """SMS recipients per time zone (None: unknown)."""
        ...

    def sms_with_email_by_timezone(self) -> dict[str | None, int]:
        """SMS recipients per time zone whose email row in the blast will reach them
        (pending, or a household duplicate of a pending one): a quiet hours fallback."""
        ...

    def sample(self, channel: str, limit: int) -> list[dict[str, Any]]:
        """Template fields of up to ``limit`` recipients of ``channel`` (a rendered preview)."""
        ...


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a rolled-back expansion found."""

    pages: int
    #: Rows per channel and state a real expansion would write.
    would_send: dict[str, dict[str, int]]
    #: The audience's division per channel (as :meth:`LedgerExpansion.audience_stats`).
    stats: dict[str, Any]
    #: What the caller's ``estimate`` made of the pending rows.
    estimate: dict[str, Any]


class LedgerExpansion(Protocol):
    """Writing a blast's ledger rows, one page of its audience at a time."""

    def expand_page(
        self,
        blast_id: str,
        alert: Alert,
        topic: str,
        after: int,
        page_size: int,
        before_commit: Callable[[str, ExpandedPage], None],
        *,
        capped: CapScreen | None = None,
    ) -> tuple[int, dict[str, ExpandedPage]] | None:
        """Write the rows of the next page after ``after`` for every channel of ``alert``
        and move the blast's cursor, atomically; ``(new cursor, pages)`` or None when the
        audience is done. ``before_commit(channel, page)`` runs inside the transaction;
        so does ``capped``, whose answer is written ``capped`` instead of ``pending``."""
        ...

    def audience_stats(self, alert: Alert, topic: str) -> dict[str, Any]:
        """How the audience divides per channel: eligible, no consent, no address."""
        ...

    def dry_run(
        self,
        blast_id: str,
        alert: Alert,
        topic: str,
        page_size: int,
        estimate: Callable[[PendingView], dict[str, Any]],
        heartbeat: Callable[[], None],
        *,
        capped: CapScreen | None = None,
    ) -> DryRun:
        """Expand the whole audience, let ``estimate`` look, and leave the ledger empty
        (``capped`` as in :meth:`expand_page`: it should only count)."""
        ...

    def inspect_pending(
        self, blast_id: str, report: Callable[[PendingView], dict[str, Any]]
    ) -> dict[str, Any]:
        """``report`` over a blast's committed pending rows (a blast awaiting approval shows
        what a dry run would)."""
        ...

    def refresh_statistics(self, rows_written: int) -> bool:
        """Refresh the planner's picture of the ledger if it has outgrown it."""
        ...


class LedgerClaims(Protocol):
    """The senders' half: take rows, write what happened."""

    def claim(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> list[Claimed]:
        """Take ``pending`` rows for sending; rows someone else took are skipped."""
        ...

    def record(self, blast_id: str, channel: str, outcomes: Sequence[Outcome]) -> None:
        """Write the outcome of claimed rows (only rows still ``sending``)."""
        ...

    def claim_first_contact(self, supporter_ids: Sequence[int]) -> set[int]:
        """Take the "first SMS" of these supporters; returns those taken here."""
        ...

    def release_first_contact(self, supporter_ids: Sequence[int]) -> None:
        """Give back first-contact claims whose message did not go out."""
        ...

    def email_fallback(
        self, blast_id: str, supporter_ids: Sequence[int]
    ) -> tuple[set[int], list[int]]:
        """Quiet hours fallback: of these supporters, whose SMS would wait, those the
        blast's email reaches now, and the new ``pending`` email rows written for them.

        Reached: a consenting, unsuppressed address whose row in the blast is (or whose
        household's row is) pending, sending or sent; without any row for that address
        a ``pending`` one is written (returned second, for the caller to queue).
        """
        ...


class LedgerSweep(Protocol):
    """The scheduler's and the kill switch's half: find and close open rows."""

    def open_ids(
        self, blast_id: str, channel: str, state: str, after: int, limit: int
    ) -> list[int]:
        """Supporter ids of one blast/channel in ``state``, in key order."""
        ...

    def close_open(self, blast_id: str, to_state: str, from_states: Sequence[str]) -> int:
        """Move every row of a blast in ``from_states`` to ``to_state``."""
        ...

    def close_ids(
        self, blast_id: str, channel: str, supporter_ids: Sequence[int], to_state: str
    ) -> int:
        """Close the given rows that are still ``pending``."""
        ...

    def has_open(self, blast_id: str) -> bool:
        """True while any row of the blast still owes work."""
        ...

    def has_state(self, blast_id: str, state: str) -> bool:
        """True while any row of the blast is in ``state``."""
        ...

    def release_due(self, now: datetime, limit: int) -> list[tuple[str, str, int]]:
        """Deferred rows of sending blasts whose window ended go back to ``pending``."""
        ...

    def fail_stuck(self, blast_id: str, claimed_before: datetime) -> int:
        """Rows ``sending`` since before ``claimed_before`` end ``failed`` (lost_in_flight)."""
        ...

    def sending_rows(self, blast_id: str, claimed_before: datetime) -> list[SendingRow]:
        """The blast's rows ``sending`` since before ``claimed_before``, with their supporters'
        template fields, by channel and supporter id."""
        ...


class LedgerStore(LedgerExpansion, LedgerClaims, LedgerSweep, Protocol):
    """The delivery ledger: one row per (blast, channel, supporter)."""


@dataclass(frozen=True, slots=True)
class BlastRecord:
    """One blast as stored."""

    blast_id: str
    topic: str
    status: str
    priority: str
    alert: Alert
    created_at: datetime
    updated_at: datetime
    expanded_at: datetime | None
    ended_at: datetime | None
    expansion_cursor: int
    stats: dict[str, Any]
    #: Why a paused blast is paused (:class:`messaging.lifecycle.PauseReason`) and what
    #: tripped it, in one line; None unless paused.
    pause_reason: str | None = None
    pause_detail: str | None = None
    #: Who asked for the blast and who approved it (contract §11).
    requested_by: str | None = None
    approved_by: str | None = None
    #: When a scheduled blast is due.
    send_at: datetime | None = None

    @property
    def ended(self) -> bool:
        """True once nothing more will be sent."""
        from messaging.lifecycle import ENDED_STATUSES

        return self.status in ENDED_STATUSES


#: Row counts per channel and state: ``{channel: {state: rows}}``.
ByChannel = dict[str, dict[str, int]]
#: Reads live counters: ``{blast_id: {channel: {state: rows}} or None}``.
LiveCounts = Callable[[list[str]], Mapping[str, ByChannel | None]]


class BlastReads(Protocol):
    """Reading blasts and their ledger counts."""

    def get(self, blast_id: str) -> BlastRecord | None:
        """One blast, or None."""
        ...

    def status(self, blast_id: str) -> tuple[str, bool] | None:
        """``(status, expanded)`` without parsing the alert, or None."""
        ...

    def recent(self, limit: int = 50) -> list[BlastRecord]:
        """The newest blasts first."""
        ...

    def ids_with_status(self, status: str, *, expanded: bool | None = None) -> list[str]:
        """Ids of the blasts in ``status``, oldest first."""
        ...

    def state_counts(self, blast_ids: list[str]) -> dict[str, ByChannel]:
        """Ledger rows per blast, channel and state."""
        ...

    def variant_counts(self, blast_id: str) -> dict[int, ByChannel]:
        """An A/B test's ledger rows per variant, channel and state, ``"clicked"`` beside."""
        ...

    def summaries(
        self, records: list[BlastRecord], live: LiveCounts | None = None
    ) -> list[dict[str, Any]]:
        """The contract's JSON view (§6) of each blast; running ones from ``live``."""
        ...


class BlastStore(BlastReads, Protocol):
    """Blasts: created once per alert id, then moved through their statuses."""

    def create(
        self, alert: Alert, topic: str, sns_message_id: str | None
    ) -> tuple[BlastRecord, bool]:
        """Record the blast of ``alert`` (or return the existing one); True if new."""
        ...

    def set_status(
        self,
        blast_id: str,
        status: str,
        *,
        only_from: Iterable[str] | None = None,
        pause_reason: str | None = None,
        pause_detail: str | None = None,
        approved_by: str | None = None,
    ) -> bool:
        """Move a blast to ``status`` (from one of ``only_from``, if given); True if it moved.

        Only :class:`messaging.lifecycle.BlastLifecycle` calls this. ``pause_reason`` and
        ``pause_detail`` are stored with ``paused`` and cleared by any other status;
        ``approved_by`` is stored when given."""
        ...

    def finish_expansion(
        self, blast_id: str, stats: dict[str, Any], *, to: str = "sending"
    ) -> bool:
        """Mark expansion done; ``expanding`` moves on to ``to`` (``sending`` or
        ``awaiting_approval``); True if it moved."""
        ...


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """One alert topic, its SNS ARN once provisioned, and how many supporters follow it."""

    name: str
    sns_topic_arn: str | None
    subscribers: int
    created_at: datetime
    #: The topic's own SMS quiet window (``rapid topics create --quiet-hours``); None: the
    #: fleet's ``QUIET_HOURS``.
    quiet_hours: QuietHours | None = None


class TopicStore(Protocol):
    """Alert topics."""

    def register(self, name: str, sns_topic_arn: str | None = None) -> bool:
        """Record a topic (idempotent), set its ARN when given; True if it was new."""
        ...

    def set_quiet_hours(self, name: str, window: QuietHours | None) -> bool:
        """Give a registered topic its own quiet window (None: back to the fleet's); True
        if the topic exists."""
        ...

    def quiet_hours(self, name: str) -> QuietHours | None:
        """The topic's own quiet window, or None (the fleet's applies); one key lookup,
        cheap enough for senders to ask every few seconds."""
        ...

    def names(self) -> list[str]:
        """Every registered topic name, sorted."""
        ...

    def get(self, name: str) -> TopicInfo | None:
        """One topic, or None."""
        ...

    def list(self) -> list[TopicInfo]:
        """Every topic with its subscriber count, sorted by name."""
        ...


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


# --- circuit breakers (messaging/breakers.py) --------------------------------------------


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


# ============================================================================================
# Transport and control: send queue, blast control, live counters, rate limits.
# Implemented by queues/ (dramatiq lanes, Redis flow control); in-memory twins in
# messaging/memory.py. The domain owns these; queues/ imports them, never the reverse.
# ============================================================================================

#: Send lanes per channel, highest priority first.
PRIORITIES = ("urgent", "normal", "bulk")
#: Recipients per unit of send work, at most. Email: one provider call (SendGrid's limit).
#: SMS: a batch costs about five Redis round trips (enqueue, fetch, ack, the limiter, the
#: progress counters) and a handful of SQL statements whatever its size, so normal and bulk
#: batches are large; the sender claims only what its rate can send within the batch's
#: pacing horizon and re-queues the rest unclaimed, so a large batch costs nothing at a low
#: rate, and a pause or cancel still stops the very next send (the kill switch is read
#: before every provider call).
BATCH_SIZE = {"sms": 500, "email": 1000}
#: Urgent SMS go in smaller batches: an alert's first messages leave after claiming and
#: rendering 100 rows, not 500, and a burst spreads over the urgent worker's threads.
URGENT_SMS_BATCH_SIZE = 100


def batch_size(channel: str, priority: str) -> int:
    """Recipients per unit of send work on the lane of ``channel`` × ``priority``."""
    if channel == "sms" and priority == "urgent":
        return URGENT_SMS_BATCH_SIZE
    return BATCH_SIZE[channel]


@dataclass(frozen=True, slots=True)
class SendWork:
    """One unit of send work: some recipients of one blast on one channel."""

    blast_id: str
    channel: str
    priority: str
    supporter_ids: tuple[int, ...]
    delay_s: float = 0.0


class SendQueue(Protocol):
    """Accepts send work."""

    def enqueue(self, work: SendWork) -> None:
        """Queue ``work`` on its lane (after ``work.delay_s``)."""
        ...

    def others_waiting(self, work: SendWork) -> bool:
        """True when other blasts wait for a thread on ``work``'s lane: a unit that paces
        itself gives its thread up between pieces then, and re-queues the rest behind them
        (the blasts of a priority take turns, issue #21)."""
        ...


def enqueue_in_batches(
    queue: SendQueue, blast_id: str, channel: str, priority: str, supporter_ids: Sequence[int]
) -> int:
    """Split ids into batches of the lane's size and queue them; returns the batch count."""
    size = batch_size(channel, priority)
    batches = 0
    for start in range(0, len(supporter_ids), size):
        queue.enqueue(
            SendWork(blast_id, channel, priority, tuple(supporter_ids[start : start + size]))
        )
        batches += 1
    return batches


class ProgressCounters(Protocol):
    """Where a blast's live counts and last-progress stamp are kept.

    Writers count a claimed (``sending``) row as ``pending``; :meth:`replace` takes the
    ledger's counts as they are and folds ``sending`` into ``pending`` itself
    (:func:`messaging.lifecycle.as_written`).
    """

    def add(self, blast_id: str, channel: str, deltas: Mapping[str, int]) -> None:
        """Add ``{state: delta}`` for one channel and stamp the blast's progress."""
        ...

    def touch(self, blast_id: str) -> None:
        """Stamp the blast's progress only (the sweep gives re-driven work its window)."""
        ...

    def last_progress(self, blast_id: str) -> float | None:
        """Epoch seconds of the blast's last progress, or None."""
        ...

    def replace(self, blast_id: str, by_channel: Mapping[str, Mapping[str, int]]) -> None:
        """Set the counters to the ledger's counts (reconcile)."""
        ...

    def read(self, blast_ids: Iterable[str]) -> dict[str, ByChannel | None]:
        """Each blast's counters, or None where they were never based on the ledger."""
        ...


class BlastControl(Protocol):
    """The fleet-wide copy of each blast's status that senders read before every send.

    The system of record holds the status; :class:`messaging.lifecycle.BlastLifecycle`
    writes it there first and mirrors it here.
    """

    #: The blast's live counts and last-progress stamp, kept beside its status.
    progress: ProgressCounters

    def set(self, blast_id: str, status: str) -> None:
        """Publish a blast's status to the fleet."""
        ...

    def get(self, blast_id: str) -> str | None:
        """The blast's status as last published, or None if never published."""
        ...

    def bump_suppressions(self) -> None:
        """Tell the fleet the suppression list changed (a STOP, an unsubscribe)."""
        ...

    def suppressions_version(self) -> int:
        """A number that changes whenever the suppression list does (cached briefly)."""
        ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """Send times granted to the first ``len(slots_s)`` sends of a batch, in local epoch seconds."""

    slots_s: tuple[float, ...]

    @property
    def granted(self) -> int:
        """How many sends got a slot (the rest must be tried again later)."""
        return len(self.slots_s)


class RateLimiter(Protocol):
    """Reserves send times under a shared rate and optional per-send rates."""

    def reserve(
        self,
        shared_key: str,
        shared_rate_per_s: float,
        *,
        n: int = 1,
        per_send_keys: Sequence[str] = (),
        per_send_rate_per_s: float = 1.0,
        cost: int = 1,
        horizon_s: float = 5.0,
    ) -> Reservation:
        """Slots for ``n`` sends (or one per ``per_send_keys`` entry), each costing ``cost``."""
        ...

    def throttle(self, shared_key: str) -> float:
        """A provider said 429 for this key: slow it down; returns the new rate factor."""
        ...


class CapLedger(Protocol):
    """Who has used up their frequency cap (``SMS_FREQUENCY_CAP``, ``EMAIL_FREQUENCY_CAP``):
    checked and taken in one atomic step, fleet-wide (``queues/flow/caps.py``)."""

    def reserve(
        self,
        channel: str,
        blast_id: str,
        supporter_ids: Sequence[int],
        cap: FrequencyCap,
        *,
        dry_run: bool = False,
    ) -> set[int]:
        """Take a slot for ``blast_id`` for each supporter; return those over the cap.

        A supporter for whom this blast already holds a slot is never capped (a retried
        page), and ``dry_run`` only counts.
        """
        ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """An alert document as the intake transport delivered it (SNS envelope or raw)."""

    payload: str
    #: The alert topic the transport says it was published to; None for raw delivery.
    topic: str | None
    #: The transport's id of the message (the alert id when the alert names none).
    message_id: str
    form: Literal["envelope", "raw"]


#: Turns an intake queue message body into a :class:`Delivery`; raises
#: :class:`messaging.errors.InputError` for a body it cannot use.
Unwrap = Callable[[str], Delivery]


class AlertPublisher(Protocol):
    """Publishes an alert document to an alert topic's SNS topic."""

    def publish(self, topic_arn: str, message: str) -> str:
        """Publish ``message``; returns the transport's message id."""
        ...


class ResourceProvisioner(Protocol):
    """Creates or updates the fleet's queues and topics (idempotently)."""

    def ensure_queues(self) -> str:
        """The intake queue and its dead-letter queue; returns the intake queue's ARN."""
        ...

    def ensure_topic(self, topic: str, intake_arn: str) -> str:
        """An alert topic's SNS topic, subscribed to the intake queue; returns its ARN."""
        ...


#: One row a sender holds between claim and outcome: (blast id, channel, supporter id).
HeldRow = tuple[str, str, int]
#: Rows claimed less than this long ago are never settled by the sweep, whoever holds them
#: (a Redis that restarted empty knows a live sender's rows again within one beat).
IN_FLIGHT_GRACE_S = 15.0


class InFlight(Protocol):
    """A sender's announcement of the rows it holds between claim and outcome."""

    def hold(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """Announce rows about to be claimed (before the claim)."""
        ...

    def release(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> None:
        """Give rows up (their outcome is written, or the batch could not settle them)."""
        ...


class InFlightView(Protocol):
    """What the sweep asks: which rows live senders hold right now."""

    def owned(self) -> set[HeldRow]:
        """Rows held by senders that beat recently; forgets dead ones."""
        ...
