"""A supporters CSV's records in batches of unique external ids (the last row of an id wins).

Blank lines are skipped, a quote never closed stops the import, and a row superseded by a
later one with the same external id is reported as a reject.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from messaging.errors import InputError
from messaging.supporters.rejects import Reject
from messaging.supporters.row_parser import Kept, RowParser


@dataclass(slots=True)
class Batch:
    """One batch to write: its kept rows, how many records it read, the rows it dropped."""

    rows: list[Kept]
    rows_read: int
    dropped: list[Reject]  # whole rows: no external id, or superseded by a later row

    def rejects(self) -> list[Reject]:
        """Every reject of the batch, in row order."""
        lines = [reject for kept in self.rows for reject in kept.rejects] + self.dropped
        lines.sort(key=lambda reject: reject.row)
        return lines

    @property
    def fields_rejected(self) -> int:
        """Fields dropped from kept rows."""
        return sum(len(kept.rejects) for kept in self.rows)


def read_batches(
    records: Iterator[list[str]], parser: RowParser, batch_size: int, path: Path, width: int
) -> Iterator[Batch]:
    """Parsed rows in batches of unique external ids; the last row of an id wins."""
    by_id: dict[str, Kept] = {}
    dropped: list[Reject] = []
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
        if isinstance(parsed, Reject):
            dropped.append(parsed)
        else:
            earlier = by_id.pop(parsed.row.external_id, None)
            if earlier is not None:
                dropped.append(
                    Reject(
                        earlier.number,
                        parsed.row.external_id,
                        "external_id",
                        parsed.row.external_id,
                        f"duplicate external_id: superseded by row {number}",
                    )
                )
            by_id[parsed.row.external_id] = parsed
        if rows_read >= batch_size:
            yield Batch(list(by_id.values()), rows_read, dropped)
            by_id, dropped, rows_read = {}, [], 0
    if rows_read:
        yield Batch(list(by_id.values()), rows_read, dropped)
