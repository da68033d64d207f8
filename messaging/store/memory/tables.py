"""The in-memory system of record the twins share: plain dicts under one lock.

Each store twin holds the same :class:`MemoryTables`, so what one writes the others see
(a suppression added here is honoured by the next expansion, as in the database).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Row:
    """One ledger row (``deliveries``)."""

    blast_id: str
    channel: str
    supporter_id: int
    destination: str
    state: str
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    provider_message_id: str | None = None
    sender: str | None = None
    error_code: str | None = None
    error: str | None = None
    segments: int | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    deferred_until: datetime | None = None
    #: First click on a tracked link; the alert variant the row got (migration 0009).
    clicked_at: datetime | None = None
    variant: int | None = None


@dataclass
class MemoryTables:
    """Every table the store twins need; take :attr:`lock` for anything multi-step."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    #: ``{id: columns}``, the ``supporters`` table (``id`` and ``external_id`` included).
    supporters: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: ``{external_id: id}``.
    by_external_id: dict[str, int] = field(default_factory=dict)
    #: ``(topic, supporter_id)`` pairs.
    subscriptions: set[tuple[str, int]] = field(default_factory=set)
    #: ``{name: (sns_topic_arn, created_at)}``.
    topics: dict[str, tuple[str | None, datetime]] = field(default_factory=dict)
    #: ``{name: "HH:MM-HH:MM"}``: topics with a quiet window of their own.
    topic_quiet_hours: dict[str, str] = field(default_factory=dict)
    #: ``{(channel, value): (reason, source, created_at)}``.
    suppressions: dict[tuple[str, str], tuple[str, str, datetime]] = field(default_factory=dict)
    #: The append-only audit trail of suppressions.
    suppression_events: list[dict[str, Any]] = field(default_factory=list)
    #: ``{blast_id: columns}``.
    blasts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``{(blast_id, channel, supporter_id): Row}``.
    deliveries: dict[tuple[str, str, int], Row] = field(default_factory=dict)
    #: ``{(blast_id, channel, state): rows}`` of ledger rows pruned (issue #21): a pruned
    #: blast keeps its counts, as ``blast_counts`` keeps them in the database.
    pruned_counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: ``{provider_message_id: values}``: statuses that overtook their send.
    early_statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Inbound SMS, and the MessageSids among them.
    inbound: list[dict[str, Any]] = field(default_factory=list)
    inbound_sids: set[str] = field(default_factory=set)
    #: ``(provider, event_id)`` of applied webhook events.
    webhook_events: set[tuple[str, str]] = field(default_factory=set)
    next_supporter_id: int = 1

    def rows_of(self, blast_id: str) -> list[Row]:
        """The ledger rows of one blast (a scan: the twins are for small test data)."""
        return [r for (b, _, _), r in self.deliveries.items() if b == blast_id]
