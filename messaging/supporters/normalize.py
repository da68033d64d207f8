"""Field normalisers for supporter records (contract §5): pure, fast, one value at a time.

Each takes what a person typed into a spreadsheet and returns the stored form, or raises
:class:`FieldRejected` with a reason an operator can act on. They are on the hot path of a
million-row import, so the common cases take fast paths whose results are proven (by
``tests/test_normalize.py``) to equal the libraries' own; anything unusual goes to the
library.

Reasons never quote a whole phone number or email address: they may end up in logs.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable
from functools import cache, lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
    LOCAL_PART_MAX_LENGTH,
)
from phonenumbers import (
    NumberParseException,
    PhoneNumberFormat,
    PhoneNumberType,
    ValidationResult,
    is_number_type_geographical,
)
from phonenumbers.timezone import time_zones_for_geographical_number, time_zones_for_number

from messaging.content.topics import TOPIC_NAME_RE
from messaging.errors import InputError

#: What a tag may look like once trimmed and lower-cased.
TAG_RE = re.compile(r"^[a-z0-9_-]{1,64}$")

#: USPS codes of the states, DC, the territories, the freely associated states and the
#: military "states" (AA, AE, AP): everything a US voter file can carry in a state column.
US_STATE_CODES = frozenset(
    (
        "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL",
        "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE",
        "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD",
        "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
        "AS", "GU", "MP", "PR", "VI", "UM", "FM", "MH", "PW", "AA", "AE", "AP",
    )
)  # fmt: skip

#: Spellings :func:`parse_bool` understands, lower-cased.
TRUE_WORDS = frozenset({"true", "yes", "1", "y", "t"})
#: Spellings :func:`parse_bool` understands as "no", lower-cased.
FALSE_WORDS = frozenset({"false", "no", "0", "n", "f"})

#: The zone phonenumbers answers when it does not know.
_UNKNOWN_ZONE = "Etc/Unknown"
#: Names in the tz database that are not places: never a supporter's time zone.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})

#: Country calling code of the North American Numbering Plan (US, Canada, the Caribbean).
_NANP_CODE = 1
#: NANP numbers are valid, and in one time zone, by exchange: phonenumbers' patterns for +1
#: decide both from the area code and exchange (the first six national digits) and its
#: time-zone prefixes for +1 are never longer, so one library call serves a whole exchange.
#: Barbados and Jamaica split some exchanges by the seventh digit, so their area codes are
#: keyed on seven. ``tests/test_normalize.py`` re-derives both facts from the metadata.
_NANP_KEY_DIGITS = 6
#: Area codes whose exchanges phonenumbers splits by the seventh digit (BB 246, JM 658/876).
NANP_FINE_AREA_CODES = frozenset({"246", "658", "876"})
#: Exchanges remembered. A national file touches some 150,000; garbage numbers could name
#: all 800,000 possible, so the cache is bounded (about 150 bytes an entry).
_NANP_CACHE_SIZE = 262_144


class FieldRejected(InputError):
    """One field of one record is unusable; the record itself may still be kept.

    ``value`` is the offending part when only part of the field was bad (one tag of several).
    """

    def __init__(self, field: str, reason: str, *, value: str | None = None) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.value = value


#: Called with each rejected part of a multi-valued field; ``None`` means raise it.
OnReject = Callable[[FieldRejected], None] | None


# --- phone --------------------------------------------------------------------------------


def normalize_phone(raw: str, default_region: str = "US") -> str:
    """``raw`` as E.164 (``+14155550100``); a national number is read in ``default_region``."""
    text = raw.strip()
    national = _nanp_national(text, default_region)
    if national is not None:
        valid, _zone = _nanp_info(national)
        if valid:
            return "+1" + national
        raise FieldRejected("phone", "not a valid phone number")
    if _NANP_LOCAL_SHAPE.fullmatch(text) and _is_nanp_region(default_region):
        # 555-0100: what phonenumbers calls "possible local only", and the commonest
        # rejection in voter files; the library takes 30 µs to say so.
        raise FieldRejected("phone", "no area code")
    e164, reason = _normalize_phone_slow(text, default_region)
    if e164 is None:
        raise FieldRejected("phone", reason)
    return e164


#: A plainly written NANP number: optional +1 or 1, area code (maybe in parentheses),
#: exchange and line, separated by nothing, spaces, dots or dashes.
_NANP_SHAPE = re.compile(r"(\+?1[ .-]*)?\(?([2-9]\d\d)\)?[ .-]*(\d{3})[ .-]*(\d{4})")
#: A NANP number without its area code: exchange and line only.
_NANP_LOCAL_SHAPE = re.compile(r"[2-9]\d\d[ .-]*\d{4}")


def _nanp_national(text: str, default_region: str) -> str | None:
    """The 10 national digits of a plainly written NANP number, else None (use the library).

    Covers what voter files hold: ``(415) 555-0100``, ``415.555.0101``, ``+1 415 555 0102``,
    ``1-415-555-0103``. Anything else (letters, extensions, other countries, wrong lengths,
    an area code starting with 0 or 1) goes to phonenumbers, which also words the reason
    for a rejection.
    """
    match = _NANP_SHAPE.fullmatch(text)
    if match is None:
        return None
    prefix, npa, nxx, line = match.groups()
    # Without +1 the number is national, so it is NANP only if the default region is.
    if not (prefix and prefix[0] == "+") and not _is_nanp_region(default_region):
        return None
    return npa + nxx + line


@cache
def _is_nanp_region(region: str) -> bool:
    return bool(phonenumbers.country_code_for_region(region) == _NANP_CODE)


def _nanp_info(national: str) -> tuple[bool, str | None]:
    """(valid, single time zone) of a 10-digit NANP number, cached per exchange."""
    if national[:3] in NANP_FINE_AREA_CODES:
        return _nanp_exchange(national[: _NANP_KEY_DIGITS + 1])
    return _nanp_exchange(national[:_NANP_KEY_DIGITS])


@lru_cache(maxsize=_NANP_CACHE_SIZE)
def _nanp_exchange(key: str) -> tuple[bool, str | None]:
    # Any number of the exchange answers for all of them (see _NANP_KEY_DIGITS).
    return _nanp_lookup(key.ljust(10, "0"))


def _nanp_lookup(national: str) -> tuple[bool, str | None]:
    # What is_valid_number and time_zones_for_number answer, with the number's type (the
    # expensive part: a dozen regexes per region) computed once instead of four times.
    number = phonenumbers.PhoneNumber(country_code=_NANP_CODE, national_number=int(national))
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        return False, None
    if not is_number_type_geographical(kind, _NANP_CODE):
        return True, None  # toll-free, premium, personal: no place, no zone
    return True, _one_zone(time_zones_for_geographical_number(number))


@lru_cache(maxsize=4096)
def _normalize_phone_slow(text: str, default_region: str) -> tuple[str | None, str]:
    """(E.164, "") or (None, reason), by the library; cached, as "N/A" and "none" repeat."""
    if not text:
        return None, "blank"
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as exc:
        return None, _PARSE_REASONS.get(exc.error_type, "not a phone number")
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE:
        return None, _POSSIBLE_REASONS.get(possible, "not a valid phone number")
    if not phonenumbers.is_valid_number(number):
        return None, "not a valid phone number"
    return phonenumbers.format_number(number, PhoneNumberFormat.E164), ""


_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_POSSIBLE_REASONS = {
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "no area code",
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits",
}


def _one_zone(zones: tuple[str, ...] | list[str]) -> str | None:
    # A number spanning zones (parts of Idaho's 208, a toll-free 800) tells us nothing usable.
    if len(zones) == 1 and zones[0] != _UNKNOWN_ZONE:
        return str(zones[0])
    return None


# --- email --------------------------------------------------------------------------------


def normalize_email(raw: str) -> str:
    """``raw`` syntax-checked, in email-validator's normalized form (no DNS lookups).

    That form keeps the local part as typed (NFC-normalised, and lower-cased only for the
    RFC 2142 role names such as ``Postmaster``, which are case-insensitive by definition),
    and lower-cases the domain (IDNA round trip, so ``xn--`` labels come back as Unicode).
    The rejection reason is the library's own message.
    """
    text = raw.strip()
    fast = _email_fast(text)
    if fast is not None:
        return fast
    try:
        return str(validate_email(text, check_deliverability=False).normalized)
    except EmailNotValidError as exc:
        raise FieldRejected("email", str(exc)) from None


def _email_fast(text: str) -> str | None:
    """The plain-ASCII dot-atom case, with the domain's verdict cached; None → ask the library.

    Equal to the library's answer whenever it answers (the local part rules are the
    library's own regex; the domain is validated by the library once per domain); every
    doubtful case (quotes, Unicode, a long address, an invalid domain) returns None.
    """
    local, at, domain = text.partition("@")
    if (
        not at
        or "@" in domain
        or not text.isascii()
        or len(local) > LOCAL_PART_MAX_LENGTH
        or not DOT_ATOM_TEXT.match(local)
    ):
        return None
    domains = _email_domain(domain)
    if domains is None:
        return None
    unicode_domain, ascii_domain = domains
    if local.lower() in CASE_INSENSITIVE_MAILBOX_NAMES:
        local = local.lower()
    normalized = f"{local}@{unicode_domain}"
    longest = max(len(text), len(normalized.encode()), len(local) + 1 + len(ascii_domain))
    return normalized if longest <= EMAIL_MAX_LENGTH else None


@lru_cache(maxsize=65_536)
def _email_domain(domain: str) -> tuple[str, str] | None:
    """(normalized domain, its ASCII form) if the library accepts it, else None."""
    try:
        result = validate_email("a@" + domain, check_deliverability=False)
    except EmailNotValidError:
        return None
    return str(result.domain), str(result.ascii_domain)


# --- time zones ---------------------------------------------------------------------------


def derive_timezone(phone: str | None, postal_code: str | None) -> str | None:
    """The supporter's IANA zone from an E.164 phone, else from a US ZIP, else None.

    The phone wins because it is what we message and people keep numbers when they move;
    it counts only when it maps to exactly one zone.
    """
    if phone:
        zone = _phone_zone(phone)
        if zone is not None:
            return zone
    if postal_code:
        return _zip_zones().get(postal_code[:5])
    return None


def _phone_zone(e164: str) -> str | None:
    if e164.startswith("+1") and len(e164) == 12:
        valid, zone = _nanp_info(e164[2:])
        return zone if valid else None
    try:
        number = phonenumbers.parse(e164)
    except NumberParseException:
        return None
    return _one_zone(time_zones_for_number(number))


@cache
def _zip_zones() -> dict[str, str]:
    """ZIP5 → IANA zone, built once on first use from the ``zipcodes`` data.

    ``zipcodes.matching`` scans all 42,000 ZIPs on every call; one pass here makes each
    lookup a dict hit. The pass goes one leading digit at a time because
    ``zipcodes.list_all()`` keeps every record as a Python dict for the life of the process
    (about 80 MB), which a bounded-memory import cannot afford.
    """
    import zipcodes  # loads ~40 MB of ZIP data: only when a ZIP is actually needed

    zones = _known_zones()
    table: dict[str, str] = {}
    for digit in "0123456789":
        for record in zipcodes.similar_to(digit):
            # The data has blanks (military ZIPs) and a few non-zones ("Napakiak").
            zone = zones.get(str(record["timezone"]).lower())
            if zone is not None:
                table[str(record["zip_code"])] = zone
    return table


@cache
def _known_zones() -> dict[str, str]:
    """Lower-cased IANA name → its canonical spelling, for every zone this host knows."""
    return {
        name.lower(): name for name in zoneinfo.available_timezones() if name not in _NOT_PLACES
    }


@lru_cache(maxsize=1024)
def validate_timezone(raw: str) -> str:
    """``raw`` as a canonical IANA zone name (case-insensitive: ``america/new_york`` works)."""
    zone = _known_zones().get(raw.strip().lower())
    if zone is None:
        raise FieldRejected("timezone", "not an IANA time zone name (e.g. America/New_York)")
    return zone


# --- the rest -----------------------------------------------------------------------------


def parse_bool(raw: str) -> bool | None:
    """true/false, yes/no, 1/0, y/n, t/f in any case; blank → None."""
    word = raw.strip().lower()
    if not word:
        return None
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise FieldRejected("opt_in", "not one of true/false, yes/no, 1/0")


def parse_tags(raw: str, on_reject: OnReject = None) -> str | None:
    """``;``-separated tags stored as ``";a;b;"`` (trimmed, lower-cased, unique, sorted).

    A bad tag is reported to ``on_reject`` and left out, the rest kept; without
    ``on_reject`` it raises. No usable tag → None.
    """
    tags, bad = _split_tags(raw)
    _report("tags", bad, on_reject)
    return ";" + ";".join(tags) + ";" if tags else None


def parse_topics(raw: str, on_reject: OnReject = None) -> tuple[str, ...]:
    """``;``-separated alert topic names (trimmed, lower-cased, unique, sorted)."""
    topics, bad = _split_topics(raw)
    _report("topics", bad, on_reject)
    return topics


#: Why a tag or topic was refused.
_TAG_RULE = "not a valid tag: use 1-64 characters of a-z, 0-9, _ and -"
_TOPIC_RULE = "not a valid topic name: use 1-64 characters of a-z, 0-9 and -"

# A voter file repeats a handful of tag and topic combinations a million times: split each
# spelling once.


@lru_cache(maxsize=16_384)
def _split_tags(raw: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _split(raw, TAG_RE)


@lru_cache(maxsize=16_384)
def _split_topics(raw: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return _split(raw, TOPIC_NAME_RE)


def _split(raw: str, pattern: re.Pattern[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(good names, sorted and unique; bad parts as typed) of a ``;``-separated list."""
    kept: set[str] = set()
    bad: list[str] = []
    for part in raw.split(";"):
        name = part.strip().lower()
        if not name:
            continue
        if pattern.match(name):
            kept.add(name)
        else:
            bad.append(part.strip())
    return tuple(sorted(kept)), tuple(bad)


def _report(field: str, bad: tuple[str, ...], on_reject: OnReject) -> None:
    rule = _TAG_RULE if field == "tags" else _TOPIC_RULE
    for part in bad:
        rejected = FieldRejected(field, rule, value=part)
        if on_reject is None:
            raise rejected
        on_reject(rejected)


_ZIP_RE = re.compile(r"^(\d{3,5})(?:[- ]?(\d{4}))?$")


def normalize_postal_code(raw: str) -> str:
    """A US ZIP or ZIP+4 as its 5-digit ZIP, leading zeros restored."""
    text = raw.strip()
    match = _ZIP_RE.match(text)
    if match is None:
        raise FieldRejected("postal_code", "not a US ZIP code (12345 or 12345-6789)")
    # Excel reads ZIPs as numbers and drops their leading zeros (02139 → 2139, 00601 → 601,
    # 00601-1234 → 6011234), so a 3- or 4-digit ZIP, alone or before its +4, is a New
    # England, New Jersey or Puerto Rico ZIP: pad it back. The regex splits a bare 7-9
    # digit value into ZIP and +4 because the +4 is always exactly four digits.
    head = match.group(1)
    return head.zfill(5)


def normalize_state(raw: str) -> str:
    """A 2-letter USPS state or territory code, upper-case."""
    code = raw.strip().upper()
    if code not in US_STATE_CODES:
        raise FieldRejected("state", "not a 2-letter US state or territory code")
    return code


#: Line breaks and other control characters (C0, C1, Unicode line separators): in a name
#: they would start a new line of an SMS, or a new header in an email subject.
_CONTROL_RUNS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Bidirectional overrides and isolates: they make "Ann" display as something else.
_BIDI_CONTROLS = re.compile(r"[\u202a-\u202e\u2066-\u2069]")


def normalize_text(raw: str, field: str, max_len: int) -> str:
    """Free text (a name): control characters become one space, bidi controls go, trimmed.

    Longer than the column holds → rejected, not truncated.
    """
    text = _BIDI_CONTROLS.sub("", _CONTROL_RUNS.sub(" ", raw)).strip()
    if len(text) > max_len:
        raise FieldRejected(field, f"longer than {max_len} characters")
    return text
