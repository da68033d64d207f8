"""Opt-out, opt-in and help requests in the supporters' own words (contract §12).

Since 2025-04-11 the FCC's revocation rule lets a person revoke consent "by any reasonable
means", so a campaign may not wait for the exact word ``STOP``: ``Stop.``, ``opt out``,
``ＳＴＯＰ``, ``stop texting me`` and ``no me envíen más`` all have to stop the texts. This
module is pure (no I/O): :func:`classify_reply` turns one inbound body, plus Twilio's
``OptOutType`` when Twilio recognised a keyword itself, into a :class:`ReplyClass`.

The order of the tests is the policy:

1. Twilio's ``OptOutType`` (STOP, START, HELP) wins: Twilio already acted on it.
2. A whole message that is only keywords (after normalising and dropping courtesy words such
   as "please" or "gracias") is that keyword's request.
3. A plain request anywhere in the message ("stop texting me", "remove me", "take me off
   your list", "don't text me", "darme de baja") is an opt-out.
4. A message that merely mentions an opt-out word ("stop lying!", "end the filibuster") is
   ``needs_review``: suppressed at once (the cost of a wrong guess is one supporter not
   texted until a person looks; the other way it is a TCPA exposure) and listed for a person.
5. Anything else is ``other``.

Opt-out outranks every other reading: "help stop" is not a help request.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["opt_out", "opt_in", "help", "needs_review", "other"]

OPT_OUT: Final = "opt_out"
OPT_IN: Final = "opt_in"
HELP: Final = "help"
NEEDS_REVIEW: Final = "needs_review"
OTHER: Final = "other"
#: Every kind, in the order a reader would triage them.
KINDS: Final[tuple[Kind, ...]] = (OPT_OUT, NEEDS_REVIEW, HELP, OPT_IN, OTHER)

#: Whole-message opt-out keywords: Twilio's and the CTIA's list, and the Spanish ones.
STOP_KEYWORDS: Final = frozenset(
    {
        "stop",
        "stopall",
        "unsubscribe",
        "unsub",
        "end",
        "quit",
        "cancel",
        "revoke",
        "optout",
        "parar",
        "alto",
        "cancelar",
        "baja",
        "basta",
    }
)
#: Whole-message keywords that opt a number back in.
START_KEYWORDS: Final = frozenset({"start", "yes", "unstop"})
#: Whole-message keywords that ask who is texting (INFO is Twilio's second help keyword).
HELP_KEYWORDS: Final = frozenset({"help", "info", "ayuda"})

#: Words that only carry courtesy or emphasis around a keyword ("STOP please", "alto ya").
COURTESY_WORDS: Final = frozenset(
    {
        "please",
        "pls",
        "plz",
        "plse",
        "now",
        "thanks",
        "thank",
        "you",
        "thankyou",
        "thx",
        "ty",
        "ok",
        "okay",
        "it",
        "me",
        "all",
        "asap",
        "immediately",
        "right",
        "already",
        "por",
        "favor",
        "porfavor",
        "porfa",
        "gracias",
        "ya",
        "de",
    }
)

#: Words whose mere presence makes a message worth a person's look (and a suppression until
#: then). The keywords themselves, plus "remove" and "spam", which are how complaints start.
MENTION_WORDS: Final = STOP_KEYWORDS | frozenset({"remove", "spam", "optout"})

#: Words that make the strong words below ambiguous ("I did not unsubscribe").
_NEGATIONS: Final = frozenset({"not", "dont", "didnt", "never", "no", "wont", "nunca"})
#: Words that mean opt-out wherever they stand, unless negated just before.
_STRONG_WORDS: Final = frozenset({"unsubscribe", "unsub", "optout", "stopall"})
#: How many words before a strong word a negation reaches.
_NEGATION_REACH_WORDS: Final = 4

_OBJ = r"(?:me|us|this number|this phone|my number|my phone|again|anymore|any more|ever)"
_TEXTS = r"(?:texts?|txts?|messages?|msgs?|sms|alerts?|spam|texting|messaging|emails?)"
_NUMBER = r"(?:number|phone|cell|name|info|information|contact|details)"
#: Plain requests, matched on the normalised text (lower case, ASCII letters, one space).
#: Each is (reason, pattern); the reason is what a reviewer and ``optout check`` see.
REQUEST_PATTERNS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (reason, re.compile(rf"\b(?:{pattern})\b"))
    for reason, pattern in (
        (
            "stop texting",
            r"(?:stop|quit|cease|end) (?:texting|txting|texing|messaging|msging|sending"
            r"|contacting|emailing|calling|bothering|spamming|harassing)",
        ),
        ("stop these texts", rf"(?:stop|quit|cancel|end) (?:these|this|the|all|your|ur) {_TEXTS}"),
        (
            "dont text me",
            r"(?:dont|do not|never|no)(?: ever)?"
            rf" (?:text|txt|message|msg|contact|sms|send|email|call)(?: \w+)? {_OBJ}",
        ),
        ("remove me", rf"remove (?:me|us|my {_NUMBER}|this {_NUMBER}|from)"),
        ("take me off", rf"take (?:me|us|my {_NUMBER}|this {_NUMBER}) (?:off|out)"),
        ("opt me out", r"(?:opt|sign|count|take) (?:me|us) out|i want out"),
        ("unsubscribe me", r"(?:unsubscribe|unsub|optout|cancel) (?:me|us|my subscription)"),
        ("no more texts", rf"(?:no more|enough|enough with the|no) {_TEXTS} ?(?:please|pls)?$"),
        ("no more texts", rf"(?:no more|enough with the) {_TEXTS}"),
        ("leave me alone", r"leave (?:me|us) alone|go away|fuck off|f off|piss off"),
        ("wrong number", r"wrong (?:number|person|phone)|not my number|numero equivocado"),
        ("lose my number", rf"(?:lose|delete|erase|forget) (?:my|this) {_NUMBER}"),
        ("how do i stop", r"how (?:do|can|to) (?:i |we )?(?:stop|unsubscribe|optout|cancel|end)"),
        (
            "do not want these",
            rf"(?:dont|do not|no longer) (?:want|wish|need|like)(?: to)?(?: receive| get)?"
            rf"(?: any| these| this| your| ur| the)? {_TEXTS}",
        ),
        ("no longer wish", r"no longer (?:wish|want) to (?:receive|get|be)"),
        ("revoke consent", r"(?:revoke|withdraw|withdrawing|revoking) (?:my )?consent"),
        # Spanish.
        (
            "no me envien",
            r"no (?:me |nos )?(?:envies|envie|envien|mandes|mande|manden|escribas|escriban"
            r"|textees|contactes|contacten|molesten|molestes)",
        ),
        ("ya no quiero", r"ya no (?:quiero|deseo|me interesa)"),
        (
            "dejen de enviar",
            r"(?:deja|dejen|dejar|deje) de (?:enviar|mandar|escribir|textear|contactar|molestar)"
            r"(?:me|nos)?",
        ),
        ("no quiero recibir", r"no (?:quiero|deseo) (?:recibir|mas|mensajes)"),
        ("no mas mensajes", r"no mas (?:mensajes|textos|msj|msjs|mensajitos)"),
        ("darme de baja", r"(?:darme|dame|denme|dar|deme|me doy|quiero) de baja"),
        (
            "quitenme",
            r"quitenme|quitame|sacame|saquenme|borrenme|borrame|eliminenme|eliminame",
        ),
        (
            "quiten mi numero",
            r"(?:quiten|quita|saquen|saca|borren|borra|eliminen|elimina) mi"
            r" (?:numero|telefono|celular)",
        ),
        ("cancelar suscripcion", r"cancelar (?:mi )?suscripcion"),
    )
)

#: Letters from other scripts that look like Latin ones, as used to dodge keyword filters
#: (Cyrillic "СТОР", Greek "ΕΝD"). NFKC folds width and styled letters, not these.
_LOOKALIKES: Final = str.maketrans(
    {
        "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p",
        "С": "c", "Т": "t", "Х": "x", "Ѕ": "s", "І": "i", "Ј": "j", "Ү": "y", "Ԛ": "q",
        "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "ѕ": "s",
        "і": "i", "ј": "j", "ԁ": "d", "ո": "n", "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z",
        "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t",
        "Υ": "y", "Χ": "x", "ο": "o", "ν": "v",
    }
)  # fmt: skip
#: Apostrophes vanish ("don't" is "dont"); every other non-letter separates words.
_APOSTROPHES: Final = str.maketrans("", "", "'’‘`´ʼ")
_NON_WORD: Final = re.compile(r"[^0-9a-z]+")
_REPEATS: Final = re.compile(r"(.)\1+")
#: Multi-word keywords written as one token before matching.
_JOINED: Final = (("opt out", "optout"), ("un subscribe", "unsubscribe"), ("stop all", "stopall"))

#: Longest reason stored (the suppression list's reason column holds 64).
REASON_LEN: Final = 64


def _squeeze(word: str) -> str:
    return _REPEATS.sub(r"\1", word)


#: Keywords by their letters with runs squeezed, so "STOPPP" and "stooop" are "stop".
_STRETCHED: Final = {
    _squeeze(k): k for k in STOP_KEYWORDS | START_KEYWORDS | HELP_KEYWORDS | MENTION_WORDS
}


@dataclass(frozen=True, slots=True)
class ReplyClass:
    """What a reply asks for, and why we think so."""

    kind: Kind
    #: Short and human: ``stop`` (a keyword), ``request: remove me``, ``mentions: stop`` …
    reason: str
    #: The normalised text the decision was made on.
    normalized: str = ""

    @property
    def suppresses(self) -> bool:
        """True when the number must not be texted (now, or until a person has looked)."""
        return self.kind in (OPT_OUT, NEEDS_REVIEW)


def normalize(body: str) -> str:
    """Lower-case ASCII words separated by one space, with repeated words said once.

    NFKC folds full-width and styled letters (``ＳＴＯＰ``, ``𝐒𝐓𝐎𝐏``); format characters
    (zero-width spaces and joiners, BOM, soft hyphen) are dropped inside words; look-alike
    Cyrillic and Greek letters become Latin; accents go (``envíen`` → ``envien``);
    apostrophes join (``don't`` → ``dont``); punctuation, emoji and symbols separate words;
    a message of single letters is one word (``S T O P``).
    """
    text = unicodedata.normalize("NFKC", body)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = text.translate(_LOOKALIKES).casefold()
    text = "".join(
        ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)
    )
    text = _NON_WORD.sub(" ", text.translate(_APOSTROPHES))
    split = text.split()
    if len(split) > 1 and all(len(w) == 1 for w in split):
        split = ["".join(split)]  # spelled out: "S T O P", "s.t.o.p"
    words: list[str] = []
    for word in split:
        if word not in _STRETCHED.values():
            word = _STRETCHED.get(_squeeze(word), word)
        if not words or words[-1] != word:
            words.append(word)
    joined = " ".join(words)
    for phrase, one in _JOINED:
        joined = re.sub(rf"\b{phrase}\b", one, joined)
    return joined


def _only(words: list[str], keywords: frozenset[str]) -> bool:
    return bool(words) and all(w in keywords for w in words)


def _twilio(opt_out_type: str | None, normalized: str) -> ReplyClass | None:
    kind = (opt_out_type or "").strip().upper()
    if kind == "STOP":
        return ReplyClass(OPT_OUT, "twilio: stop", normalized)
    if kind == "START":
        return ReplyClass(OPT_IN, "twilio: start", normalized)
    if kind == "HELP":
        return ReplyClass(HELP, "twilio: help", normalized)
    return None


def _strong_word(words: list[str]) -> str | None:
    """A strong opt-out word not negated within a few words before it."""
    for i, word in enumerate(words):
        if word in _STRONG_WORDS:
            before = words[max(0, i - _NEGATION_REACH_WORDS) : i]
            if not any(w in _NEGATIONS for w in before):
                return word
    return None


def classify_reply(body: str, opt_out_type: str | None = None) -> ReplyClass:
    """Classify one inbound SMS body; ``opt_out_type`` is Twilio's ``OptOutType`` field."""
    normalized = normalize(body)
    from_twilio = _twilio(opt_out_type, normalized)
    if from_twilio is not None:
        return from_twilio
    words = normalized.split()
    core = [w for w in words if w not in COURTESY_WORDS]
    # Courtesy words alone ("ok thanks") are not a request; "stop it now" is.
    if _only(core, STOP_KEYWORDS):
        return ReplyClass(OPT_OUT, " ".join(dict.fromkeys(core))[:REASON_LEN], normalized)
    if _only(core, START_KEYWORDS):
        return ReplyClass(OPT_IN, core[0], normalized)
    if _only(core, HELP_KEYWORDS):
        return ReplyClass(HELP, core[0], normalized)
    for reason, pattern in REQUEST_PATTERNS:
        if pattern.search(normalized):
            return ReplyClass(OPT_OUT, f"request: {reason}"[:REASON_LEN], normalized)
    strong = _strong_word(words)
    if strong is not None:
        return ReplyClass(OPT_OUT, f"request: {strong}", normalized)
    mentioned = [w for w in words if w in MENTION_WORDS]
    if mentioned:
        return ReplyClass(NEEDS_REVIEW, f"mentions: {mentioned[0]}"[:REASON_LEN], normalized)
    return ReplyClass(OTHER, "", normalized)
