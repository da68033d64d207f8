"""How an SMS body is encoded, and how many segments (billed messages) it costs.

An SMS carries 140 bytes of user data. A body written entirely in the GSM 03.38 alphabet
(3GPP TS 23.038) is packed as 7-bit septets, 160 to a message; one character outside it switches
the *whole* body to UCS-2 (in practice UTF-16), 70 to a message. Longer bodies are split into
concatenated segments, each of which loses room to the header that numbers the parts. Providers
bill per segment, so a stray curly quote pasted from a word processor can double or triple the
cost of a blast; :func:`normalize_for_gsm` undoes that, :func:`segment_info` says what a body
costs.

Counting is exact rather than ``ceil(units / capacity)``: an escaped GSM character (two septets)
and a UTF-16 surrogate pair (two code units) are never split across two segments, so a segment
can end one unit short and the naive division undercounts.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "GSM7_BASIC",
    "GSM7_EXTENSION",
    "GSM7_LOOKALIKES",
    "GSM7_MULTIPART_SEPTETS",
    "GSM7_SINGLE_SEPTETS",
    "UCS2_MULTIPART_UNITS",
    "UCS2_SINGLE_UNITS",
    "Encoding",
    "SegmentInfo",
    "is_gsm7",
    "normalize_for_gsm",
    "segment_info",
]

#: The two encodings an SMS body can travel in.
Encoding = Literal["GSM-7", "UCS-2"]

#: The GSM 03.38 default alphabet, one septet each, in code order (0x00-0x7F) minus the escape
#: (0x1B), which is not a character. 0x09 is the capital ``Ç``: the small ``ç`` is not in the
#: alphabet (old handsets drew 0x09 as ``ç``, the standard says ``Ç``), so ``ç`` forces UCS-2.
GSM7_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

#: The GSM 03.38 extension table: each is sent as escape + character, so costs two septets.
GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\f^{}\\[]~|€")

_GSM7_ALL: Final[frozenset[str]] = GSM7_BASIC | GSM7_EXTENSION

#: Septets in a lone GSM-7 message (140 bytes * 8 / 7).
GSM7_SINGLE_SEPTETS: Final = 160
#: Septets in each part of a concatenated GSM-7 message: the 6-byte header (48 bits) is padded
#: to a septet boundary, 7 septets, so 160 - 7.
GSM7_MULTIPART_SEPTETS: Final = 153
#: UTF-16 code units in a lone UCS-2 message (140 bytes / 2).
UCS2_SINGLE_UNITS: Final = 70
#: UTF-16 code units in each part of a concatenated UCS-2 message ((140 - 6 header bytes) / 2).
UCS2_MULTIPART_UNITS: Final = 67


def _lookalike_table() -> dict[str, str]:
    """Build the typographic look-alike table; a function only to keep the loop's names local."""
    table: dict[str, str] = {}
    # Single quotes, apostrophes and primes: word processors "smarten" every ' typed.
    # The backtick is ASCII but not GSM, and reads as an apostrophe in a text message.
    for char in "‘’‚‛′‵ʼ´`":
        table[char] = "'"
    # Double quotes and double primes. Guillemets are quotation marks too: « Évacuez » reads
    # the same as "Évacuez" on a phone, and French accents that GSM lacks (ç, ê, â…) keep a
    # genuinely French text in UCS-2 anyway, where the table is not applied (see below).
    for char in "“”„‟″‶«»":
        table[char] = '"'
    # Hyphens, dashes and the minus sign all read as "-" in a text message. The bullet is not
    # a look-alike of anything in GSM, but it is only ever a list marker, and "- " is the
    # plain-text list marker; a bulleted alert pasted from a document otherwise costs double.
    for char in "‐‑‒–—―−﹘﹣⁃•":
        table[char] = "-"
    table["…"] = "..."
    table["‥"] = ".."
    table["․"] = "."
    # Spaces that render as a space: no-break, narrow no-break (French punctuation), the
    # en/em/thin/hair/figure family, medium mathematical, ogham and ideographic. GSM has no tab.
    for char in "\t\u00a0\u1680\u202f\u205f\u3000":
        table[char] = " "
    for code in range(0x2000, 0x200B):
        table[chr(code)] = " "
    # Unicode line and paragraph separators and NEL end a line, like "\n".
    for char in "\u0085\u2028\u2029":
        table[char] = "\n"
    # Invisible characters that carry nothing on a phone: zero-width space, non-joiner and
    # joiner, word joiner, byte-order mark, soft hyphen, left-to-right and right-to-left marks.
    # The joiners do matter in emoji sequences and Indic or Persian script, but such a text
    # stays UCS-2 and is then returned untouched.
    for char in "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f":
        table[char] = ""
    # Fullwidth ASCII (U+FF01-FF5E) sits 0xFEE0 above its ASCII twin; keep only the twins GSM
    # can carry (not the backtick, which the entry above already maps to an apostrophe).
    for code in range(0xFF01, 0xFF5F):
        ascii_twin = chr(code - 0xFEE0)
        if ascii_twin in _GSM7_ALL:
            table[chr(code)] = ascii_twin
    table["\uff40"] = "'"
    return table


#: Typographic look-alikes and their GSM-7 replacements (an empty string removes the character).
#: Our source of truth, in the spirit of Twilio's Smart Encoding but not bound to it: only
#: characters a reader would not miss are listed, never letters (``ł`` stays ``ł``).
GSM7_LOOKALIKES: Final[Mapping[str, str]] = MappingProxyType(_lookalike_table())

_TRANSLATION: Final = str.maketrans(dict(GSM7_LOOKALIKES))


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What an SMS body costs: its encoding, its length in units, and its segments."""

    #: ``"GSM-7"`` when every character is in the GSM 03.38 alphabet, else ``"UCS-2"``.
    encoding: Encoding
    #: Billed messages. At least 1, even for an empty body (see :func:`segment_info`).
    segments: int
    #: Length in the encoding's unit: septets for GSM-7 (an extension character counts two),
    #: UTF-16 code units for UCS-2 (a character outside the BMP, such as an emoji, counts two).
    units: int
    #: Capacity of each segment in those units: 160 or 153 for GSM-7, 70 or 67 for UCS-2.
    chars_per_segment: int


def is_gsm7(text: str) -> bool:
    """Return True when every character of ``text`` is in the GSM-7 alphabet or its extension.

    Code points are taken as they are: a decomposed ``"e\\u0301"`` is not GSM-7 although ``"é"``
    is; :func:`normalize_for_gsm` composes it.
    """
    return _GSM7_ALL.issuperset(text)


def normalize_for_gsm(text: str) -> str:
    """Return ``text`` with typographic look-alikes replaced, if that makes it GSM-7.

    The text is put in Unicode NFC (so a decomposed ``é`` becomes the GSM ``é``; the result is
    canonically the same text), then every character in :data:`GSM7_LOOKALIKES` is replaced.
    If the result is entirely GSM-7 it is returned; otherwise ``text`` is returned unchanged.

    All or nothing, like Twilio's Smart Encoding: a body that keeps an emoji, a ``ł`` or CJK
    travels as UCS-2 whatever we do, where straight quotes save nothing (``…`` to ``...`` even
    costs two more units) and dropping a zero-width joiner would break an emoji sequence. So
    genuine Unicode text is never touched, and GSM-7 text comes back as it was.
    """
    if is_gsm7(text):
        return text
    candidate = unicodedata.normalize("NFC", text).translate(_TRANSLATION)
    return candidate if is_gsm7(candidate) else text


def segment_info(text: str) -> SegmentInfo:
    """Return the encoding, length and exact segment count of ``text`` as an SMS body.

    A body that fits one message (160 septets, 70 code units) is one segment; a longer one is
    packed greedily into 153-septet (67-unit) parts, and a two-unit character that does not fit
    in what is left of a part starts the next one, so that each part decodes on its own.

    An empty body counts as **one** segment, not zero: an SMS with no user data is still one
    message on the wire, and a count of at least 1 keeps cost estimates and rate budgets from
    treating a send as free. (Twilio refuses a message with neither body nor media, and an empty
    body is rejected before it reaches a provider, so the case only arises in previews.)
    """
    if is_gsm7(text):
        # Most texts fit one message: count the two-septet characters without a generator
        # (this runs once per recipient).
        septets = len(text) + sum(text.count(char) for char in GSM7_EXTENSION if char in text)
        if septets <= GSM7_SINGLE_SEPTETS:
            return SegmentInfo(
                "GSM-7", segments=1, units=septets, chars_per_segment=GSM7_SINGLE_SEPTETS
            )
        return _packed(
            "GSM-7",
            (2 if char in GSM7_EXTENSION else 1 for char in text),
            GSM7_SINGLE_SEPTETS,
            GSM7_MULTIPART_SEPTETS,
        )
    return _packed(
        "UCS-2",
        (2 if ord(char) > 0xFFFF else 1 for char in text),
        UCS2_SINGLE_UNITS,
        UCS2_MULTIPART_UNITS,
    )


def _packed(encoding: Encoding, widths: Iterable[int], single: int, part: int) -> SegmentInfo:
    """Pack characters of the given widths (1 or 2 units) into segments, never splitting one."""
    width_list = list(widths)
    units = sum(width_list)
    if units <= single:
        return SegmentInfo(encoding, segments=1, units=units, chars_per_segment=single)
    segments, used = 1, 0
    for width in width_list:
        if used + width > part:
            # Greedy is optimal here: characters go out in order, and closing a part early can
            # only push more into the parts after it.
            segments, used = segments + 1, 0
        used += width
    return SegmentInfo(encoding, segments=segments, units=units, chars_per_segment=part)
