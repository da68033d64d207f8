"""A supporters CSV before its rows: proving it is UTF-8 text, and reading its header.

Both checks run before anything is written, so a bad file imports nothing. The header says
which known columns (contract §5) the file has and which other columns become custom
fields.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from pathlib import Path

from messaging.errors import InputError
from messaging.ports import SUPPORTER_COLUMNS

#: Columns the import understands (contract §5); any other column is kept as a custom field
#: (``supporters.fields``), under its name lower-cased with every run of other characters
#: than ``a-z0-9_`` made one ``_`` (``Ward #`` → ``ward``).
KNOWN_COLUMNS = frozenset({"external_id", *SUPPORTER_COLUMNS, "topics"}) - {"fields"}
#: Most custom columns one file may bring (each is a key in every supporter's JSON).
MAX_CUSTOM_COLUMNS = 100

#: Bytes read at a time while checking that the file is text.
_SNIFF_CHUNK_BYTES = 1 << 20
#: Header cells we are willing to echo in an error: a data row mistaken for a header holds
#: phones and emails, which must not reach a terminal log.
_SAFE_HEADER_RE = re.compile(r"^[A-Za-z0-9 _-]{1,40}$")


def check_text(path: Path) -> None:
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


def read_header(
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
