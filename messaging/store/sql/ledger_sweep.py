"""The ledger as the sweep and the lifecycle see it: re-drive, release, close, settle.

Reads of a blast's open rows (re-drive, "anything left?"), deferred rows released when their
window ends, rows closed when a blast ends, and rows lost in flight: each one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from messaging.blasts.lifecycle import OPEN, BlastStatus, RowState
from messaging.ports import TEMPLATE_FIELDS, Claimed, SendingRow
from messaging.store.schema import blasts, deliveries, supporters
from messaging.store.sql.ledger_claims import template_fields

#: Why a row claimed long ago and never settled is failed rather than sent again.
LOST_IN_FLIGHT = "lost_in_flight"


class SqlLedgerSweep:
    """:class:`~messaging.ports.LedgerSweep` on the ``deliveries`` table (a part of
    :class:`~messaging.store.sql.ledger.SqlLedger`, which sets the engine)."""

    engine: Engine

    def open_ids(
        self, blast_id: str, channel: str, state: str, after: int, limit: int
    ) -> list[int]:
        """Supporter ids of one blast/channel in ``state``, in key order (for re-drive)."""
        with self.engine.connect() as conn:
            return [
                int(x)
                for x in conn.scalars(
                    select(deliveries.c.supporter_id)
                    .where(
                        deliveries.c.blast_id == blast_id,
                        deliveries.c.channel == channel,
                        deliveries.c.state == state,
                        deliveries.c.supporter_id > after,
                    )
                    .order_by(deliveries.c.supporter_id)
                    .limit(limit)
                )
            ]

    def close_open(self, blast_id: str, to_state: str, from_states: Sequence[str]) -> int:
        """Move every row of a blast in ``from_states`` to ``to_state`` (cancel, expire)."""
        with self.engine.begin() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(deliveries.c.blast_id == blast_id, deliveries.c.state.in_(list(from_states)))
                .values(state=to_state, updated_at=datetime.now(UTC))
                .returning(deliveries.c.supporter_id)
            ).all()
        return len(moved)

    def has_open(self, blast_id: str) -> bool:
        """True while any row of the blast still owes work (an index seek, not a count)."""
        query = (
            select(deliveries.c.supporter_id)
            .where(
                deliveries.c.blast_id == blast_id,
                # Naming every channel lets the (blast, channel, state) index be probed
                # directly instead of scanning a finished blast's million rows.
                deliveries.c.channel.in_(["sms", "email"]),
                deliveries.c.state.in_(sorted(OPEN)),
            )
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def close_ids(
        self, blast_id: str, channel: str, supporter_ids: Sequence[int], to_state: str
    ) -> int:
        """Close the given rows that are still ``pending`` (a batch of an ended blast)."""
        if not supporter_ids:
            return 0
        with self.engine.begin() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel == channel,
                    deliveries.c.supporter_id.in_(list(supporter_ids)),
                    deliveries.c.state == RowState.PENDING,
                )
                .values(state=to_state, updated_at=datetime.now(UTC))
                .returning(deliveries.c.supporter_id)
            ).all()
        return len(moved)

    def release_due(self, now: datetime, limit: int) -> list[tuple[str, str, int]]:
        """Move deferred rows whose window has ended back to ``pending``, oldest first.

        A conditional update: with several schedulers running, each row is released by
        exactly one of them. Returns ``(blast_id, channel, supporter_id)`` of what it took.
        """
        due = (
            select(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.supporter_id)
            .join(blasts, blasts.c.blast_id == deliveries.c.blast_id)
            .where(
                deliveries.c.state == RowState.DEFERRED,
                deliveries.c.deferred_until <= now,
                blasts.c.status == BlastStatus.SENDING,
            )
            .order_by(deliveries.c.deferred_until, deliveries.c.supporter_id)
            .limit(limit)
        )
        released: list[tuple[str, str, int]] = []
        with self.engine.begin() as conn:
            rows = conn.execute(due).all()
            by_key: dict[tuple[str, str], list[int]] = {}
            for blast_id, channel, sid in rows:
                by_key.setdefault((blast_id, channel), []).append(int(sid))
            for (blast_id, channel), ids in by_key.items():
                taken = conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.blast_id == blast_id,
                        deliveries.c.channel == channel,
                        deliveries.c.supporter_id.in_(ids),
                        deliveries.c.state == RowState.DEFERRED,
                    )
                    .values(state=RowState.PENDING, updated_at=now)
                    .returning(deliveries.c.supporter_id)
                ).all()
                taken_ids = {int(t[0]) for t in taken}
                # Keep the deferral order the SELECT established.
                released += [(blast_id, channel, sid) for sid in ids if sid in taken_ids]
        return released

    def has_state(self, blast_id: str, state: str) -> bool:
        """True while any row of the blast is in ``state``."""
        query = (
            select(deliveries.c.supporter_id)
            .where(
                deliveries.c.blast_id == blast_id,
                deliveries.c.channel.in_(["sms", "email"]),
                deliveries.c.state == state,
            )
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def fail_stuck(self, blast_id: str, claimed_before: datetime) -> int:
        """Rows ``sending`` since before ``claimed_before`` end ``failed`` (lost_in_flight).

        We cannot know whether the provider got the request, and lost beats duplicate for
        this product (docs/architecture.md), so they are not sent again.
        """
        with self.engine.begin() as conn:
            rows = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel.in_(["sms", "email"]),
                    deliveries.c.state == RowState.SENDING,
                    deliveries.c.updated_at < claimed_before,
                )
                .values(
                    state=RowState.FAILED,
                    error_code=LOST_IN_FLIGHT,
                    error="worker lost between claim and outcome; not re-sent to avoid a duplicate",
                    updated_at=datetime.now(UTC),
                )
                .returning(deliveries.c.supporter_id)
            ).all()
        return len(rows)

    def sending_rows(self, blast_id: str, claimed_before: datetime) -> list[SendingRow]:
        """See :class:`~messaging.ports.LedgerSweep` (one indexed read, the supporter joined)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    deliveries.c.channel,
                    deliveries.c.supporter_id,
                    deliveries.c.destination,
                    deliveries.c.attempts,
                    deliveries.c.updated_at,
                    supporters.c.first_sms_at,
                    *(supporters.c[f] for f in TEMPLATE_FIELDS),
                )
                .select_from(
                    deliveries.outerjoin(supporters, supporters.c.id == deliveries.c.supporter_id)
                )
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.state == RowState.SENDING,
                    deliveries.c.updated_at < claimed_before,
                )
                .order_by(deliveries.c.channel, deliveries.c.supporter_id)
            ).all()
        return [
            SendingRow(
                channel,
                Claimed(
                    int(sid),
                    destination,
                    int(attempts),
                    template_fields(values),
                    _aware(first),
                ),
                _aware(claimed_at) or claimed_before,
            )
            for channel, sid, destination, attempts, claimed_at, first, *values in rows
        ]


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
