"""The circuit breakers' window over the ledger (:class:`~messaging.ports.BreakerWindow`)."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from messaging.blasts.lifecycle import RowState
from messaging.ports import RecentOutcomes
from messaging.safety.breakers import CARRIER_FILTERING_CODES, NOT_COUNTED_AS_FAILURES
from messaging.store.schema import deliveries

_FINISHED = (RowState.SENT, RowState.DELIVERED, RowState.FAILED)


class SqlBreakerWindow:
    """Two reads per evaluation: the blast's last ``window`` finished rows by when they
    finished (the blast's rows only, through the (blast, channel, state) index), and its SMS
    sent so far (an index-only count)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def recent(self, blast_id: str, window: int) -> RecentOutcomes:
        """See :class:`~messaging.ports.BreakerWindow`."""
        last = (
            select(deliveries.c.state, deliveries.c.error_code)
            .where(deliveries.c.blast_id == blast_id, deliveries.c.state.in_(_FINISHED))
            .order_by(deliveries.c.updated_at.desc())
            .limit(window)
            .subquery()
        )
        failed = (last.c.state == RowState.FAILED) & func.coalesce(last.c.error_code, "").not_in(
            sorted(NOT_COUNTED_AS_FAILURES)
        )
        with self.engine.connect() as conn:
            sends, n_failed, filtered = conn.execute(
                select(
                    func.count(),
                    func.count().filter(failed),
                    func.count().filter(
                        failed & last.c.error_code.in_(sorted(CARRIER_FILTERING_CODES))
                    ),
                ).select_from(last)
            ).one()
            sms_sent = conn.execute(
                select(func.count())
                .select_from(deliveries)
                .where(
                    deliveries.c.blast_id == blast_id,
                    deliveries.c.channel == "sms",
                    deliveries.c.state.in_((RowState.SENT, RowState.DELIVERED)),
                )
            ).scalar_one()
        return RecentOutcomes(int(sends), int(n_failed), int(filtered), int(sms_sent))
