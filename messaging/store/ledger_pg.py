"""The ledger's two hottest statements, written for PostgreSQL: one round trip, arrays bound.

A claim and an outcome write run once per send batch (1,000 emails, hundreds of texts).
Portable SQLAlchemy spends most of its time on them binding a thousand ``IN`` parameters
and running a thousand one-row ``UPDATE``\\ s; here each is one statement over arrays:
~30 µs of our CPU per recipient became a few. SQLite (the embedded default) keeps the
portable forms in :mod:`messaging.store.ledger`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, TextClause, text

from messaging import states

#: Take ``pending`` rows (the at-most-once guard) and read their supporters' template fields
#: in the same statement. The LEFT JOIN keeps a row whose supporter was erased meanwhile.
CLAIM_SQL = """
    WITH taken AS (
        UPDATE deliveries
        SET state = :sending, attempts = attempts + 1, updated_at = :now
        WHERE blast_id = :blast_id AND channel = :channel
          AND supporter_id = ANY(:ids) AND state = :pending
        RETURNING supporter_id, destination, attempts
    )
    SELECT taken.supporter_id, taken.destination, taken.attempts, s.first_sms_at, {fields}
    FROM taken LEFT JOIN supporters s ON s.id = taken.supporter_id
    ORDER BY taken.supporter_id
"""

#: Write every outcome of a batch; only rows still ``sending`` move (a cancel may have
#: closed some meanwhile).
RECORD_SQL = text(
    """
    UPDATE deliveries AS d
    SET state = v.state, provider_message_id = v.pid, sender = v.sender,
        error_code = v.code, error = v.error, segments = v.segments,
        deferred_until = v.deferred_until, updated_at = :now,
        sent_at = CASE WHEN v.state = :sent THEN CAST(:now AS timestamptz) END
    FROM unnest(
        CAST(:sids AS bigint[]), CAST(:states AS text[]), CAST(:pids AS text[]),
        CAST(:senders AS text[]), CAST(:codes AS text[]), CAST(:errors AS text[]),
        CAST(:segments AS int[]), CAST(:deferred AS timestamptz[])
    ) AS v(sid, state, pid, sender, code, error, segments, deferred_until)
    WHERE d.blast_id = :blast_id AND d.channel = :channel
      AND d.supporter_id = v.sid AND d.state = :sending
    """
)


@lru_cache(maxsize=4)
def _claim_statement(fields: tuple[str, ...]) -> TextClause:
    return text(CLAIM_SQL.format(fields=", ".join(f"s.{f}" for f in fields)))


def claim_rows(
    conn: Connection,
    blast_id: str,
    channel: str,
    supporter_ids: Sequence[int],
    fields: Sequence[str],
    now: datetime,
) -> Sequence[Any]:
    """``(supporter_id, destination, attempts, first_sms_at, *fields)`` of the rows taken."""
    return (
        conn.execute(
            _claim_statement(tuple(fields)),
            {
                "sending": states.SENDING,
                "pending": states.PENDING,
                "now": now,
                "blast_id": blast_id,
                "channel": channel,
                "ids": list(supporter_ids),
            },
        ).all()  # fetchall: iterating the result fetches row by row
    )


def record_outcomes(
    conn: Connection, blast_id: str, channel: str, outcomes: Sequence[Any], now: datetime
) -> None:
    """Write ``outcomes`` (:class:`~messaging.store.ledger.Outcome`) in one statement."""
    conn.execute(
        RECORD_SQL,
        {
            "now": now,
            "sent": states.SENT,
            "sending": states.SENDING,
            "blast_id": blast_id,
            "channel": channel,
            "sids": [o.supporter_id for o in outcomes],
            "states": [o.state for o in outcomes],
            "pids": [o.provider_message_id for o in outcomes],
            "senders": [o.sender for o in outcomes],
            "codes": [o.error_code for o in outcomes],
            "errors": [(o.error or None) and o.error[:1000] for o in outcomes],
            "segments": [o.segments for o in outcomes],
            "deferred": [o.deferred_until for o in outcomes],
        },
    )
