"""The audit log: who changed what, when, and from where (contract §11).

Every change an operator or the fleet makes (an alert sent, approve, reject, pause, resume,
cancel, automatic pauses, opt-out add/remove, imports, operator add/revoke) is appended here.
Nothing edits or deletes an entry: the store has no such method, and on PostgreSQL a trigger
refuses UPDATE, DELETE and TRUNCATE on the table whoever asks. Phone numbers and emails are
masked before they are written, as in the logs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from config.logging import mask_text
from messaging.errors import InputError


class Source(StrEnum):
    """Where a change came from."""

    CLI = "cli"
    API = "api"
    DASHBOARD = "dashboard"
    SNS = "sns"  # an alert published straight to SNS
    FLEET = "fleet"  # the fleet acting on its own: automatic pauses


class AuditAction(StrEnum):
    """What changed."""

    ALERT_SENT = "alert.sent"
    BLAST_APPROVED = "blast.approve"
    BLAST_REJECTED = "blast.reject"
    BLAST_PAUSED = "blast.pause"
    BLAST_RESUMED = "blast.resume"
    BLAST_CANCELED = "blast.cancel"
    OPTOUT_ADDED = "optout.add"
    OPTOUT_REMOVED = "optout.remove"
    SUPPORTERS_IMPORTED = "supporters.import"
    OPERATOR_ADDED = "operator.add"
    OPERATOR_REVOKED = "operator.revoke"


#: Longest ``value`` and ``detail`` kept, in characters: an entry records a fact, not a file.
VALUE_MAX_CHARS: Final = 320
DETAIL_MAX_CHARS: Final = 1000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, and through what: ``Actor("alice", Source.CLI)``."""

    name: str
    source: Source


#: The requester of an alert published straight to SNS without ``requested_by``.
SNS_ACTOR: Final = Actor("sns", Source.SNS)
#: The fleet pausing a blast by itself (provider auth, circuit breakers).
FLEET_ACTOR: Final = Actor("fleet", Source.FLEET)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One appended entry."""

    id: int
    at: datetime
    actor: str
    source: str
    action: str
    blast_id: str | None
    value: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``rapid audit list --json`` and ``GET /api/audit``."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "source": self.source,
            "action": self.action,
            "blast_id": self.blast_id,
            "value": self.value,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class NewAuditEntry:
    """An entry about to be appended (the store gives it its id)."""

    at: datetime
    actor: str
    source: str
    action: str
    blast_id: str | None = None
    value: str | None = None
    detail: str | None = None


class AuditStore(Protocol):
    """Append-only storage of audit entries."""

    def append(self, entry: NewAuditEntry) -> AuditEntry:
        """Append one entry; returns it with its id."""
        ...

    def entries(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        """Entries at or after ``since``, newest first, at most ``limit``."""
        ...


_AGO_RE = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(raw: str | None, now: datetime | None = None) -> datetime | None:
    """``--since`` / ``?since=``: ISO 8601 (UTC if no offset) or an age such as ``30m``,
    ``12h``, ``7d``; None for None or empty."""
    if not raw or not raw.strip():
        return None
    raw = raw.strip()
    if match := _AGO_RE.match(raw):
        seconds = int(match[1]) * _UNIT_S[match[2]]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"since {raw!r}: an ISO 8601 time (2026-11-27T03:00:00Z) or an age (30m, 12h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def mask(value: str) -> str:
    """A value as the audit log keeps it: phones and emails masked, length bounded."""
    return mask_text(value)[:VALUE_MAX_CHARS]


class AuditLog:
    """Appends entries (masked) and reads them back."""

    def __init__(
        self, store: AuditStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._store = store
        self._clock = clock

    def record(
        self,
        actor: Actor,
        action: AuditAction,
        *,
        blast_id: str | None = None,
        value: str | None = None,
        detail: str | Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append what ``actor`` did. ``value`` (a phone, an email, a name) is masked."""
        if isinstance(detail, Mapping):
            detail = ", ".join(f"{k}={v}" for k, v in detail.items())
        return self._store.append(
            NewAuditEntry(
                at=self._clock(),
                actor=actor.name,
                source=actor.source.value,
                action=action.value,
                blast_id=blast_id,
                value=mask(value) if value is not None else None,
                detail=mask_text(detail)[:DETAIL_MAX_CHARS] if detail else None,
            )
        )

    def entries(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first."""
        return self._store.entries(since=since, limit=limit)
