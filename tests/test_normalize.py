"""Tests for messaging.supporters.normalize: what voter-file cells become, and why not."""

from __future__ import annotations

import random
import re._constants as sre_constants
import re._parser as sre_parser
import subprocess
import sys
from typing import Any

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneMetadata, PhoneNumberFormat
from phonenumbers.timezone import time_zones_for_number
from phonenumbers.tzdata import TIMEZONE_DATA

from messaging.errors import InputError
from messaging.supporters import normalize
from messaging.supporters.normalize import (
    NANP_FINE_AREA_CODES,
    FieldRejected,
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

# --- phone --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("(415) 555-0100", "+14155550100"),
        ("415.555.0101", "+14155550101"),
        ("+1 415 555 0102", "+14155550102"),
        ("1-415-555-0103", "+14155550103"),
        ("4155550104", "+14155550104"),
        ("  +1 (212) 555-0199 ", "+12125550199"),
        ("415-555-0100 x12", "+14155550100"),  # the extension is not part of the number
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_spellings_become_e164(raw: str, e164: str) -> None:
    # Given a phone as people type it, when normalised, then it is E.164.
    assert normalize_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("555-0100", "no area code"),
        ("555 0100", "no area code"),
        ("12345", "too short"),
        ("n/a", "not a phone number"),
        ("(123) 555-0100", "not a valid phone number"),  # area codes never start with 1
        ("+1 415 555 01000000000", "too long"),
        ("", "blank"),
    ],
)
def test_bad_phones_are_rejected_with_a_reason(raw: str, reason: str) -> None:
    # Given an unusable phone, when normalised, then it is rejected with a reason that does
    # not repeat the number (reasons may reach logs).
    with pytest.raises(FieldRejected) as caught:
        normalize_phone(raw)
    assert caught.value.field == "phone"
    assert caught.value.reason == reason
    assert raw.strip() == "" or raw.strip() not in str(caught.value)


def test_plus_41_is_switzerland_not_area_code_415() -> None:
    # Given a number with a plus that is not +1, then the NANP fast path does not claim it.
    assert normalize_phone("+41 44 668 18 00") == "+41446681800"


def test_national_numbers_follow_the_default_region() -> None:
    # Given a UK national number, when the default region is GB, then it is read as British.
    assert normalize_phone("020 7946 0958", default_region="GB") == "+442079460958"
    # and a US spelling without +1 is not taken for a NANP number there.
    with pytest.raises(FieldRejected):
        normalize_phone("(415) 555-0100", default_region="GB")


def _library_phone(raw: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, "US")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def test_phone_fast_path_agrees_with_phonenumbers() -> None:
    # Given thousands of random NANP numbers in every spelling the fast path takes (real and
    # unassigned area codes, Barbados and Jamaica whose exchanges split by the 7th digit),
    # when normalised, then the answer is phonenumbers' own: same E.164, same validity.
    rng = random.Random(5)
    spellings = ["({}) {}-{}", "{}.{}.{}", "+1 {} {} {}", "1-{}-{}-{}", "{}{}{}"]
    area_codes = [*NANP_FINE_AREA_CODES, "212", "208", "800", "500", "441", "900", "987"]
    for _ in range(4000):
        npa = rng.choice(area_codes) if rng.random() < 0.5 else str(rng.randint(200, 999))
        nxx, line = str(rng.randint(100, 999)), f"{rng.randint(0, 9999):04d}"
        raw = rng.choice(spellings).format(npa, nxx, line)
        try:
            ours: str | None = normalize_phone(raw)
        except FieldRejected:
            ours = None
        assert ours == _library_phone(raw), raw


@pytest.mark.parametrize("region", ["US", "CA"])
def test_seven_digit_numbers_are_judged_like_the_library_path(region: str) -> None:
    # Given every exchange without an area code (the commonest voter-file defect, which the
    # fast path rejects without asking phonenumbers), then the verdict is the one the
    # library path gives: "no area code" (phonenumbers: possible only locally). That holds
    # even for Canada's 310-xxxx, which phonenumbers calls valid but local-only.
    for exchange in range(200, 1000):
        for line in ("0000", "2635", "9999"):
            raw = f"{exchange}-{line}"
            assert normalize._normalize_phone_slow(raw, region) == (None, "no area code")
            with pytest.raises(FieldRejected, match="no area code"):
                normalize_phone(raw, region)


def _tail_digits(items: list[Any]) -> int:
    """How many free digits (``\\d{n}``) every path through a parsed regex ends with."""
    if not items:
        return 0
    op, arg = items[-1]
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
        low, high, sub = arg
        digit = [(sre_constants.IN, [(sre_constants.CATEGORY, sre_constants.CATEGORY_DIGIT)])]
        if low == high and list(sub) == digit:
            return low + _tail_digits(items[:-1])
        return 0
    if op is sre_constants.SUBPATTERN:
        return _tail_digits(list(arg[-1]))
    if op is sre_constants.BRANCH:
        return min(_tail_digits(list(branch)) for branch in arg[1])
    return 0


def _prefixes(items: list[Any], length: int) -> set[str]:
    """Every string of ``length`` digits that a parsed phone-number regex can start with.

    Handles what phonenumbers' patterns are made of: digit literals, digit classes,
    groups, alternations and fixed repeats.
    """
    found = {""}
    for op, arg in items:
        grown: set[str] = set()
        for prefix in found:
            room = length - len(prefix)
            if room <= 0:
                grown.add(prefix)
                continue
            grown |= {prefix + tail for tail in _node_prefixes(op, arg, room)}
        found = grown
    return {prefix[:length] for prefix in found if len(prefix) >= length}


def _node_prefixes(op: Any, arg: Any, room: int) -> set[str]:
    if op is sre_constants.LITERAL:
        return {chr(arg)}
    if op is sre_constants.IN:
        digits: set[str] = set()
        for kind, value in arg:
            if kind is sre_constants.LITERAL:
                digits.add(chr(value))
            elif kind is sre_constants.RANGE:
                digits |= {chr(c) for c in range(value[0], value[1] + 1)}
            elif kind is sre_constants.CATEGORY and value is sre_constants.CATEGORY_DIGIT:
                digits |= set("0123456789")
            else:
                raise AssertionError(f"unexpected class item {kind}")
        return digits
    if op is sre_constants.SUBPATTERN:
        return _partial(list(arg[-1]), room)
    if op is sre_constants.BRANCH:
        return set().union(*(_partial(list(branch), room) for branch in arg[1]))
    if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
        low, high, sub = arg
        out: set[str] = set()
        for count in range(low, min(high, room) + 1):
            out |= _partial(list(sub) * count, room)
        return out
    raise AssertionError(f"unexpected regex node {op}")


def _partial(items: list[Any], room: int) -> set[str]:
    """Prefixes of at most ``room`` characters (shorter when the node ends first)."""
    found = {""}
    for op, arg in items:
        grown: set[str] = set()
        for prefix in found:
            left = room - len(prefix)
            if left <= 0:
                grown.add(prefix)
            else:
                grown |= {prefix + tail for tail in _node_prefixes(op, arg, left)}
        found = grown
    return {prefix[:room] for prefix in found}


def test_nanp_cache_keys_are_sound_for_this_phonenumbers_version() -> None:
    # Given phonenumbers' metadata for every +1 region, then:
    # - every number pattern ends in at least 3 free digits, so validity and type depend
    #   on at most the first 7 national digits;
    # - the patterns that look at the 7th digit all belong to NANP_FINE_AREA_CODES (the
    #   cache keys those on 7 digits, the rest on 6);
    # - the region of a number is decided by at most 6 leading digits;
    # - time-zone prefixes for +1 are at most 1 + 6 digits.
    fine_patterns = []
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]:
        metadata = PhoneMetadata.metadata_for_region(region)
        assert metadata is not None
        for kind in (
            "general_desc", "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
            "personal_number", "voip", "pager", "uan", "voicemail",
        ):  # fmt: skip
            desc = getattr(metadata, kind)
            if desc is None or desc.national_number_pattern is None:
                continue
            tail = _tail_digits(list(sre_parser.parse(desc.national_number_pattern)))
            assert tail >= 3, (region, kind)
            if tail < 4:
                fine_patterns.append(desc.national_number_pattern)
        if metadata.leading_digits:
            # Which +1 region a number belongs to is decided by its first digits (<= 6).
            leading = _partial(list(sre_parser.parse(metadata.leading_digits)), 7)
            assert max(len(prefix) for prefix in leading) <= 6, region
    fine_area_codes = set().union(*(_prefixes(list(sre_parser.parse(p)), 3) for p in fine_patterns))
    assert fine_patterns  # the test would prove nothing if it found none
    assert fine_area_codes <= NANP_FINE_AREA_CODES
    assert max(len(prefix) for prefix in TIMEZONE_DATA if prefix.startswith("1")) <= 7


def test_nanp_exchange_cache_answers_like_the_library() -> None:
    # Given many numbers that share exchanges (so most answers come from the cache), then
    # each (validity, zone) equals phonenumbers' answer for that very number.
    rng = random.Random(7)
    exchanges = [f"{rng.randint(200, 999)}{rng.randint(200, 999)}" for _ in range(150)]
    exchanges += [f"{npa}{rng.randint(200, 999)}" for npa in NANP_FINE_AREA_CODES]
    for _ in range(3000):
        national = rng.choice(exchanges) + f"{rng.randint(0, 9999):04d}"
        number = phonenumbers.parse("+1" + national)
        valid = phonenumbers.is_valid_number(number)
        zones = time_zones_for_number(number) if valid else ()
        zone = zones[0] if len(zones) == 1 and zones[0] != "Etc/Unknown" else None
        assert normalize._nanp_info(national) == (valid, zone), national


# --- time zones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "postal_code", "zone"),
    [
        ("+12125550100", None, "America/New_York"),  # Manhattan
        ("+14155550100", "10001", "America/Los_Angeles"),  # the phone wins over the ZIP
        (None, "94103", "America/Los_Angeles"),
        (None, "02139", "America/New_York"),
        (None, "00601", "America/Puerto_Rico"),
        ("+18005550100", "60601", "America/Chicago"),  # toll-free: no zone, ZIP decides
        ("+442079460958", None, "Europe/London"),
        (None, "99999", None),  # not a ZIP
        (None, None, None),
    ],
)
def test_timezone_is_derived_from_phone_then_zip(
    phone: str | None, postal_code: str | None, zone: str | None
) -> None:
    # Given what we know of a supporter, when deriving the zone, then phone first, ZIP next.
    assert derive_timezone(phone, postal_code) == zone


def test_a_number_spanning_zones_falls_back_to_the_zip() -> None:
    # Given a valid Idaho number whose block phonenumbers maps to more than one zone
    number = next(
        e164
        for e164 in (f"+1208{nxx}5550" for nxx in range(200, 1000))
        if phonenumbers.is_valid_number(phonenumbers.parse(e164))
        and len(time_zones_for_number(phonenumbers.parse(e164))) > 1
    )
    # then the phone says nothing and the ZIP decides.
    assert derive_timezone(number, None) is None
    assert derive_timezone(number, "83702") == "America/Boise"


def test_importing_normalize_loads_no_zip_data() -> None:
    # Given a fresh interpreter, when the module is imported, then the ZIP data (tens of MB)
    # is not loaded: it is built on first use.
    code = "import sys, messaging.supporters.normalize; print('zipcodes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("raw", "zone"),
    [
        ("America/New_York", "America/New_York"),
        ("america/chicago", "America/Chicago"),
        (" Pacific/Honolulu ", "Pacific/Honolulu"),
        ("UTC", "UTC"),
    ],
)
def test_valid_timezones_come_back_canonical(raw: str, zone: str) -> None:
    assert validate_timezone(raw) == zone


@pytest.mark.parametrize("raw", ["Mars/Base", "EST-ish", "localtime", "../etc/passwd", "+05:00"])
def test_invalid_timezones_are_rejected(raw: str) -> None:
    with pytest.raises(FieldRejected) as caught:
        validate_timezone(raw)
    assert caught.value.field == "timezone"


# --- email --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("User.Name@Example.COM", "User.Name@example.com"),  # local part kept as typed
        ("  zoe+news@GMAIL.com ", "zoe+news@gmail.com"),
        ("Postmaster@EXAMPLE.org", "postmaster@example.org"),  # RFC 2142 role name
        ("zoë@example.com", "zoë@example.com"),
        ("a@xn--bcher-kva.com", "a@bücher.com"),
    ],
)
def test_emails_keep_the_local_part_and_lower_the_domain(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    "raw",
    ["bad@", "a@b", "no-at-sign.example.com", "a..b@example.com", "x@localhost", "a@b@c.com",
     "name at example.org", "x@example.invalid"],
)  # fmt: skip
def test_invalid_emails_are_rejected_with_the_library_reason(raw: str) -> None:
    # Given an invalid address, then the reason is email-validator's own message.
    with pytest.raises(EmailNotValidError) as library:
        validate_email(raw, check_deliverability=False)
    with pytest.raises(FieldRejected) as caught:
        normalize_email(raw)
    assert caught.value.field == "email"
    assert caught.value.reason == str(library.value)


def test_email_fast_path_agrees_with_email_validator() -> None:
    # Given addresses across the shapes the fast path takes and refuses, then the result
    # (or the rejection) equals the library's.
    rng = random.Random(11)
    locals_ = ["a", "User.Name", "x+tag", "Info", "o'brien", "a.b.c", "_x_", "-", "a" * 64,
               "a" * 65, ".lead", "trail.", "sp ace", "quo\"te", "zoë", "WWW", "a/b=c"]  # fmt: skip
    domains = ["example.com", "EXAMPLE.ORG", "sub.Example.co.uk", "localhost", "x.test",
               "xn--bcher-kva.com", "bücher.de", "-bad.com", "a.b", "1.2.3.4", "[1.2.3.4]",
               "ex_ample.com", "example.com.", "e" * 63 + ".com", "e" * 64 + ".com"]  # fmt: skip
    for _ in range(1500):
        raw = f"{rng.choice(locals_)}@{rng.choice(domains)}"
        try:
            expected: str | None = validate_email(raw, check_deliverability=False).normalized
        except EmailNotValidError:
            expected = None
        try:
            ours: str | None = normalize_email(raw)
        except FieldRejected:
            ours = None
        assert ours == expected, raw


# --- the rest -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [("true", True), ("TRUE", True), ("Yes", True), ("1", True), ("y", True), ("T", True),
     ("false", False), ("No", False), ("0", False), ("N", False), ("f", False),
     ("", None), ("  ", None)],
)  # fmt: skip
def test_booleans(raw: str, value: bool | None) -> None:
    assert parse_bool(raw) is value


@pytest.mark.parametrize("raw", ["maybe", "2", "on", "oui"])
def test_unknown_booleans_are_rejected(raw: str) -> None:
    with pytest.raises(FieldRejected):
        parse_bool(raw)


def test_tags_are_trimmed_lowered_unique_and_sorted() -> None:
    # Given messy tags, then they are stored as ";a;b;" so one LIKE '%;tag;%' finds a tag.
    assert (
        parse_tags(" Volunteer; donor;;VOLUNTEER ;house_party") == ";donor;house_party;volunteer;"
    )
    assert parse_tags(" ; ") is None


def test_a_bad_tag_is_reported_and_the_others_kept() -> None:
    # Given one tag with a space among good ones, when parsed with a reject sink
    rejected: list[FieldRejected] = []
    tags = parse_tags("donor;big donor;volunteer", rejected.append)
    # then the good ones are kept and the bad one is reported with its value.
    assert tags == ";donor;volunteer;"
    assert [(r.field, r.value) for r in rejected] == [("tags", "big donor")]
    # and without a sink it raises.
    with pytest.raises(FieldRejected):
        parse_tags("donor;big donor")


def test_topics_are_validated_topic_names() -> None:
    rejected: list[FieldRejected] = []
    assert parse_topics("Debate; gotv;debate;bad_topic!", rejected.append) == ("debate", "gotv")
    assert [r.value for r in rejected] == ["bad_topic!"]
    assert parse_topics("") == ()


@pytest.mark.parametrize(
    ("raw", "zip5"),
    [
        ("02139", "02139"),
        ("2139", "02139"),  # Excel dropped the leading zero
        ("601", "00601"),
        ("02139-4307", "02139"),
        ("021394307", "02139"),
        ("21394307", "02139"),  # ZIP+4 as a number, leading zero dropped
        ("6011234", "00601"),
        (" 94103 ", "94103"),
    ],
)
def test_postal_codes_become_zip5(raw: str, zip5: str) -> None:
    assert normalize_postal_code(raw) == zip5


@pytest.mark.parametrize("raw", ["12", "123456", "abcde", "K1A 0B1", "94103-12"])
def test_non_zip_postal_codes_are_rejected(raw: str) -> None:
    with pytest.raises(FieldRejected):
        normalize_postal_code(raw)


def test_states_are_usps_codes() -> None:
    assert normalize_state(" pa ") == "PA"
    assert normalize_state("PR") == "PR"
    with pytest.raises(FieldRejected):
        normalize_state("Pennsylvania")


def test_text_longer_than_its_column_is_rejected_not_truncated() -> None:
    assert normalize_text("  Zoë  ", "first_name", 200) == "Zoë"
    with pytest.raises(FieldRejected):
        normalize_text("x" * 201, "first_name", 200)


def test_field_rejected_is_an_input_error() -> None:
    # Given a rejection, then entry points can treat it as an expected failure.
    error = FieldRejected("phone", "no area code")
    assert isinstance(error, InputError)
    assert str(error) == "phone: no area code"
