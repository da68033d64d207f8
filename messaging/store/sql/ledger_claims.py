"""Claiming ledger rows for sending and recording their outcomes.

A claim is one conditional ``UPDATE … RETURNING`` (the durable at-most-once guard);
outcomes are one statement (over arrays on PostgreSQL, an executemany on SQLite: the
dialect's :meth:`record_outcomes`), with the status callbacks that overtook them applied in
the same transaction. First-contact claims and the email fallback are claims too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from messaging.blasts.lifecycle import RowState
from messaging.ports import TEMPLATE_FIELDS, Claimed, Outcome
from messaging.store.schema import deliveries, early_statuses, supporters
from messaging.store.sql.dialect import SqlDialect
from messaging.store.sql.fallback import email_fallback


def template_fields(
    values: Sequence[Any], fields: Sequence[str] = TEMPLATE_FIELDS
) -> dict[str, Any]:
    """A supporter's template fields from their columns read in ``fields`` order."""
    return {f: v or "" for f, v in zip(fields, values, strict=True)}


class SqlLedgerClaims:
    """:class:`~messaging.ports.LedgerClaims` on the ``deliveries`` table (a part of
    :class:`~messaging.store.sql.ledger.SqlLedger`, which sets the engine and dialect)."""

    engine: Engine
    _dialect: SqlDialect

    def claim(
        self,
        blast_id: str,
        channel: str,
        supporter_ids: Sequence[int],
        fields: Sequence[str] = TEMPLATE_FIELDS,
    ) -> list[Claimed]:
        """Atomically take ``pending`` rows for sending; rows someone else took are skipped.

        This conditional update is the durable at-most-once guard: two workers handed the
        same batch (SQS or dramatiq redelivery, a sweep re-drive) cannot both claim a row.
        Only ``fields`` are read: the custom ``fields`` column is a JSON document per row,
        decoded whether the templates read it or not.
        """
        if not supporter_ids:
            return []
        fields = tuple(f for f in TEMPLATE_FIELDS if f in fields)  # known columns only
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            rows = self._dialect.claim(conn, blast_id, channel, supporter_ids, fields, now)
        # A batch is a thousand rows: no call per row where the usual templates (one field,
        # or none) let it be avoided. Both databases return the ids and attempts as ints.
        if len(fields) == 1:
            (name,) = fields
            return [
                Claimed(sid, destination, attempts, {name: value or ""}, first)
                for sid, destination, attempts, first, value in rows
            ]
        if not fields:
            return [Claimed(sid, dest, att, {}, first) for sid, dest, att, first in rows]
        return [
            Claimed(sid, destination, attempts, template_fields(values, fields), first)
            for sid, destination, attempts, first, *values in rows
        ]

    def record(self, blast_id: str, channel: str, outcomes: Sequence[Outcome]) -> None:
        """Write the outcome of claimed rows (one statement, only rows still ``sending``)."""
        if not outcomes:
            return
        now = datetime.now(UTC)
        sids = [
            o.provider_message_id
            for o in outcomes
            if o.state == RowState.SENT and o.provider_message_id
        ]
        with self.engine.begin() as conn:
            self._dialect.record_outcomes(conn, blast_id, channel, outcomes, now)
            if sids and channel == "sms":
                self._apply_early_statuses(conn, blast_id, sids)

    def _apply_early_statuses(self, conn: Connection, blast_id: str, sids: Sequence[str]) -> None:
        """Apply status callbacks that arrived before these SIDs were recorded."""
        # One bound array, not an IN of a batch's hundreds of SIDs (2 % of an SMS sender).
        parked = conn.execute(
            select(early_statuses).where(
                self._dialect.among(early_statuses.c.provider_message_id, sids)
            )
        ).all()
        for p in parked:
            values: dict[str, Any] = {"state": p.state, "updated_at": p.received_at}
            if p.state == RowState.DELIVERED:
                values["delivered_at"] = p.received_at
            else:
                values.update(error_code=p.error_code, error=p.error)
            conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.provider_message_id == p.provider_message_id,
                    deliveries.c.state == RowState.SENT,
                )
                .values(**values)
            )
        if parked:
            conn.execute(
                early_statuses.delete().where(
                    self._dialect.among(
                        early_statuses.c.provider_message_id,
                        [p.provider_message_id for p in parked],
                    )
                )
            )

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
                    self._dialect.among(supporters.c.id, supporter_ids),
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
                .where(self._dialect.among(supporters.c.id, supporter_ids))
                .values(first_sms_at=None)
            )

    def email_fallback(
        self, blast_id: str, supporter_ids: Sequence[int]
    ) -> tuple[set[int], list[int]]:
        """See :meth:`~messaging.ports.LedgerClaims.email_fallback`."""
        if not supporter_ids:
            return set(), []
        with self.engine.begin() as conn:
            return email_fallback(conn, self._dialect, blast_id, supporter_ids)
