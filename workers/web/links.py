"""``GET /l/{code}``: a tracked short link (contract §7).

The code is checked (HMAC, messaging/content/links.py) before anything is read, so a guessed or
altered code costs one hash and gets a 404. A genuine one redirects (302) to the blast's
URL with ``refcode=<blast id>`` added, and the first ``GET`` per recipient marks their ledger
row clicked (a conditional update: later clicks change nothing). ``HEAD`` and the
link-preview fetchers of messaging apps and social sites (which open every link a message
holds, before anyone taps it) get the same redirect and count nothing.

A redirect never waits for the database: where a link points never changes, so it is cached
per process, and clicks are written by a background thread, every
:data:`CLICK_FLUSH_S` in one statement for all the clicks that arrived meanwhile (a
debate-night link is tapped thousands of times a minute; a commit each would put a disk
flush in every redirect). A process killed hard loses at most that window's clicks, never
a redirect.
"""

from __future__ import annotations

import atexit
import re
import threading
from typing import Final

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from messaging.content.links import DEFAULT_REFCODE_PARAM, Link, LinkCodes, LinkStore, original_url
from messaging.content.links import with_refcode as add_refcode

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
#: How often queued clicks are written, in seconds.
CLICK_FLUSH_S: Final = 0.05

_HEADERS: Final = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def is_preview(user_agent: str) -> bool:
    """True for a fetcher that opens links without a person (its GET is not a click)."""
    return bool(user_agent) and PREVIEW_BOTS.search(user_agent) is not None


class ClickRecorder:
    """Writes clicks in batches from a thread of its own (see the module docstring)."""

    def __init__(
        self, store: LinkStore, *, flush_every_s: float = 0.05, max_batch: int = 5_000
    ) -> None:
        self._store = store
        self._flush_every_s = flush_every_s
        self._max_batch = max_batch
        self._pending: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.recorded = 0

    def add(self, blast_id: str, channel: str, supporter_id: int) -> None:
        """Queue one click; written within :data:`CLICK_FLUSH_S`."""
        with self._lock:
            self._pending.append((blast_id, channel, supporter_id))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="link-clicks", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            if len(self._pending) >= self._max_batch:
                self._wake.set()

    def flush(self) -> int:
        """Write what is queued now; returns the rows clicked for the first time."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            moved = self._store.click(batch)
        except Exception as exc:  # the database away: keep them for the next flush
            log.warning("link.clicks_unwritten", rows=len(batch), error_type=type(exc).__name__)
            with self._lock:
                self._pending[:0] = batch[: self._max_batch * 10]
            return 0
        self.recorded += moved
        if moved:
            log.info("link.clicks", first_clicks=moved, clicks=len(batch))
        return moved

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_every_s)
            self._wake.clear()
            self.flush()


class ShortLinkRoute:
    """``GET /l/{code}`` (and ``HEAD``, which counts nothing)."""

    def __init__(
        self,
        codes: LinkCodes | None,
        store: LinkStore,
        *,
        refcode_param: str = DEFAULT_REFCODE_PARAM,
        clicks: ClickRecorder | None = None,
    ) -> None:
        self._codes = codes
        self._store = store
        self._param = refcode_param
        self._cache: dict[int, Link] = {}
        self.clicks = clicks or ClickRecorder(store, flush_every_s=CLICK_FLUSH_S)

    def routes(self) -> list[Route]:
        """The one route."""
        return [Route("/l/{code}", self.follow, methods=["GET"])]

    def _read_link(self, link_id: int) -> Link | None:
        link = self._store.get(link_id)
        if link is not None:  # unknown ids are not cached: a link is created before its code
            if len(self._cache) >= CACHE_MAX_LINKS:
                self._cache.clear()
            self._cache[link_id] = link
        return link

    async def follow(self, request: Request) -> Response:
        """302 to the original URL; 404 for anything that is not a genuine code."""
        found = self._codes.verify(request.path_params["code"]) if self._codes else None
        link = None
        if found is not None:
            link = self._cache.get(found[0]) or await run_in_threadpool(self._read_link, found[0])
        if found is None or link is None:
            return PlainTextResponse("This link is not valid.", status_code=404, headers=_HEADERS)
        # Starlette answers HEAD with the GET route: HEAD must count nothing.
        if request.method == "GET" and not is_preview(request.headers.get("user-agent", "")):
            self.clicks.add(link.blast_id, link.channel, found[1])
        url = original_url(link.url) if link.channel == "email" else link.url
        target = add_refcode(url, link.blast_id, self._param)
        return RedirectResponse(target, status_code=302, headers=_HEADERS)
