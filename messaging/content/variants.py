"""A/B variants of an alert (contract §4 ``variants``): who gets which, reproducibly.

A supporter's variant is a hash of (blast, supporter) reduced to ``n`` buckets: a cubic
polynomial of ``supporter_id mod P`` over the prime field ``P``, its four coefficients drawn
from a SHA-256 of the blast id, then ``mod n``. (It was linear once: over consecutive
supporter ids two linear hashes are correlated, and a ``pick_winner`` test share of 100
people came out all variant B. Degree 2 still showed it; degree 3 splits like chance, as
``tests/test_variants.py`` checks over 200 blasts.) It is the same for the same supporter
on every retry, redelivery and re-expansion of a blast (no state to lose), different
blasts split the same people differently, and it is plain integer arithmetic, so the
expansion computes it inside its ``INSERT … SELECT`` on PostgreSQL and SQLite alike (and
the twin in Python) and stores it on the ledger row: counts per variant are then one
``GROUP BY``.

Horner's rule reduces mod ``P`` after each product, so every product stays below 2**62
(both factors < 2**31), inside a signed 64-bit integer; the same :func:`field_hash` builds
the SQL expression when given a column.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from messaging.content.alert import Alert, EmailContent, SmsContent

#: The Mersenne prime 2**31 - 1: the hash's modulus.
PRIME = 2_147_483_647


@functools.lru_cache(maxsize=256)  # a sender asks once per recipient of the same few blasts
def coefficients(blast_id: str) -> tuple[int, int, int, int]:
    """The four coefficients (each ``< P``) of a blast's variant hash."""
    digest = hashlib.sha256(b"rapid-variant:" + blast_id.encode()).digest()
    a, b, c, d = (int.from_bytes(digest[i : i + 8], "big") % PRIME for i in range(0, 32, 8))
    # A zero leading coefficient would make the cubic a quadratic (1 blast in 2**31).
    return a or 1, b, c, d


def field_hash(coeffs: tuple[int, ...], supporter_id: Any) -> Any:
    """``coeffs`` as a polynomial of ``supporter_id mod P``, mod ``P`` (Horner's rule). Works
    on an ``int`` and on a SQLAlchemy integer expression alike (``*``, ``+``, ``%`` only)."""
    x = supporter_id % PRIME
    h: Any = coeffs[0]
    for k in coeffs[1:]:
        h = (h * x + k) % PRIME
    return h


def variant_of(blast_id: str, supporter_id: int, n: int) -> int:
    """The variant (``0 .. n-1``) supporter ``supporter_id`` gets in blast ``blast_id``."""
    return int(field_hash(coefficients(blast_id), supporter_id) % n)


def sms_content(alert: Alert, variant: int | None) -> SmsContent | None:
    """The SMS part a recipient of ``variant`` gets (the alert's own without variants)."""
    if alert.variants and variant is not None:
        return alert.variants[variant % len(alert.variants)].sms or alert.sms
    return alert.sms


def email_content(alert: Alert, variant: int | None) -> EmailContent | None:
    """The email part a recipient of ``variant`` gets (the alert's own without variants)."""
    if alert.variants and variant is not None:
        return alert.variants[variant % len(alert.variants)].email or alert.email
    return alert.email


def recipient_variant(alert: Alert, supporter_id: int, held: int | None = None) -> int | None:
    """The variant of one recipient of ``alert``'s blast; None when it has no variants. A
    recipient outside a ``pick_winner`` test share gets ``held``: the winner, as their
    ledger row says once it is picked."""
    if not alert.variants:
        return None
    if held is not None and is_held(alert, supporter_id):
        return held
    return variant_of(alert.alert_id, supporter_id, len(alert.variants))


#: How long a row held for the winner waits unless the winner is picked first: the picker
#: (messaging/blasts/winner.py) sets its ``deferred_until`` to the moment it picks.
HELD_FOR = timedelta(days=365)


def held_until(now: datetime) -> datetime:
    """The ``deferred_until`` a held row is written with."""
    return now + HELD_FOR


#: Buckets of the test-share hash: a share is kept to 1/10,000.
SHARE_BUCKETS = 10_000


def share_coefficients(blast_id: str) -> tuple[int, int, int, int]:
    """``(a, c)`` of the test-share hash: independent of the variant hash's."""
    return coefficients(blast_id + ":test-share")


def share_threshold(share: float) -> int:
    """Buckets below this are in the test share."""
    return round(share * SHARE_BUCKETS)


def is_held(alert: Alert, supporter_id: int) -> bool:
    """True for a recipient a ``pick_winner`` alert holds for the winner (outside the test
    share); the expansion writes their row ``deferred`` with no variant."""
    if alert.pick_winner is None:
        return False
    bucket = field_hash(share_coefficients(alert.alert_id), supporter_id) % SHARE_BUCKETS
    return bool(bucket >= share_threshold(alert.pick_winner.share))
