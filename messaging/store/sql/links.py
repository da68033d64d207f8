"""Tracked short links (:class:`messaging.content.links.LinkStore`) and counts per A/B variant."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, func, select, tuple_

from messaging.blasts.lifecycle import RowState
from messaging.content.links import Link
from messaging.ports import ByChannel
from messaging.store.schema import deliveries, links
from messaging.store.sql.dialect import SqlDialect, dialect_for


def url_hash(url: str) -> str:
    """The unique key of a URL within a blast's channel."""
    return hashlib.sha256(url.encode()).hexdigest()


class SqlLinkStore:
    """:class:`~messaging.content.links.LinkStore` on the ``links`` table and the ledger."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self._engine = engine
        self._dialect = dialect or dialect_for(engine)

    def register(self, blast_id: str, channel: str, urls: Sequence[str]) -> dict[str, int]:
        """Insert what is new (a racing sender's insert wins the same row), then read all."""
        if not urls:
            return {}
        now = datetime.now(UTC)
        by_hash = {url_hash(u): u for u in urls}
        with self._engine.begin() as conn:
            conn.execute(
                self._dialect.insert(links)
                .values(
                    [
                        {
                            "blast_id": blast_id,
                            "channel": channel,
                            "url_hash": h,
                            "url": u,
                            "created_at": now,
                        }
                        for h, u in by_hash.items()
                    ]
                )
                .on_conflict_do_nothing()
            )
            rows = conn.execute(
                select(links.c.url_hash, links.c.id).where(
                    links.c.blast_id == blast_id,
                    links.c.channel == channel,
                    links.c.url_hash.in_(list(by_hash)),
                )
            ).all()
        return {by_hash[h]: int(i) for h, i in rows}

    def get(self, link_id: int) -> Link | None:
        """One primary-key read."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(links.c.blast_id, links.c.channel, links.c.url).where(links.c.id == link_id)
            ).first()
        return Link(link_id, row.blast_id, row.channel, row.url) if row else None

    def click(self, clicks: Sequence[tuple[str, str, int]]) -> int:
        """One conditional update over the ledger's primary key: only first clicks set it."""
        if not clicks:
            return 0
        now = datetime.now(UTC)
        key = tuple_(deliveries.c.blast_id, deliveries.c.channel, deliveries.c.supporter_id)
        with self._engine.begin() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(key.in_(sorted(set(clicks))), deliveries.c.clicked_at.is_(None))
                .values(clicked_at=now)
            ).rowcount
        return int(moved or 0)

    def settle_winner(self, blast_id: str, winner: int, now: datetime) -> int:
        """Give the rows held for the winner its variant and release them at ``now`` (the
        sweep's release takes them); 0 once done, so a second pick changes nothing."""
        with self._engine.begin() as conn:
            moved = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel.in_(["sms", "email"]),
                    deliveries.c.state == RowState.DEFERRED,
                    deliveries.c.variant.is_(None),
                )
                .values(variant=winner, deferred_until=now, updated_at=now)
            ).rowcount
        return int(moved or 0)

    def row_variants(
        self, blast_id: str, channel: str, supporter_ids: Sequence[int]
    ) -> dict[int, int]:
        """The variant on each of these rows (rows without one are left out)."""
        if not supporter_ids:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.supporter_id, deliveries.c.variant).where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel == channel,
                    self._dialect.among(deliveries.c.supporter_id, list(supporter_ids)),
                    deliveries.c.variant.is_not(None),
                )
            ).all()
        return {int(sid): int(v) for sid, v in rows}


def click_counts(conn: Connection, blast_ids: list[str]) -> dict[str, dict[str, int]]:
    """Clicked rows per blast and channel, read through the partial index of clicked rows."""
    if not blast_ids:
        return {}
    query = (
        select(deliveries.c.blast_id, deliveries.c.channel, func.count())
        .where(deliveries.c.blast_id.in_(blast_ids), deliveries.c.clicked_at.is_not(None))
        .group_by(deliveries.c.blast_id, deliveries.c.channel)
    )
    out: dict[str, dict[str, int]] = {}
    for blast_id, channel, n in conn.execute(query):
        out.setdefault(blast_id, {})[channel] = int(n)
    return out


def variant_counts(conn: Connection, blast_id: str) -> dict[int, ByChannel]:
    """``{variant: {channel: {state: rows, "clicked": rows}}}`` of a blast with variants
    (one grouped read of its ledger rows)."""
    query = (
        select(
            deliveries.c.variant,
            deliveries.c.channel,
            deliveries.c.state,
            func.count(),
            func.count(deliveries.c.clicked_at),
        )
        .where(deliveries.c.blast_id == blast_id, deliveries.c.variant.is_not(None))
        .group_by(deliveries.c.variant, deliveries.c.channel, deliveries.c.state)
    )
    out: dict[int, ByChannel] = {}
    for variant, channel, state, n, clicked in conn.execute(query):
        by_state = out.setdefault(int(variant), {}).setdefault(channel, {})
        by_state[state] = int(n)
        if clicked:
            by_state["clicked"] = by_state.get("clicked", 0) + int(clicked)
    return out
