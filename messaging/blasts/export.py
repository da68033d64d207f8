"""Per-recipient export of a blast (contract §6 ``rapid blast export``, §7 its HTTP twin).

One CSV row per recipient and channel, in ledger order, streamed: the store yields rows
from a server-side cursor and :func:`csv_chunks` turns them into text a few thousand rows at
a time, so a million-row blast goes out in bounded memory (``benchmarks/bench_export.py``).
Cells that a spreadsheet would run as a formula are neutralised as in the import's rejects
file (a leading ``'``); E.164 phone numbers are left as they are.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Final, NamedTuple, Protocol, TextIO

from messaging.supporters.rejects import spreadsheet_safe

#: The export's columns, in order (contract §6).
EXPORT_HEADER: Final = (
    "external_id",
    "channel",
    "destination",
    "state",
    "error_code",
    "sent_at",
    "delivered_at",
    "clicked_at",
    "variant",
)
#: Rows formatted per text chunk: large enough that the per-chunk cost vanishes, small
#: enough that a chunk is a few hundred kilobytes.
CHUNK_ROWS: Final = 2_000

_E164 = re.compile(r"\+[1-9]\d{1,14}")
#: First characters :func:`spreadsheet_safe` may have to neutralise (it decides).
_RISKY_STARTS = frozenset("=+-@\t\r \ufeff")


class ExportRow(NamedTuple):
    """One ledger row as exported; ``external_id`` is None if the supporter was erased."""

    external_id: str | None
    channel: str
    destination: str
    state: str
    error_code: str | None
    sent_at: datetime | None
    delivered_at: datetime | None
    clicked_at: datetime | None
    variant: int | None


class ExportStore(Protocol):
    """Reads a blast's ledger for export."""

    def export_rows(self, blast_id: str) -> Iterator[ExportRow]:
        """Every ledger row of the blast, by channel then supporter, streamed (the caller
        must exhaust or close the iterator: it holds a database connection)."""
        ...


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    # SQLite hands back naive datetimes; everything we store is UTC.
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: str | None) -> str:
    if not value:
        return ""
    if value[0] not in _RISKY_STARTS or _E164.fullmatch(value):  # the common case, cheaply
        return value
    return spreadsheet_safe(value)


def as_cells(row: ExportRow) -> tuple[str, ...]:
    """One row as the CSV's cells."""
    return (
        _text(row.external_id),
        row.channel,
        _text(row.destination),
        row.state,
        _text(row.error_code),
        _time(row.sent_at),
        _time(row.delivered_at),
        _time(row.clicked_at),
        "" if row.variant is None else str(row.variant),
    )


def csv_chunks(rows: Iterable[ExportRow], chunk_rows: int = CHUNK_ROWS) -> Iterator[str]:
    """The export as CSV text: the header, then chunks of ``chunk_rows`` rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_HEADER)
    pending = 0
    for row in rows:
        writer.writerow(as_cells(row))
        pending += 1
        if pending >= chunk_rows:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def write_csv(rows: Iterable[ExportRow], out: TextIO) -> int:
    """Write the export to ``out``; returns the number of rows (the header not counted)."""
    counted = _Counted(rows)
    for chunk in csv_chunks(counted):
        out.write(chunk)
    return counted.n


class _Counted:
    """Counts what passes through."""

    def __init__(self, rows: Iterable[ExportRow]) -> None:
        self._rows = rows
        self.n = 0

    def __iter__(self) -> Iterator[ExportRow]:
        for row in self._rows:
            self.n += 1
            yield row
