"""Quiet hours fallback in SQL: the blast's email for supporters whose SMS would wait.

A supporter is reached by email when they have a consenting, unsuppressed address and the
blast's live row for that address (theirs, or their household's) is pending, sending or
sent; an address with no row in the blast gets a ``pending`` one now. One transaction, a
few set-based statements per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Connection, and_, exists, func, select
from sqlalchemy.orm import aliased

from messaging.blasts.lifecycle import RowState
from messaging.store.schema import deliveries, supporters, suppressions
from messaging.store.sql.dialect import SqlDialect

#: Email row states that mean the alert's email reaches (or reached) the address.
REACHING: Final = (RowState.PENDING, RowState.SENDING, RowState.SENT, RowState.DELIVERED)


def email_fallback(
    conn: Connection, dialect: SqlDialect, blast_id: str, supporter_ids: Sequence[int]
) -> tuple[set[int], list[int]]:
    """See :meth:`messaging.ports.LedgerClaims.email_fallback`."""
    address = func.lower(supporters.c.email)
    eligible = dict(
        conn.execute(
            select(supporters.c.id, address).where(
                dialect.among(supporters.c.id, supporter_ids),
                supporters.c.email_opt_in.is_(True),
                supporters.c.email.is_not(None),
                ~exists().where(suppressions.c.channel == "email", suppressions.c.value == address),
            )
        ).all()
    )
    if not eligible:
        return set(), []
    in_blast = and_(deliveries.c.blast_id == blast_id, deliveries.c.channel == "email")
    own = dict(
        conn.execute(
            select(deliveries.c.supporter_id, deliveries.c.state).where(
                in_blast, dialect.among(deliveries.c.supporter_id, list(eligible))
            )
        ).all()
    )
    # The live (not duplicate) row of each address: the household's message.
    live = dict(
        conn.execute(
            select(deliveries.c.destination, deliveries.c.state).where(
                in_blast,
                dialect.among(deliveries.c.destination, sorted(set(eligible.values()))),
                deliveries.c.state != RowState.DUPLICATE,
            )
        ).all()
    )
    reached = {sid for sid, address in eligible.items() if live.get(address) in REACHING}
    # One new row per address (a household in the batch: its first supporter); the
    # partial unique index turns a racing write of a live address into nothing.
    first: dict[str, int] = {}
    for sid, address in sorted(eligible.items()):
        if sid not in own and address not in live:
            first.setdefault(address, sid)
    added: list[int] = []
    if first:
        now = datetime.now(UTC)
        inserted = conn.execute(
            dialect.insert(deliveries)
            .values(
                [
                    {
                        "blast_id": blast_id,
                        "channel": "email",
                        "supporter_id": sid,
                        "destination": address,
                        "state": RowState.PENDING,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for address, sid in first.items()
                ]
            )
            .on_conflict_do_nothing()
            .returning(deliveries.c.supporter_id)
        ).all()
        added = sorted(int(r[0]) for r in inserted)
        reached.update(added)
    return reached, added


def fallback_by_timezone(conn: Connection, blast_id: str) -> dict[str | None, int]:
    """Pending SMS rows per time zone whose address's email row in the blast is pending
    (the dry run's "would fall back")."""
    sms, email, live = aliased(deliveries), aliased(deliveries), aliased(deliveries)
    query = (
        select(supporters.c.timezone, func.count())
        .select_from(
            sms.join(supporters, supporters.c.id == sms.c.supporter_id).join(
                email,
                and_(
                    email.c.blast_id == sms.c.blast_id,
                    email.c.channel == "email",
                    email.c.supporter_id == sms.c.supporter_id,
                ),
            )
        )
        .where(
            sms.c.blast_id == blast_id,
            sms.c.channel == "sms",
            sms.c.state == RowState.PENDING,
            exists().where(
                live.c.blast_id == blast_id,
                live.c.channel == "email",
                live.c.destination == email.c.destination,
                live.c.state == RowState.PENDING,
            ),
        )
        .group_by(supporters.c.timezone)
    )
    return {tz: int(n) for tz, n in conn.execute(query)}
