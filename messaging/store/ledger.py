"""The delivery ledger (outbox): set-based expansion, claims, outcomes, re-drive.

Every statement here works on a batch in one round trip: expansion is one
``INSERT … SELECT`` per page and channel (household duplicates and suppressions decided in
SQL), a claim is one conditional ``UPDATE … RETURNING``, outcomes are one statement over
arrays on PostgreSQL (:mod:`messaging.store.ledger_pg`), one executemany on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from messaging import states
from messaging.store.audience import Audience, insert_page
from messaging.store.db import among
from messaging.store.ledger_pg import claim_rows, record_outcomes
from messaging.store.schema import (
    deliveries,
    early_statuses,
    supporters,
)

#: Fields of a supporter a template may use.
TEMPLATE_FIELDS = ("first_name", "last_name", "postal_code", "state", "timezone", "external_id")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A recipient this worker now owns: the provider call is its alone to make."""

    supporter_id: int
    destination: str
    attempts: int
    fields: dict[str, Any]
    first_sms_at: datetime | None


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


class Ledger:
    """Batch operations on the ``deliveries`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: The planner's row estimate of the ledger, as last read (see refresh_statistics).
        self._estimate_rows = 0.0
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def expand_page(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        audience: Audience,
        after: int,
        upto: int,
    ) -> ExpandedPage:
        """Write the ledger rows of one page for one channel."""
        ids = insert_page(conn, self._insert, blast_id, channel, audience, after, upto)
        return ExpandedPage(
            sorted(ids.get(states.PENDING, [])), {state: len(i) for state, i in ids.items()}
        )

    def expand_page_states(
        self,
        conn: Connection,
        blast_id: str,
        channel: str,
        audience: Audience,
        after: int,
        upto: int,
    ) -> list[str]:
        """Like :meth:`expand_page`, but the state of every row written (for dry runs)."""
        ids = insert_page(conn, self._insert, blast_id, channel, audience, after, upto)
        return [state for state, written in ids.items() for _ in written]

    def refresh_statistics(self, rows_written: int) -> bool:
        """ANALYZE the ledger when this expansion has outgrown the planner's picture of it.

        On a young database the planner's estimate of the ledger is near zero rows, and with
        that estimate it probes a blast's destinations, and claims its rows, through the
        (blast, channel, state) index, filtering thousands of rows per probe: pages went
        from 0.2 s to 27 s. Once per doubling of the table is enough; on a large
        production ledger this never fires. PostgreSQL only (SQLite plans by index shape).
        """
        if self.engine.dialect.name != "postgresql":
            return False
        # The estimate only grows (ANALYZE, autovacuum): below twice the last one read there
        # is nothing to ask the database.
        if rows_written <= 2 * max(self._estimate_rows, 1000.0):
            return False
        with self.engine.connect() as conn:
            self._estimate_rows = float(
                conn.exec_driver_sql(
                    "SELECT reltuples FROM pg_class WHERE oid = 'deliveries'::regclass"
                ).scalar_one()
            )
            if rows_written <= 2 * max(self._estimate_rows, 1000.0):
                return False
            conn.exec_driver_sql("ANALYZE deliveries")
            conn.commit()
        return True

    def claim(self, blast_id: str, channel: str, supporter_ids: Sequence[int]) -> list[Claimed]:
        """Atomically take ``pending`` rows for sending; rows someone else took are skipped.

        This conditional update is the durable at-most-once guard: two workers handed the
        same batch (SQS or dramatiq redelivery, a sweep re-drive) cannot both claim a row.
        """
        if not supporter_ids:
            return []
        now = datetime.now(UTC)
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                rows = claim_rows(conn, blast_id, channel, supporter_ids, TEMPLATE_FIELDS, now)
            return [
                Claimed(
                    int(sid),
                    destination,
                    int(attempts),
                    {f: v or "" for f, v in zip(TEMPLATE_FIELDS, values, strict=True)},
                    first,
                )
                for sid, destination, attempts, first, *values in rows
            ]
        with self.engine.begin() as conn:
            taken = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel == channel,
                    deliveries.c.supporter_id.in_(list(supporter_ids)),
                    deliveries.c.state == states.PENDING,
                )
                .values(state=states.SENDING, attempts=deliveries.c.attempts + 1, updated_at=now)
                .returning(
                    deliveries.c.supporter_id, deliveries.c.destination, deliveries.c.attempts
                )
            ).all()
            if not taken:
                return []
            people = {
                row.id: row
                for row in conn.execute(
                    select(
                        supporters.c.id,
                        supporters.c.first_sms_at,
                        *(supporters.c[f] for f in TEMPLATE_FIELDS),
                    ).where(supporters.c.id.in_([t.supporter_id for t in taken]))
                )
            }
        claimed = []
        for sid, destination, attempts in sorted(taken):
            person = people.get(sid)
            fields = {f: (getattr(person, f) if person else None) or "" for f in TEMPLATE_FIELDS}
            first = person.first_sms_at if person else None
            claimed.append(Claimed(int(sid), destination, int(attempts), fields, first))
        return claimed

    def record(self, blast_id: str, channel: str, outcomes: Sequence[Outcome]) -> None:
        """Write the outcome of claimed rows (one executemany, only rows still ``sending``)."""
        if not outcomes:
            return
        now = datetime.now(UTC)
        sids = [
            o.provider_message_id
            for o in outcomes
            if o.state == states.SENT and o.provider_message_id
        ]
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                record_outcomes(conn, blast_id, channel, outcomes, now)
                if sids and channel == "sms":
                    self._apply_early_statuses(conn, blast_id, sids)
            return
        stmt = (
            deliveries.update()
            .where(
                deliveries.c.blast_id == bindparam("b_blast"),
                deliveries.c.channel == bindparam("b_channel"),
                deliveries.c.supporter_id == bindparam("b_sid"),
                deliveries.c.state == states.SENDING,
            )
            .values(
                state=bindparam("b_state"),
                provider_message_id=bindparam("b_pid"),
                sender=bindparam("b_sender"),
                error_code=bindparam("b_code"),
                error=bindparam("b_error"),
                segments=bindparam("b_segments"),
                sent_at=bindparam("b_sent_at"),
                deferred_until=bindparam("b_deferred_until"),
                updated_at=now,
            )
        )
        params = [
            {
                "b_blast": blast_id,
                "b_channel": channel,
                "b_sid": o.supporter_id,
                "b_state": o.state,
                "b_pid": o.provider_message_id,
                "b_sender": o.sender,
                "b_code": o.error_code,
                "b_error": (o.error or None) and o.error[:1000],
                "b_segments": o.segments,
                "b_sent_at": now if o.state == states.SENT else None,
                "b_deferred_until": o.deferred_until,
            }
            for o in outcomes
        ]
        with self.engine.begin() as conn:
            conn.execute(stmt, params)
            if sids and channel == "sms":
                self._apply_early_statuses(conn, blast_id, sids)

    @staticmethod
    def _apply_early_statuses(conn: Connection, blast_id: str, sids: Sequence[str]) -> None:
        """Apply status callbacks that arrived before these SIDs were recorded."""
        parked = conn.execute(
            select(early_statuses).where(early_statuses.c.provider_message_id.in_(list(sids)))
        ).all()
        for p in parked:
            values: dict[str, Any] = {"state": p.state, "updated_at": p.received_at}
            if p.state == states.DELIVERED:
                values["delivered_at"] = p.received_at
            else:
                values.update(error_code=p.error_code, error=p.error)
            conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.provider_message_id == p.provider_message_id,
                    deliveries.c.state == states.SENT,
                )
                .values(**values)
            )
        if parked:
            conn.execute(
                early_statuses.delete().where(
                    early_statuses.c.provider_message_id.in_(
                        [p.provider_message_id for p in parked]
                    )
                )
            )

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
                deliveries.c.state.in_(sorted(states.OPEN)),
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
                    deliveries.c.state == states.PENDING,
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
        from messaging.store.schema import blasts

        due = (
            select(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.supporter_id)
            .join(blasts, blasts.c.blast_id == deliveries.c.blast_id)
            .where(
                deliveries.c.state == states.DEFERRED,
                deliveries.c.deferred_until <= now,
                blasts.c.status == states.SENDING_BLAST,
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
                        deliveries.c.state == states.DEFERRED,
                    )
                    .values(state=states.PENDING, updated_at=now)
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

    def claim_first_contact(self, supporter_ids: Sequence[int]) -> set[int]:
        """Atomically take the "first SMS" of these supporters; returns those taken here.

        A conditional update, so two blasts racing to text a new supporter cannot both
        treat their message as the first (and neither skips the opt-out text).
        """
        if not supporter_ids:
            return set()
        with self.engine.begin() as conn:
            taken = conn.execute(
                supporters.update()
                .where(
                    among(supporters.c.id, supporter_ids, self.engine.dialect.name),
                    supporters.c.first_sms_at.is_(None),
                )
                .values(first_sms_at=datetime.now(UTC))
                .returning(supporters.c.id)
            ).all()
        return {int(row[0]) for row in taken}

    def release_first_contact(self, supporter_ids: Sequence[int]) -> None:
        """Give back first-contact claims whose message did not go out."""
        if not supporter_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                supporters.update()
                .where(among(supporters.c.id, supporter_ids, self.engine.dialect.name))
                .values(first_sms_at=None)
            )
