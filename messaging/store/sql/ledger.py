"""The delivery ledger (outbox): one store made of its expansion, claims and sweep parts.

Every statement works on a batch in one round trip; each part lives in its own module
(``ledger_expansion``, ``ledger_claims``, ``ledger_sweep``) and this class gives them the
engine and the dialect they share.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from messaging.store.sql.dialect import SqlDialect, dialect_for
from messaging.store.sql.ledger_claims import SqlLedgerClaims
from messaging.store.sql.ledger_expansion import SqlLedgerExpansion
from messaging.store.sql.ledger_sweep import SqlLedgerSweep


class SqlLedger(SqlLedgerExpansion, SqlLedgerClaims, SqlLedgerSweep):
    """:class:`~messaging.ports.LedgerStore` on the ``deliveries`` table."""

    def __init__(self, engine: Engine, dialect: SqlDialect | None = None) -> None:
        self.engine = engine
        self._dialect = dialect or dialect_for(engine)
        # See SqlLedgerExpansion.refresh_statistics and refresh_audience_statistics.
        self._estimate_rows = 0.0
        self._audience_estimate_rows = 0.0
        self._audience_analyzing = threading.Lock()
