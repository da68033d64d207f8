"""One CSV record into a :class:`~messaging.ports.SupporterRow`, field by field.

A bad phone drops the phone, not the supporter: each field is normalised on its own and
what it drops is kept as a reject with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from messaging.ports import SupporterRow
from messaging.ports.stores import EXTERNAL_ID_LEN, NAME_LEN
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
from messaging.supporters.rejects import Reject

#: Longest value a custom field keeps; longer is rejected, not truncated.
FIELD_VALUE_MAX_CHARS = 500
#: Longest external id and name the columns hold; longer values are rejected, not truncated.
_MAX_ID = EXTERNAL_ID_LEN
_MAX_NAME = NAME_LEN


@dataclass(slots=True)
class Kept:
    """A row kept (spreadsheet row ``number``), and what was dropped from it."""

    number: int
    row: SupporterRow
    rejects: list[Reject]


#: Where each field sits in a :class:`SupporterRow` (and in the parser's scratch list).
_SLOT = {name: index for index, name in enumerate(SupporterRow._fields)}
_PHONE, _POSTAL, _TIMEZONE = _SLOT["phone"], _SLOT["postal_code"], _SLOT["timezone"]
_SMS, _EMAIL_OPT, _TOPICS = _SLOT["sms_opt_in"], _SLOT["email_opt_in"], _SLOT["topics"]
_FIELDS = _SLOT["fields"]
#: A row with nothing in it yet: every optional field None, no topics.
_EMPTY_ROW: list[Any] = [None] * len(SupporterRow._fields)
_EMPTY_ROW[_TOPICS] = ()


class RowParser:
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

    def parse(self, number: int, cells: list[str]) -> Kept | Reject:
        """Record ``number``'s row, or the reject of the whole row (no usable external id)."""
        width = len(cells)
        external_id = cells[self._id].strip() if self._id < width else ""
        if not external_id:
            return Reject(number, "", "external_id", "", "missing external_id: row skipped")
        if len(external_id) > _MAX_ID:
            return Reject(
                number,
                external_id,
                "external_id",
                external_id,
                f"external_id longer than {_MAX_ID} characters: row skipped",
            )
        values = _EMPTY_ROW.copy()
        values[0] = external_id
        rejects: list[Reject] = []
        # Short records (trailing commas lost) read as blank cells: "no value".
        for slot, index, name, normalise in self._single:
            raw = cells[index].strip() if index < width else ""
            if raw:
                try:
                    values[slot] = normalise(raw)
                except FieldRejected as exc:
                    rejects.append(Reject(number, external_id, name, raw, exc.reason))
        for slot, index, name, split in self._multi:
            raw = cells[index].strip() if index < width else ""
            if raw:
                bad: list[FieldRejected] = []
                values[slot] = split(raw, bad.append)
                for part in bad:
                    rejects.append(Reject(number, external_id, name, part.value or "", part.reason))
        if self._custom:
            fields: dict[str, str] = {}
            for name, index in self._custom:
                raw = cells[index] if index < width else ""
                try:
                    fields[name] = normalize_text(raw, name, FIELD_VALUE_MAX_CHARS)
                except FieldRejected as exc:
                    rejects.append(Reject(number, external_id, name, raw.strip(), exc.reason))
                    fields[name] = ""
            values[_FIELDS] = fields
        if values[_TIMEZONE] is None and self._derive:
            values[_TIMEZONE] = derive_timezone(values[_PHONE], values[_POSTAL])
        # Blank or unusable opt-in: no consent (contract §5).
        values[_SMS] = values[_SMS] is True
        values[_EMAIL_OPT] = values[_EMAIL_OPT] is True
        return Kept(number, SupporterRow._make(values), rejects)
