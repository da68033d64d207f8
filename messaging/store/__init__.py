"""The system of record behind the store ports (see README.md in this folder).

:func:`open_stores` builds every SQL store over one engine (PostgreSQL or SQLite, one dialect
object picked once); :func:`memory_stores` builds their in-memory twins over shared tables.
Both return one :class:`Stores`, which ``workers/app.py`` wires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from messaging.access.audit import AuditStore
    from messaging.access.operators import OperatorStore
    from messaging.blasts.export import ExportStore
    from messaging.compliance.suppression import SuppressionList
    from messaging.content.links import LinkStore
    from messaging.ports import (
        BlastStore,
        DeliveryEventStore,
        LedgerRetention,
        LedgerStore,
        ReplyStore,
        ReportStore,
        SupporterWriter,
        TopicStore,
    )


@dataclass(frozen=True, slots=True)
class Stores:
    """Every store of the system of record, on one backend."""

    ledger: LedgerStore
    blasts: BlastStore
    topics: TopicStore
    suppressions: SuppressionList
    supporters: SupporterWriter
    delivery_events: DeliveryEventStore
    reports: ReportStore
    operators: OperatorStore
    audit: AuditStore
    replies: ReplyStore
    #: Counts folding and pruning of the ledger (issue #21).
    retention: LedgerRetention
    #: Tracked short links and clicks (messaging/content/links.py).
    links: LinkStore
    #: Per-recipient export of a blast (messaging/blasts/export.py).
    exports: ExportStore


def open_stores(engine: Engine) -> Stores:
    """The SQL stores over ``engine``."""
    from messaging.store.sql.audit import SqlAuditStore
    from messaging.store.sql.blasts import SqlBlastStore
    from messaging.store.sql.counts import SqlLedgerRetention
    from messaging.store.sql.delivery_events import SqlDeliveryEventStore
    from messaging.store.sql.dialect import dialect_for
    from messaging.store.sql.export import SqlExportStore
    from messaging.store.sql.ledger import SqlLedger
    from messaging.store.sql.links import SqlLinkStore
    from messaging.store.sql.operators import SqlOperatorStore
    from messaging.store.sql.replies import SqlReplyStore
    from messaging.store.sql.reports import SqlReportStore
    from messaging.store.sql.supporters import SqlSupporterWriter
    from messaging.store.sql.suppressions import SqlSuppressionList
    from messaging.store.sql.topics import SqlTopicStore

    dialect = dialect_for(engine)
    return Stores(
        ledger=SqlLedger(engine, dialect),
        blasts=SqlBlastStore(engine, dialect),
        topics=SqlTopicStore(engine, dialect),
        suppressions=SqlSuppressionList(engine, dialect),
        supporters=SqlSupporterWriter(engine, dialect),
        delivery_events=SqlDeliveryEventStore(engine, dialect),
        reports=SqlReportStore(engine),
        operators=SqlOperatorStore(engine),
        audit=SqlAuditStore(engine),
        replies=SqlReplyStore(engine),
        retention=SqlLedgerRetention(engine, dialect),
        links=SqlLinkStore(engine, dialect),
        exports=SqlExportStore(engine),
    )


def memory_stores() -> Stores:
    """In-memory twins sharing one set of tables (for unit tests and the fast tier)."""
    from messaging.store.memory.audit import MemoryAuditStore
    from messaging.store.memory.blasts import MemoryBlastStore
    from messaging.store.memory.delivery_events import MemoryDeliveryEventStore
    from messaging.store.memory.export import MemoryExportStore
    from messaging.store.memory.ledger import MemoryLedger
    from messaging.store.memory.links import MemoryLinkStore
    from messaging.store.memory.operators import MemoryOperatorStore
    from messaging.store.memory.replies import MemoryReplyStore
    from messaging.store.memory.reports import MemoryReportStore
    from messaging.store.memory.retention import MemoryLedgerRetention
    from messaging.store.memory.supporters import MemorySupporterWriter
    from messaging.store.memory.suppressions import MemorySuppressionList
    from messaging.store.memory.tables import MemoryTables
    from messaging.store.memory.topics import MemoryTopicStore

    tables = MemoryTables()
    return Stores(
        ledger=MemoryLedger(tables),
        blasts=MemoryBlastStore(tables),
        topics=MemoryTopicStore(tables),
        suppressions=MemorySuppressionList(tables),
        supporters=MemorySupporterWriter(tables),
        delivery_events=MemoryDeliveryEventStore(tables),
        reports=MemoryReportStore(tables),
        operators=MemoryOperatorStore(),
        audit=MemoryAuditStore(),
        replies=MemoryReplyStore(),
        retention=MemoryLedgerRetention(tables),
        links=MemoryLinkStore(tables),
        exports=MemoryExportStore(tables),
    )
