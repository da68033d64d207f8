"""``rapid supporters import FILE.csv`` (contract §5): stream a voter-file export into the store.

The file is read once to prove it is UTF-8 text, then streamed through :mod:`csv` one batch at
a time: each row is normalised field by field (a bad phone drops the phone, not the
supporter), batches are upserted by external id, and every rejected field or row is written
with its reason to ``FILE.rejects.csv``, numbered as a spreadsheet numbers rows (header = 1).
Memory is bounded whatever the file's size: the batch being parsed and the one being
written, plus caches of bounded size (phone exchanges, email domains, tag spellings).

This module runs the import; the file's checks are :mod:`.csv_file`, a row's parsing
:mod:`.row_parser`, the batches :mod:`.batches`, the rejects file :mod:`.rejects`.
"""

import csv
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from messaging.ports import BatchResult, SupporterWriter
from messaging.supporters.batches import Batch, read_batches
from messaging.supporters.csv_file import check_text, read_header
from messaging.supporters.rejects import RejectsFile, rejects_path_for, spreadsheet_safe
from messaging.supporters.row_parser import RowParser

# Still importable from here (callers written before the split).
__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ImportReport",
    "import_csv",
    "rejects_path_for",
    "spreadsheet_safe",
]

log = structlog.get_logger(__name__)

#: Rows per transaction. Measured on PostgreSQL (benchmarks/bench_import.py): throughput is
#: flat from 2,000 to 20,000 rows; 5,000 keeps a batch to a few megabytes and a transaction
#: short enough not to hold locks for long.
DEFAULT_BATCH_SIZE = 5_000

#: The interpreter's thread switch interval during an import, in seconds (default 0.005).
#: The writer thread needs the GIL a dozen times per batch (each statement, each COPY
#: flush) while the parsing thread holds it; at 5 ms a wait, that doubled the time a batch
#: took to write. 1 ms keeps the two overlapping. Restored when the import ends.
SWITCH_INTERVAL_S = 0.001


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did. ``rejects_path`` is None when nothing was rejected."""

    rows_read: int
    inserted: int
    updated: int
    rows_rejected: int
    fields_rejected: int
    rejects_path: Path | None
    new_topics: tuple[str, ...]
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types, for ``--json``."""
        return {
            "rows_read": self.rows_read,
            "inserted": self.inserted,
            "updated": self.updated,
            "rows_rejected": self.rows_rejected,
            "fields_rejected": self.fields_rejected,
            "rejects_path": str(self.rejects_path) if self.rejects_path else None,
            "new_topics": list(self.new_topics),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def import_csv(
    path: Path,
    writer: SupporterWriter,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    default_region: str = "US",
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Upsert the supporters in the CSV at ``path`` by ``external_id``; see the module doc.

    Raises :class:`InputError` before writing anything when the file is not UTF-8 CSV text
    or has no ``external_id`` column. ``on_progress`` gets the number of rows read so far
    after each batch is committed. A CSV syntax error deep in the file stops the import
    there (earlier batches stay committed; importing again is idempotent).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.perf_counter()
    check_text(path)
    rejects = RejectsFile(rejects_path_for(path))
    totals = _Totals()

    def finish(batch: Batch, write: Future[BatchResult]) -> None:
        result = write.result()
        totals.add(batch, result.inserted, result.updated, result.new_topics)
        rejects.write(batch.rejects())
        if on_progress is not None:
            on_progress(totals.rows_read)

    # One thread writes batch N while this one parses batch N+1: the database works in its
    # own process, so the two overlap (and psycopg releases the GIL while it waits). A
    # batch is handed over only after the previous one committed, so batches commit in
    # file order, a failed batch stops the import, and memory holds two batches at most.
    pending: tuple[Batch, Future[BatchResult]] | None = None
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    try:
        with (
            path.open(encoding="utf-8-sig", newline="") as stream,
            ThreadPoolExecutor(1, thread_name_prefix="supporters-import") as pool,
        ):
            records = csv.reader(stream)
            header, custom, width = read_header(path, records)
            parser = RowParser(header, default_region, custom)
            columns_present = frozenset(header) - {"external_id"} | (
                {"fields"} if custom else set()
            )
            try:
                for batch in read_batches(records, parser, batch_size, path, width):
                    if pending is not None:
                        done, pending = pending, None
                        finish(*done)
                    rows = [kept.row for kept in batch.rows]
                    pending = (batch, pool.submit(writer.write_batch, rows, columns_present))
            finally:
                # Also when the file turns bad mid-way: what was sent is committed, so
                # count it and write its rejects before the error goes up.
                if pending is not None:
                    done, pending = pending, None
                    finish(*done)
    finally:
        sys.setswitchinterval(switch_interval)
        rejects_path = rejects.close()
    report = ImportReport(
        rows_read=totals.rows_read,
        inserted=totals.inserted,
        updated=totals.updated,
        rows_rejected=totals.rows_rejected,
        fields_rejected=totals.fields_rejected,
        rejects_path=rejects_path,
        new_topics=tuple(sorted(totals.new_topics)),
        elapsed_s=time.perf_counter() - started,
    )
    log.info(
        "supporters.import.finished",
        file=path.name,
        **{k: v for k, v in report.to_dict().items() if k not in ("rejects_path", "new_topics")},
    )
    return report


@dataclass(slots=True)
class _Totals:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    rows_rejected: int = 0
    fields_rejected: int = 0
    new_topics: frozenset[str] = frozenset()

    def add(self, batch: Batch, inserted: int, updated: int, new_topics: frozenset[str]) -> None:
        self.rows_read += batch.rows_read
        self.inserted += inserted
        self.updated += updated
        self.rows_rejected += len(batch.dropped)
        self.fields_rejected += batch.fields_rejected
        self.new_topics |= new_topics
