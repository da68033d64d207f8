"""``GET /l/{code}``: a tracked short link (contract §7).

The code is checked (HMAC, messaging/links.py) before anything is read, so a guessed or
altered code costs one hash and gets a 404. A genuine one redirects (302) to the blast's
URL with ``refcode=<blast id>`` added, and the first ``GET`` per recipient marks their ledger
row clicked (one conditional update; later clicks change nothing). ``HEAD`` and the
link-preview fetchers of messaging apps and social sites (which open every link a message
holds, before anyone taps it) get the same redirect and count nothing.

Where a link points never changes, so it is cached per process: a click is one HMAC and
one indexed ``UPDATE``.
"""

from __future__ import annotations

import re
from typing import Final

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from messaging.links import DEFAULT_REFCODE_PARAM, Link, LinkCodes, LinkStore, original_url
from messaging.links import with_refcode as add_refcode

log = structlog.get_logger(__name__)

#: Link-preview and crawler user agents: iMessage and WhatsApp previews, Slack, Facebook,
#: X/Twitter, Telegram, Discord, LinkedIn, Skype, Google and Bing, and generic fetchers.
PREVIEW_BOTS: Final = re.compile(
    r"facebookexternalhit|facebot|twitterbot|slackbot|slack-imgproxy|whatsapp|telegrambot|"
    r"discordbot|linkedinbot|skypeuripreview|googlebot|google-pagerenderer|adsbot-google|"
    r"bingbot|bingpreview|applebot|embedly|iframely|pinterest|redditbot|vkshare|"
    r"snapchat|viber|line-poker|yahoo! slurp|duckduckbot|yandex|mediapartners-google|"
    r"bot\b|crawler|spider|preview|curl/|wget/|python-requests",
    re.IGNORECASE,
)
#: Links kept in a process's cache (a few per blast; cleared when full).
CACHE_MAX_LINKS: Final = 10_000

_HEADERS: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def is_preview(user_agent: str) -> bool:
    """True for a fetcher that opens links without a person (its GET is not a click)."""
    return bool(user_agent) and PREVIEW_BOTS.search(user_agent) is not None


class ShortLinkRoute:
    """``GET /l/{code}`` (and ``HEAD``, which counts nothing)."""

    def __init__(
        self,
        codes: LinkCodes | None,
        store: LinkStore,
        *,
        refcode_param: str = DEFAULT_REFCODE_PARAM,
    ) -> None:
        self._codes = codes
        self._store = store
        self._param = refcode_param
        self._cache: dict[int, Link | None] = {}

    def routes(self) -> list[Route]:
        """The one route."""
        return [Route("/l/{code}", self.follow, methods=["GET"])]

    def _link(self, link_id: int) -> Link | None:
        if link_id in self._cache:
            return self._cache[link_id]
        link = self._store.get(link_id)
        if link is not None:  # unknown ids are not cached: a link is created before its code
            if len(self._cache) >= CACHE_MAX_LINKS:
                self._cache.clear()
            self._cache[link_id] = link
        return link

    def _resolve(self, code: str, count: bool) -> str | None:
        """Where ``code`` points (refcode added), marking the click; None if not a link."""
        if self._codes is None:
            return None
        found = self._codes.verify(code)
        if found is None:
            return None
        link_id, supporter_id = found
        link = self._link(link_id)
        if link is None:
            return None
        if count and self._store.click(link.blast_id, link.channel, supporter_id):
            log.info("link.clicked", blast_id=link.blast_id, channel=link.channel)
        url = original_url(link.url) if link.channel == "email" else link.url
        return add_refcode(url, link.blast_id, self._param)

    async def follow(self, request: Request) -> Response:
        """302 to the original URL; 404 for anything that is not a genuine code."""
        # Starlette answers HEAD with the GET route: HEAD must count nothing.
        count = request.method == "GET" and not is_preview(request.headers.get("user-agent", ""))
        target = await run_in_threadpool(self._resolve, request.path_params["code"], count)
        if target is None:
            return PlainTextResponse("This link is not valid.", status_code=404, headers=_HEADERS)
        return RedirectResponse(target, status_code=302, headers=_HEADERS)
