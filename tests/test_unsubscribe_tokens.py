"""Unsubscribe tokens as the contract defines them (§7): the sender's fast path (two keyed SHA-256
states copied per token, base64url without the ``base64`` module's layers, JSON without the
encoder) makes exactly the documented construction, from any number of threads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from messaging.content.unsubscribe import UnsubscribeClaim, UnsubscribeTokens, key_id

KEY = b"unsubscribe-tokens-test-key-0123"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def documented_token(key: bytes, email: str, blast_id: str) -> str:
    """``kid "." b64url(json) "." b64url(HMAC-SHA256(key, kid "." b64url(json)))``, written
    with nothing but the standard library."""
    payload = _b64(json.dumps([email.lower(), blast_id], separators=(",", ":")).encode())
    signed = f"{key_id(key)}.{payload}"
    return f"{signed}.{_b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize(
    ("email", "blast_id"),
    [
        ("Ann@Example.org", "b1"),
        ('zoë."q"@exämple.org', "blast-ü"),  # JSON escapes: the encoder's path
        ("back\\slash@example.org", "b/2"),
        ("x" * 300 + "@example.org", "b" * 64),  # MACs and payloads of every padding length
        ("a@b.co", "b"),
    ],
)
def test_a_token_is_the_documented_hmac_and_verifies(email: str, blast_id: str) -> None:
    tokens = UnsubscribeTokens(KEY)
    token = tokens.make(email, blast_id)
    assert token == documented_token(KEY, email, blast_id)
    assert tokens.verify(token) == UnsubscribeClaim(email.lower(), blast_id)


def test_tokens_made_from_many_threads_at_once_are_each_right() -> None:
    # Given one token maker shared by a sender's worker threads (its keyed state is copied)
    tokens = UnsubscribeTokens(KEY)
    emails = [f"person{i}@example.org" for i in range(4000)]
    # When eight threads make tokens at the same time
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda e: tokens.make(e, "b1"), emails))
    # Then each is the one the documented construction gives for its own address
    assert made == [documented_token(KEY, e, "b1") for e in emails]


def test_a_rotated_key_signs_with_its_own_state() -> None:
    old, new = b"o" * 32, b"n" * 32
    rotated = UnsubscribeTokens(new, [old])
    token = rotated.make("a@example.org", "b1")
    assert token == documented_token(new, "a@example.org", "b1")
    assert UnsubscribeTokens(old).verify(token) is None


@pytest.mark.parametrize("key_bytes", [16, 32, 63, 64, 65, 200])
def test_keys_of_every_length_sign_as_the_standard_hmac(key_bytes: int) -> None:
    # Given a key shorter than, as long as, or longer than SHA-256's 64-byte block (a longer
    # key is hashed first: the states are built by hand, so this is where they could differ)
    key = bytes(range(key_bytes))
    tokens = UnsubscribeTokens(key)
    # When a token is made
    token = tokens.make("Ann@example.org", "b1")
    # Then its MAC is hmac.new's over the same signed part
    assert token == documented_token(key, "Ann@example.org", "b1")
    assert tokens.verify(token) == UnsubscribeClaim("ann@example.org", "b1")
