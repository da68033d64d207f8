"""Tests for messaging.content.sms_encoding: GSM-7 detection, look-alike normalisation, exact segments."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

from messaging.content.sms_encoding import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    GSM7_LOOKALIKES,
    SegmentInfo,
    is_gsm7,
    normalize_for_gsm,
    segment_info,
)

T = TypeVar("T")

# The numbers are written out here rather than imported, so a wrong constant in the module
# cannot make its own tests pass.
GSM_SINGLE, GSM_PART = 160, 153
UCS_SINGLE, UCS_PART = 70, 67

EURO = "€"
EMOJI = "😀"  # U+1F600, outside the BMP: one surrogate pair in UTF-16
ESC = "\x1b"

#: Every character the GSM 03.38 default alphabet and its extension table can carry.
GSM_CHARS = sorted(GSM7_BASIC | GSM7_EXTENSION)


# --- Reference packers -------------------------------------------------------------------------
# Written the way an encoder works, on the wire units themselves, not on per-character widths
# like the module: cut the unit stream every `part` units, but never end a part on the first
# half of a pair (an escape septet, a high surrogate).


def reference_gsm_segments(text: str) -> int:
    """Segments for a GSM-7 text, by cutting its septet stream (escape + char for extensions)."""
    septets: list[str] = []
    for char in text:
        septets.extend((ESC, char) if char in "\f^{}\\[]~|€" else (char,))
    return _cut(septets, single=GSM_SINGLE, part=GSM_PART, first_half=lambda unit: unit == ESC)


def reference_ucs2_segments(text: str) -> int:
    """Segments for a UCS-2 text, by cutting its UTF-16 code-unit stream."""
    data = text.encode("utf-16-be")
    units = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return _cut(units, single=UCS_SINGLE, part=UCS_PART, first_half=lambda u: 0xD800 <= u < 0xDC00)


def _cut(units: Sequence[T], single: int, part: int, first_half: Callable[[T], bool]) -> int:
    """Count the parts `units` is cut into, backing off one unit rather than split a pair."""
    if len(units) <= single:
        return 1
    segments = 0
    while units:
        take = min(part, len(units))
        if take < len(units) and first_half(units[take - 1]):
            take -= 1
        units = units[take:]
        segments += 1
    return segments


# --- is_gsm7 and the alphabet --------------------------------------------------------------------


def test_alphabet_has_the_sizes_of_3gpp_23_038() -> None:
    # Given the tables, then 128 codes minus the escape, and 10 extension characters.
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert ESC not in GSM7_BASIC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Plain ASCII, digits 0123456789 and @ $ % & * ( ) ! ? #",
        "éèùìòÇØøÅåÄÖÑÜ§¿äöñüàÆæßÉ",
        "ΔΦΓΛΩΠΨΣΘΞ",
        "£¥¤¡",
        "Line\nbreak\rand return",
        "^{}\\[~]|€\f",
    ],
)
def test_gsm_text_is_gsm7(text: str) -> None:
    # Given text made only of GSM basic and extension characters, then it is GSM-7.
    assert is_gsm7(text)


@pytest.mark.parametrize(
    "text",
    [
        "ç",  # 0x09 is the capital Ç; the small one is not in the alphabet
        "ł",
        "`",  # ASCII, but not GSM
        "\t",  # ASCII, but not GSM
        "e\u0301",  # decomposed é: code points are judged as they are
        "’",
        EMOJI,
        "警報",
    ],
)
def test_non_gsm_character_is_not_gsm7(text: str) -> None:
    # Given one character outside GSM-7, then the text is not GSM-7.
    assert not is_gsm7(f"Alert {text} now")


# --- segment_info: GSM-7 boundaries --------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments", "per_segment"),
    [(1, 1, 160), (160, 1, 160), (161, 2, 153), (306, 2, 153), (307, 3, 153), (459, 3, 153)],
)
def test_gsm_boundaries(length: int, segments: int, per_segment: int) -> None:
    # Given a GSM text of `length` one-septet characters
    text = "a" * length
    # When it is measured
    info = segment_info(text)
    # Then it fits one 160-septet message, or 153-septet parts beyond that
    assert info == SegmentInfo("GSM-7", segments, length, per_segment)


def test_empty_body_is_one_gsm_segment() -> None:
    # Given an empty body, when measured, then one segment of nothing (a send is never free).
    assert segment_info("") == SegmentInfo("GSM-7", 1, 0, 160)


def test_extension_characters_count_two_septets() -> None:
    # Given 80 euro signs: 160 septets, exactly one message
    assert segment_info(EURO * 80) == SegmentInfo("GSM-7", 1, 160, 160)
    # Given 81: 162 septets; 76 (152 septets) fit the first part, the 77th would straddle it,
    # so the second part carries the other 5
    assert segment_info(EURO * 81) == SegmentInfo("GSM-7", 2, 162, 153)
    assert reference_gsm_segments(EURO * 81) == 2


def test_all_extension_text_needs_a_segment_more_than_division_says() -> None:
    # Given 153 euro signs: 306 septets, which division would put in 2 x 153
    text = EURO * 153
    # When measured
    info = segment_info(text)
    # Then each part holds only 76 of them (an escape pair cannot be split): 76 + 76 + 1
    assert info.units == 306
    assert -(-info.units // GSM_PART) == 2
    assert info.segments == 3


def test_extension_character_at_a_part_boundary_moves_to_the_next_part() -> None:
    # Given 152 septets, then a euro sign that would take septets 153 and 154, then 152 more
    text = "a" * 152 + EURO + "b" * 152
    # When measured
    info = segment_info(text)
    # Then the euro starts part two (152 | € + 151 | 1), though 306 septets would fill two
    assert info.units == 306
    assert info.segments == 3
    # And one septet earlier it fits at the end of part one: 151 + € | 152 b
    assert segment_info("a" * 151 + EURO + "b" * 152).segments == 2


def test_extension_characters_that_fit_one_message_are_not_packed() -> None:
    # Given 158 plain septets and one euro: 160 septets, no part header needed
    info = segment_info("a" * 158 + EURO)
    # Then it is one message, the single-message capacity applies
    assert info == SegmentInfo("GSM-7", 1, 160, 160)


# --- segment_info: UCS-2 boundaries --------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "segments", "per_segment"),
    [(1, 1, 70), (70, 1, 70), (71, 2, 67), (134, 2, 67), (135, 3, 67), (201, 3, 67)],
)
def test_ucs2_boundaries(length: int, segments: int, per_segment: int) -> None:
    # Given a text of `length` BMP characters, one of which (ł) is not GSM
    text = "ł" + "a" * (length - 1)
    # When it is measured
    info = segment_info(text)
    # Then the whole text is UCS-2: 70 units in one message, 67 per part beyond that
    assert info == SegmentInfo("UCS-2", segments, length, per_segment)


def test_emoji_count_two_code_units() -> None:
    # Given 35 emoji: 70 UTF-16 code units, one message
    assert segment_info(EMOJI * 35) == SegmentInfo("UCS-2", 1, 70, 70)
    # Given 36: 72 units, 33 per part (66 units), so 2
    assert segment_info(EMOJI * 36) == SegmentInfo("UCS-2", 2, 72, 67)


def test_surrogate_pair_at_a_part_boundary_moves_to_the_next_part() -> None:
    # Given 66 units, then an emoji that would take units 67 and 68, then 66 more
    text = "ł" + "a" * 65 + EMOJI + "b" * 66
    # When measured
    info = segment_info(text)
    # Then the emoji starts part two (66 | pair + 65 | 1), though 134 units would fill two
    assert info.units == 134
    assert info.segments == 3
    assert reference_ucs2_segments(text) == 3
    # And one unit earlier it fits at the end of part one
    assert segment_info("ł" + "a" * 64 + EMOJI + "b" * 66).segments == 2


def test_all_emoji_text_needs_a_segment_more_than_division_says() -> None:
    # Given 67 emoji: 134 units, which division would put in 2 x 67
    info = segment_info(EMOJI * 67)
    # Then each part holds 33 pairs: 33 + 33 + 1
    assert info.units == 134
    assert info.segments == 3


def test_one_non_gsm_character_makes_the_whole_text_ucs2() -> None:
    # Given 100 GSM characters and one curly apostrophe
    text = "a" * 100 + "’"
    # Then the text is UCS-2, two parts instead of one message
    assert segment_info(text) == SegmentInfo("UCS-2", 2, 101, 67)
    assert segment_info("a" * 101) == SegmentInfo("GSM-7", 1, 101, 160)


# --- Property-style: the module agrees with the reference packers --------------------------------


def random_text(rng: random.Random, narrow: Sequence[str], wide: Sequence[str], part: int) -> str:
    """A random text of 1- and 2-unit characters, mostly ending just short of `k` full parts.

    Texts whose length is spread at random rarely put a pair on a part boundary; those filled to
    a few units short of a multiple of the part size do so often, and division undercounts them.
    """
    if rng.random() < 0.75:
        target = rng.randint(2, 5) * part - rng.randint(0, 3)
    else:
        target = rng.randint(0, 10 * part)
    wide_share = rng.random()
    chars: list[str] = []
    units = 0
    while units < target:
        is_wide = rng.random() < wide_share
        chars.append(rng.choice(wide if is_wide else narrow))
        units += 2 if is_wide else 1
    return "".join(chars)


@pytest.mark.parametrize("seed", range(20))
def test_gsm_segments_match_reference_packer(seed: int) -> None:
    # Given random GSM texts, with and without extension characters, many near part boundaries
    rng = random.Random(seed)
    straddles = 0
    for _ in range(50):
        text = random_text(rng, sorted(GSM7_BASIC), sorted(GSM7_EXTENSION), GSM_PART)
        # When measured
        info = segment_info(text)
        # Then the encoding, septet count and segments agree with the wire-level packer
        assert info.encoding == "GSM-7"
        assert info.units == len(text) + sum(char in GSM7_EXTENSION for char in text)
        assert info.segments == reference_gsm_segments(text), text
        straddles += info.units > GSM_SINGLE and info.segments > -(-info.units // GSM_PART)
    # And the sample did exercise the no-split rule, where division would have undercounted
    assert straddles > 0


@pytest.mark.parametrize("seed", range(20))
def test_ucs2_segments_match_reference_packer(seed: int) -> None:
    # Given random non-GSM texts mixing BMP characters and emoji, many near part boundaries
    rng = random.Random(seed)
    straddles = 0
    for _ in range(50):
        text = "ł" + random_text(rng, ["a", "ł", "警", "€"], [EMOJI, "🇵", "👍"], UCS_PART)
        # When measured
        info = segment_info(text)
        # Then the code-unit count and segments agree with the UTF-16 packer
        assert info.encoding == "UCS-2"
        assert info.units == len(text.encode("utf-16-le")) // 2
        assert info.segments == reference_ucs2_segments(text), text
        straddles += info.units > UCS_SINGLE and info.segments > -(-info.units // UCS_PART)
    # And the sample did exercise the no-split rule
    assert straddles > 0


# --- normalize_for_gsm ---------------------------------------------------------------------------


def test_typographic_text_becomes_gsm_and_costs_half() -> None:
    # Given an alert written in a word processor: curly quotes, dashes, an ellipsis, no-break space
    original = (
        "Flood warning: “Mill Bridge” closed — use the A40 detour. "
        "Don’t drive through water… Shelter at St\u00a0John’s Hall, 9am–9pm."
    )
    # When it is normalised
    normalized = normalize_for_gsm(original)
    # Then only the look-alikes changed
    assert normalized == (
        'Flood warning: "Mill Bridge" closed - use the A40 detour. '
        "Don't drive through water... Shelter at St John's Hall, 9am-9pm."
    )
    # And the UCS-2 text of 2 segments became a GSM-7 text of 1
    before, after = segment_info(original), segment_info(normalized)
    assert (before.encoding, before.segments) == ("UCS-2", 2)
    assert (after.encoding, after.segments) == ("GSM-7", 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("‘a’ ‚b‛ 5′", "'a' 'b' 5'"),
        ("“a” „b‟ 5″ «c»", '"a" "b" 5" "c"'),
        ("a–b—c−d‐e‑f―g", "a-b-c-d-e-f-g"),
        ("wait…", "wait..."),
        (
            "10\u00a0km 10\u202fkm 1\u2009000 1\u2007000 a\u200ab a\u3000b",
            "10 km 10 km 1 000 1 000 a b a b",
        ),
        ("zero\u200bwidth\u200d join\u200cer\u2060\ufeff", "zerowidth joiner"),
        ("evac\u00aduation", "evacuation"),
        ("• Shelter open\n• Roads closed", "- Shelter open\n- Roads closed"),
        ("tab\tseparated", "tab separated"),
        ("line\u2028para\u2029end", "line\npara\nend"),
        ("ＡＬＥＲＴ！ ＃１ ＄５", "ALERT! #1 $5"),
        ("`quoted´", "'quoted'"),
        ("Cafe\u0301 Zu\u0308rich", "Café Zürich"),  # NFC composes into GSM letters
        ("\u2126 \u212b", "Ω Å"),  # ohm and ångström signs are canonically Ω and Å
    ],
)
def test_lookalikes_are_replaced(text: str, expected: str) -> None:
    # Given text whose only non-GSM characters are look-alikes, when normalised, then GSM-7
    assert normalize_for_gsm(text) == expected
    assert is_gsm7(expected)


@pytest.mark.parametrize(("char", "replacement"), sorted(GSM7_LOOKALIKES.items()))
def test_every_table_entry_maps_a_non_gsm_character_to_gsm(char: str, replacement: str) -> None:
    # Given each entry of the table, then it replaces something GSM lacks with something it has
    assert not is_gsm7(char)
    assert is_gsm7(replacement)
    assert normalize_for_gsm(f"x{char}y") == f"x{replacement}y"


@pytest.mark.parametrize(
    "text",
    [
        "Zażółć gęślą jaźń — „uwaga”…",  # Polish: ż ó ł ć ę ś ą ź ń are not GSM
        "Stay safe ❤️ — family 👨\u200d👩\u200d👧 “home”",  # ZWJ sequence must survive
        "避難所は“市役所”です…",
        "Ça va? Très «bien» ç",  # small ç is not GSM
        "tab\there ł",
    ],
)
def test_genuine_unicode_text_is_returned_unchanged(text: str) -> None:
    # Given text with characters no table entry can make GSM
    # When normalised
    normalized = normalize_for_gsm(text)
    # Then nothing changes, not even the look-alikes (they would save nothing in UCS-2)
    assert normalized is text
    assert segment_info(normalized).encoding == "UCS-2"


def test_gsm_text_is_returned_unchanged() -> None:
    # Given every GSM character, accented and Greek ones included
    text = "".join(GSM_CHARS) + " éèùìòÇØøÅåÄÖÑÜ§¿äöñüà ΔΦΓΛΩΠΨΣΘΞ £¥¤¡ €[]"
    # When normalised, then it is the very same string
    assert normalize_for_gsm(text) is text


@pytest.mark.parametrize(
    "text", ["“Hello” — you’re…", "plain", "Zażółć “x”", "a\u00a0b\u200b", "ＡＢＣ…"]
)
def test_normalisation_is_idempotent(text: str) -> None:
    # Given any text, when normalised twice, then the second pass changes nothing
    once = normalize_for_gsm(text)
    assert normalize_for_gsm(once) == once


def test_segment_info_is_frozen() -> None:
    # Given a result, when someone tries to change it, then it refuses
    info = segment_info("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.segments = 2  # type: ignore[misc]
