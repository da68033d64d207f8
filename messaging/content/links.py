"""Tracked short links (contract §7 ``GET /l/{code}``): codes, and rewriting message bodies.

Every http(s) URL of an SMS template (and of an email template that opts in with
``track_links``) becomes ``{base}/l/{code}`` per recipient. The code is base62 of

    supporter id | link id | width of the link id (5 bits) | tag (36 bits)

where the link id names one row of the ``links`` table (blast, channel, original URL) and
the tag is HMAC-SHA256 under ``RAPID_SECRET_KEY``, truncated. The redirect checks the tag
before it reads anything, so walking codes finds nothing: one guess in 2**36 (69 billion)
verifies, and nothing about a recipient is in a code but an opaque number. No table holds
a row per recipient: a code is recomputed from (link, supporter), so a retry or the
in-doubt settlement renders the very same text. Codes run 10 to 13 characters (link ids
below 4,096 and supporter ids below 2 million make 12): SMS segments are paid per character.

The key is the unsubscribe tokens' key; a previous key (rotation) still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import html as html_lib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from messaging.blasts.winner import WinnerStore

if TYPE_CHECKING:
    from messaging.content.alert import Alert

#: Bits of HMAC kept in a code: a forger's odds per guess are 2**-TAG_BITS.
TAG_BITS = 36
#: Bits that say how wide the link id is.
WIDTH_BITS = 5
#: Longest code accepted (a supporter id below 2**63 and a link id below 2**31 fit).
CODE_MAX_CHARS = 24
#: The parameter the redirect adds (ActBlue reads ``refcode``); ``LINK_REFCODE_PARAM``.
DEFAULT_REFCODE_PARAM = "refcode"

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
#: An http(s) URL in text: up to whitespace, quotes, angle brackets or a template brace.
_URL = re.compile(r"""https?://[^\s<>"'{}]+""", re.IGNORECASE)
#: Punctuation that ends a sentence rather than a URL ("see https://x.org/a.").
_TRAILING = ".,;:!?)]'"


def _b62(n: int) -> str:
    out = []
    while True:
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
        if n == 0:
            return "".join(reversed(out))


def _unb62(text: str) -> int | None:
    n = 0
    for ch in text:
        i = _INDEX.get(ch)
        if i is None:
            return None
        n = n * 62 + i
    return n


class LinkCodes:
    """Makes and checks short-link codes for (link id, supporter id)."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        self._key = key
        self._keys = (key, *previous)

    @staticmethod
    def _tag(key: bytes, link_id: int, supporter_id: int) -> int:
        mac = hmac.new(key, f"rapid-link:{link_id}:{supporter_id}".encode(), hashlib.sha256)
        return int.from_bytes(mac.digest()[:8], "big") >> (64 - TAG_BITS)

    def make(self, link_id: int, supporter_id: int) -> str:
        """The code of ``link_id`` for ``supporter_id``."""
        if link_id < 0 or supporter_id < 0 or link_id.bit_length() >= 1 << WIDTH_BITS:
            raise ValueError("link and supporter ids must be non-negative (link id < 2**31)")
        width = link_id.bit_length()
        n = (supporter_id << width) | link_id
        n = (n << WIDTH_BITS) | width
        n = (n << TAG_BITS) | self._tag(self._key, link_id, supporter_id)
        return _b62(n)

    def verify(self, code: str) -> tuple[int, int] | None:
        """``(link id, supporter id)`` of a genuine code; None for anything else."""
        if not code or len(code) > CODE_MAX_CHARS:
            return None
        n = _unb62(code)
        if n is None:
            return None
        tag = n & ((1 << TAG_BITS) - 1)
        n >>= TAG_BITS
        width = n & ((1 << WIDTH_BITS) - 1)
        n >>= WIDTH_BITS
        link_id = n & ((1 << width) - 1)
        supporter_id = n >> width
        if link_id.bit_length() != width or _b62_canonical(code) is False:
            return None
        for key in self._keys:
            # Constant time: a forger learns nothing from how fast a guess fails.
            if hmac.compare_digest(
                self._tag(key, link_id, supporter_id).to_bytes(5, "big"), tag.to_bytes(5, "big")
            ):
                return link_id, supporter_id
        return None


def _b62_canonical(code: str) -> bool:
    # "0abc" and "abc" decode alike: only the form make() writes is a code.
    return len(code) == 1 or code[0] != "0"


def find_urls(text: str) -> list[str]:
    """The trackable http(s) URLs of a template, in order, each once.

    A URL that runs into a template expression (``https://x.org/?id={{ id }}``) differs per
    recipient and is left alone, as is anything inside ``{{ … }}``.
    """
    found: list[str] = []
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(_TRAILING)
        end = m.start() + len(url)
        if text[end : end + 1] == "{" or _inside_expression(text, m.start()):
            continue
        if url not in found:
            found.append(url)
    return found


def _inside_expression(text: str, at: int) -> bool:
    opened = max(text.rfind("{{", 0, at), text.rfind("{%", 0, at))
    closed = max(text.rfind("}}", 0, at), text.rfind("%}", 0, at))
    return opened > closed


def with_refcode(url: str, refcode: str, param: str = DEFAULT_REFCODE_PARAM) -> str:
    """``url`` with ``param=refcode`` added; a refcode the author already put there stays."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == param for name, _ in query):
        return url
    extra = urlencode({param: refcode})
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


@dataclass(frozen=True, slots=True)
class Link:
    """One tracked link of a blast: where ``/l/{code}`` of its id redirects."""

    link_id: int
    blast_id: str
    channel: str
    url: str


class LinkStore(WinnerStore, Protocol):
    """The ``links`` table and the ledger's ``clicked_at`` and ``variant`` (messaging/store)."""

    def register(self, blast_id: str, channel: str, urls: Sequence[str]) -> dict[str, int]:
        """The link id of each URL of a blast's channel, created on first use (idempotent
        and race-free: two senders registering the same URL get the same id)."""
        ...

    def get(self, link_id: int) -> Link | None:
        """A link by id."""
        ...

    def click(self, clicks: Sequence[tuple[str, str, int]]) -> int:
        """Mark the ledger rows ``(blast_id, channel, supporter_id)`` clicked, each only the
        first time (one statement for the batch); returns how many were clicked now."""
        ...


class BlastLinks:
    """One blast channel's tracked links: rewrites a rendered body for one recipient."""

    def __init__(self, codes: LinkCodes, base_url: str, ids: Mapping[str, int]) -> None:
        self._codes = codes
        self._prefix = f"{base_url.rstrip('/')}/l/"
        self._ids = dict(ids)

    @property
    def empty(self) -> bool:
        """True when the templates hold no trackable URL."""
        return not self._ids

    def short_url(self, link_id: int, supporter_id: int) -> str:
        """``{base}/l/{code}``."""
        return self._prefix + self._codes.make(link_id, supporter_id)

    def rewrite(self, text: str, supporter_id: int) -> str:
        """``text`` with each tracked URL replaced by the recipient's short link (URLs that
        came from a supporter's fields are not the alert's and stay as they are)."""
        if not self._ids:
            return text

        def sub(m: re.Match[str]) -> str:
            whole = m.group(0)
            url = whole.rstrip(_TRAILING)
            link_id = self._ids.get(url)
            if link_id is None:
                return whole
            return self.short_url(link_id, supporter_id) + whole[len(url) :]

        return _URL.sub(sub, text)


def template_urls(templates: Iterable[str | None]) -> list[str]:
    """The trackable URLs of several templates, in order, each once."""
    found: list[str] = []
    for template in templates:
        for url in find_urls(template or ""):
            if url not in found:
                found.append(url)
    return found


def tracked_templates(alert: Alert, channel: str) -> list[str | None]:
    """The templates of an alert's channel whose URLs are tracked, every variant's."""
    parts = [alert, *(alert.variants or ())]
    if channel == "sms":
        return [p.sms.body for p in parts if p.sms is not None]
    return [
        body
        for p in parts
        if p.email is not None and p.email.track_links
        for body in (p.email.text, p.email.html)
    ]


def original_url(url_in_template: str) -> str:
    """Where a link found in a template points (an HTML template writes ``&`` as ``&amp;``)."""
    return html_lib.unescape(url_in_template)


#: A code as long as most are (link ids below 4,096, supporter ids below 2 million): what
#: the dry run measures segments with.
TYPICAL_CODE_CHARS = 13


class _PreviewCodes(LinkCodes):
    """Codes of typical length for measuring, not for sending."""

    def __init__(self) -> None:
        super().__init__(b"")

    def make(self, link_id: int, supporter_id: int) -> str:
        return "x" * TYPICAL_CODE_CHARS


def preview_links(alert: Alert, base_url: str | None) -> BlastLinks | None:
    """Rewrites an alert's SMS URLs into short links of typical length (the dry run's
    segment count); None without a short-link base."""
    if base_url is None:
        return None
    urls = template_urls(tracked_templates(alert, "sms"))
    return BlastLinks(_PreviewCodes(), base_url, dict.fromkeys(urls, 0))


class ShortLinks:
    """The process's short links: codes, the base URL, and each blast's link ids (cached:
    an alert never changes, so neither do its links)."""

    def __init__(self, codes: LinkCodes, store: LinkStore, base_url: str) -> None:
        self.codes = codes
        self.store = store
        self.base_url = base_url
        self._blasts: dict[tuple[str, str], BlastLinks] = {}

    def for_alert(self, alert: Alert, channel: str) -> BlastLinks:
        """The tracked links of an alert's channel (every variant's): every URL of its SMS
        bodies; of its email parts only where ``track_links`` opts in."""
        return self.for_blast(alert.alert_id, channel, tracked_templates(alert, channel))

    def for_blast(self, blast_id: str, channel: str, templates: Iterable[str | None]) -> BlastLinks:
        """The links of one blast channel, registered on first use."""
        hit = self._blasts.get((blast_id, channel))
        if hit is not None:
            return hit
        urls = template_urls(templates)
        ids = self.store.register(blast_id, channel, urls) if urls else {}
        links = BlastLinks(self.codes, self.base_url, ids)
        if len(self._blasts) > 1000:  # a long-lived sender sees many blasts; keep the recent
            self._blasts.clear()
        self._blasts[(blast_id, channel)] = links
        return links
