"""Replies in the system of record (table ``replies``, migration 0006)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Engine, func, select

from messaging.blasts.lifecycle import RowState
from messaging.ports import NewReply, Reply
from messaging.store.schema import blasts, deliveries, replies, supporters
from messaging.store.sql.dialect import dialect_for

#: How many of the newest blasts a reply is matched against. The ledger's primary key leads
#: with the blast, so each is one index probe; older blasts are not what a reply answers.
RECENT_BLASTS: Final = 200
#: Ledger states of an SMS that reached the provider (a reply can only answer those).
_HANDED_OVER: Final = (RowState.SENT, RowState.DELIVERED, RowState.FAILED)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything we store is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _reply(row: Any) -> Reply:
    return Reply(
        message_sid=row.message_sid,
        from_number=row.from_number,
        to_number=row.to_number,
        body=row.body,
        kind=row.kind,
        reason=row.reason or "",
        supporter_id=row.supporter_id,
        blast_id=row.blast_id,
        received_at=_aware(row.received_at) or datetime.now(UTC),
        id=int(row.id),
        review_verdict=row.review_verdict,
        reviewed_by=row.reviewed_by,
        reviewed_at=_aware(row.reviewed_at),
    )


class SqlReplyStore:
    """A :class:`~messaging.ports.ReplyStore` on the ``replies`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = dialect_for(engine)

    def seen(self, message_sid: str) -> bool:
        """True when this MessageSid was stored before."""
        query = select(replies.c.id).where(replies.c.message_sid == message_sid)
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def add(self, reply: NewReply) -> Reply | None:
        """Store one reply; None if its MessageSid was already stored."""
        values = {
            "message_sid": reply.message_sid or None,
            "from_number": reply.from_number[:32],
            "to_number": (reply.to_number or "")[:32] or None,
            "body": reply.body,
            "kind": reply.kind,
            "reason": reply.reason[:64] or None,
            "supporter_id": reply.supporter_id,
            "blast_id": reply.blast_id,
            "received_at": reply.received_at,
        }
        stmt = (
            self._dialect.insert(replies)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["message_sid"])
            .returning(replies)
        )
        with self._engine.begin() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _reply(row)

    def last_sms_to(self, phone: str) -> tuple[int | None, str | None]:
        """See :meth:`messaging.ports.ReplyLog.last_sms_to`."""
        with self._engine.connect() as conn:
            ids = list(
                conn.scalars(
                    select(supporters.c.id).where(supporters.c.phone == phone).order_by("id")
                )
            )
            if not ids:
                return None, None
            recent = select(blasts.c.blast_id).order_by(blasts.c.created_at.desc())
            row = conn.execute(
                select(deliveries.c.supporter_id, deliveries.c.blast_id)
                .where(
                    deliveries.c.blast_id.in_(recent.limit(RECENT_BLASTS).scalar_subquery()),
                    deliveries.c.channel == "sms",
                    self._dialect.among(deliveries.c.supporter_id, ids),
                    deliveries.c.destination == phone,
                    deliveries.c.state.in_(_HANDED_OVER),
                )
                .order_by(deliveries.c.sent_at.desc().nulls_last())
                .limit(1)
            ).first()
        if row is None:
            return ids[0], None
        return int(row.supporter_id), str(row.blast_id)

    def replies(
        self, *, needs_review: bool = False, from_number: str | None = None, limit: int = 100
    ) -> list[Reply]:
        """Newest first; only those awaiting review with ``needs_review``, only one phone's
        with ``from_number``."""
        query = select(replies).order_by(replies.c.received_at.desc(), replies.c.id.desc())
        if needs_review:
            query = query.where(replies.c.kind == "needs_review", replies.c.reviewed_at.is_(None))
        if from_number is not None:
            query = query.where(replies.c.from_number == from_number)
        with self._engine.connect() as conn:
            return [_reply(r) for r in conn.execute(query.limit(limit))]

    def review(self, reply_id: int, verdict: str, by: str, at: datetime) -> Reply | None:
        """Record a person's verdict; None if there is no such reply."""
        with self._engine.begin() as conn:
            row = conn.execute(
                replies.update()
                .where(replies.c.id == reply_id)
                .values(review_verdict=verdict, reviewed_by=by[:128], reviewed_at=at)
                .returning(replies)
            ).first()
        return None if row is None else _reply(row)

    def counts(self, blast_id: str) -> dict[str, int]:
        """Replies answering ``blast_id`` per kind (one index range on (blast_id, kind))."""
        query = (
            select(replies.c.kind, func.count())
            .where(replies.c.blast_id == blast_id)
            .group_by(replies.c.kind)
        )
        with self._engine.connect() as conn:
            return {kind: int(n) for kind, n in conn.execute(query)}
