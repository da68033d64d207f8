"""Array parameters for PostgreSQL as array text (``{1,2,3}``), for ``CAST(:p AS type[])``.

A send batch binds arrays of a thousand values (the ids it claims, the addresses it checks
against the suppression list, its outcomes). psycopg dumps a Python list element by element
in Python: a statement binding a thousand ints took 0.64 ms of client CPU and one binding a
thousand addresses 1.0 ms, against ~0.2 ms with the array joined in C into one string
(benchmarks/NOTES.md). At a few arrays a batch, that was ~8 % of an email sender's CPU. The
server parses the text with ``array_in``, as it does any array parameter sent as text.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Between quoted elements: ``"a","b"``. Counting its quotes tells whether a value has one.
_BETWEEN = '","'


def int_array(values: Sequence[int | None]) -> str:
    """``values`` (ints, or None for NULL) as array text. Every value goes through ``int``:
    nothing but digits and a sign reaches the statement."""
    try:
        return "{" + ",".join(map(str, map(int, values))) + "}"  # type: ignore[arg-type]
    except TypeError:  # a None among them
        return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def text_array(values: Sequence[str | None]) -> str:
    """``values`` (strings, or None for NULL) as array text.

    Every element is quoted, so commas, braces, spaces and the word NULL in a value stay
    data. A value with a quote or a backslash is escaped; the usual batch has neither and
    is joined in one call."""
    if not values:
        return "{}"
    try:
        body = _BETWEEN.join(values)  # type: ignore[arg-type]
    except TypeError:  # a None among them
        return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"
    if "\\" in body or body.count('"') != 3 * (len(values) - 1):
        return "{" + ",".join(_quoted(v) for v in values) + "}"  # type: ignore[arg-type]
    return '{"' + body + '"}'


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
