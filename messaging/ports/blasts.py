"""Blast and topic stores, and the blast record."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from config.settings import QuietHours
    from messaging.content.alert import Alert


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
    #: Why a paused blast is paused (:class:`messaging.blasts.lifecycle.PauseReason`) and what
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
        from messaging.blasts.lifecycle import ENDED_STATUSES

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

        Only :class:`messaging.blasts.lifecycle.BlastLifecycle` calls this. ``pause_reason`` and
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
