"""Opt-out language (contract §12): real-looking replies, table-driven.

Each row is a reply a supporter could plausibly send, and what it must be read as: an
opt-out (suppress at once, confirm), an opt-in, a help request, a reply a person must review
(suppressed until then), or anything else (kept, nothing done).
"""

from __future__ import annotations

import pytest

from messaging.compliance.optout_language import (
    HELP,
    NEEDS_REVIEW,
    OPT_IN,
    OPT_OUT,
    OTHER,
    classify_reply,
    normalize,
)

ZWSP = "\u200b"

#: (reply, kind). Every wording of the issue is here, then the rest by language and kind.
CASES: list[tuple[str, str]] = [
    # --- the wordings, each once a 200 and no suppression --------------------------
    ("Stop.", OPT_OUT),
    ("STOP!", OPT_OUT),
    ("opt out", OPT_OUT),
    ("Opt-out", OPT_OUT),
    ("stop texting me", OPT_OUT),
    ("please stop", OPT_OUT),
    ("ＳＴＯＰ", OPT_OUT),
    (f"ST{ZWSP}OP", OPT_OUT),
    (f"STOP{ZWSP}", OPT_OUT),
    # --- English keywords, dressed up ------------------------------------------------------
    ("STOP", OPT_OUT),
    ("stop", OPT_OUT),
    ("  Stop  ", OPT_OUT),
    ("STOPALL", OPT_OUT),
    ("Stop all", OPT_OUT),
    ("UNSUBSCRIBE", OPT_OUT),
    ("Unsubscribe.", OPT_OUT),
    ("end", OPT_OUT),
    ("QUIT", OPT_OUT),
    ("Cancel", OPT_OUT),
    ("REVOKE", OPT_OUT),
    ("OPTOUT", OPT_OUT),
    ("Opt Out", OPT_OUT),
    ("opt—out", OPT_OUT),
    ("STOP STOP STOP", OPT_OUT),
    ("Stop. Stop. Stop!!", OPT_OUT),
    ("STOPPPP", OPT_OUT),
    ("stooop", OPT_OUT),
    ("🛑 STOP 🛑", OPT_OUT),
    ("STOP 🙏", OPT_OUT),
    ("Stop please", OPT_OUT),
    ("STOP PLEASE!!!", OPT_OUT),
    ("stop it", OPT_OUT),
    ("Stop now", OPT_OUT),
    ("stop, thank you", OPT_OUT),
    ("Stop thanks", OPT_OUT),
    ("pls stop", OPT_OUT),
    ("ok stop", OPT_OUT),
    ("𝐒𝐓𝐎𝐏", OPT_OUT),
    ("ЅТОР", OPT_OUT),  # Cyrillic look-alikes
    ("S T O P", OPT_OUT),
    ("s.t.o.p", OPT_OUT),
    ("I", OTHER),
    ("\ufeffStop", OPT_OUT),
    ("Stop\u00ad", OPT_OUT),
    # --- English plain requests ------------------------------------------------------------
    ("Please stop texting me", OPT_OUT),
    ("stop sending me these", OPT_OUT),
    ("Stop messaging me!!", OPT_OUT),
    ("remove me", OPT_OUT),
    ("Remove me from your list", OPT_OUT),
    ("please remove my number", OPT_OUT),
    ("take me off your list", OPT_OUT),
    ("Take me off this list please", OPT_OUT),
    ("take my number off", OPT_OUT),
    ("don't text me", OPT_OUT),
    ("Don’t text me again", OPT_OUT),
    ("do not contact me", OPT_OUT),
    ("never text this number again", OPT_OUT),
    ("dont ever text me", OPT_OUT),
    ("no more texts", OPT_OUT),
    ("No more messages please", OPT_OUT),
    ("unsubscribe me", OPT_OUT),
    ("I want to unsubscribe", OPT_OUT),
    ("how do I unsubscribe from this", OPT_OUT),
    ("How do I stop these?", OPT_OUT),
    ("opt me out", OPT_OUT),
    ("wrong number", OPT_OUT),
    ("Wrong number, I'm not Jane", OPT_OUT),
    ("leave me alone", OPT_OUT),
    ("lose my number", OPT_OUT),
    ("I no longer wish to receive these", OPT_OUT),
    ("I don't want these texts", OPT_OUT),
    ("I revoke my consent", OPT_OUT),
    ("stop these texts", OPT_OUT),
    # --- Spanish ---------------------------------------------------------------------------
    ("PARAR", OPT_OUT),
    ("Alto", OPT_OUT),
    ("ALTO!", OPT_OUT),
    ("cancelar", OPT_OUT),
    ("BAJA", OPT_OUT),
    ("baja por favor", OPT_OUT),
    ("Alto ya", OPT_OUT),
    ("Basta", OPT_OUT),
    ("No me envíen más mensajes", OPT_OUT),
    ("no me manden mensajes", OPT_OUT),
    ("ya no quiero mensajes", OPT_OUT),
    ("Dejen de enviarme mensajes", OPT_OUT),
    ("Quiero darme de baja", OPT_OUT),
    ("quítenme de la lista", OPT_OUT),
    ("borren mi número por favor", OPT_OUT),
    ("número equivocado", OPT_OUT),
    ("No más mensajes", OPT_OUT),
    ("cancelar suscripción", OPT_OUT),
    # --- opt-in ----------------------------------------------------------------------------
    ("START", OPT_IN),
    ("start", OPT_IN),
    ("Yes", OPT_IN),
    ("YES!", OPT_IN),
    ("unstop", OPT_IN),
    ("Start please", OPT_IN),
    # --- help ------------------------------------------------------------------------------
    ("HELP", HELP),
    ("help", HELP),
    ("Help?", HELP),
    ("info", HELP),
    ("AYUDA", HELP),
    ("help please", HELP),
    # --- needs a person: mentions an opt-out word, not clearly a request ------------------
    ("stop lying!", NEEDS_REVIEW),
    ("We need to stop him", NEEDS_REVIEW),
    ("End the filibuster now", NEEDS_REVIEW),
    ("cancel student debt", NEEDS_REVIEW),
    ("I quit my job to volunteer!", NEEDS_REVIEW),
    ("Don't stop!", NEEDS_REVIEW),
    ("this is spam", NEEDS_REVIEW),
    ("help stop", NEEDS_REVIEW),
    ("yes stop", NEEDS_REVIEW),
    ("alto el fuego ya", NEEDS_REVIEW),
    ("I did not unsubscribe", NEEDS_REVIEW),
    ("Can you remove the typo in the last text?", NEEDS_REVIEW),
    # --- other: kept, nothing done ---------------------------------------------------------
    ("Thanks!", OTHER),
    ("ok thanks", OTHER),
    ("Who is this?", OTHER),
    ("I'll be there Saturday", OTHER),
    ("Yes I can volunteer Saturday", OTHER),
    ("How can I help?", OTHER),
    ("Where do I start?", OTHER),
    ("dont text and drive", OTHER),
    ("¿Dónde es el evento?", OTHER),
    ("Gracias", OTHER),
    ("👍", OTHER),
    ("", OTHER),
    ("Stopped by the office today, great team", OTHER),
]


def test_the_table_is_large_and_covers_every_kind() -> None:
    kinds = {kind for _, kind in CASES}
    assert len(CASES) >= 80 and kinds == {OPT_OUT, OPT_IN, HELP, NEEDS_REVIEW, OTHER}


@pytest.mark.parametrize(("body", "kind"), CASES, ids=[repr(b)[:40] for b, _ in CASES])
def test_reply_is_read_as(body: str, kind: str) -> None:
    # Given a supporter's reply, when classified, then it is read as the table says
    found = classify_reply(body)
    assert found.kind == kind, found
    # and every suppressing reading says why (what a reviewer and `optout check` show)
    if found.suppresses:
        assert found.reason and len(found.reason) <= 64


@pytest.mark.parametrize(
    ("opt_out_type", "kind"), [("STOP", OPT_OUT), ("START", OPT_IN), ("HELP", HELP)]
)
def test_twilio_opt_out_type_wins(opt_out_type: str, kind: str) -> None:
    # Given Twilio recognised a keyword in a body we would read otherwise
    found = classify_reply("whatever Twilio matched", opt_out_type)
    # Then Twilio's reading counts
    assert found.kind == kind and found.reason.startswith("twilio")


def test_normalize_folds_width_case_accents_apostrophes_and_repeats() -> None:
    assert normalize("ＳＴＯＰ  Stop\u200b!!") == "stop"
    assert normalize("No me envíen MÁS") == "no me envien mas"
    assert normalize("Don’t  text me 🙏") == "dont text me"
    assert normalize("opt-out") == "optout"
