"""The ledger (outbox) stores: expansion, claims, outcomes, the sweep's reads, and their records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from messaging.content.alert import Alert


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


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per field, and
# a claim makes one per recipient.
@dataclass(slots=True)
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
    when it was claimed (messaging/safety/in_doubt.py settles those no live sender holds)."""

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


class PageWritten(NamedTuple):
    """One expansion page, committed: where the cursor is now and what each channel got."""

    #: The blast's new cursor: the page's highest audience key.
    upto: int
    pages: dict[str, ExpandedPage]
    #: The page held fewer than ``page_size`` audience members, so the audience ended in it:
    #: the expansion is done without asking for another page (for a small alert, one status
    #: read and one page query less, and no hold behind other alerts' first pages).
    last: bool = False


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
    ) -> PageWritten | None:
        """Write the rows of the next page after ``after`` for every channel of ``alert``
        and move the blast's cursor, atomically; the page written, or None when the
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

    def refresh_audience_statistics(self, audience_rows: int) -> bool:
        """Refresh the planner's picture of the supporters and their subscriptions if an
        audience of ``audience_rows`` has outgrown it (a fresh import)."""
        ...


class LedgerClaims(Protocol):
    """The senders' half: take rows, write what happened."""

    def claim(
        self,
        blast_id: str,
        channel: str,
        supporter_ids: Sequence[int],
        fields: Sequence[str] = TEMPLATE_FIELDS,
    ) -> list[Claimed]:
        """Take ``pending`` rows for sending; rows someone else took are skipped. Each
        claim carries ``fields`` (of :data:`TEMPLATE_FIELDS`) of its supporter: those its
        templates read."""
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
