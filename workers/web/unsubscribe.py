"""One-click unsubscribe (RFC 8058) behind the links in every email (contract §7, §8).

``GET`` shows a confirmation page and changes nothing, and neither does ``HEAD``: mail
scanners and link previewers fetch every URL in a message, and a GET or HEAD that
unsubscribed would unsubscribe people who never clicked. ``POST`` unsubscribes: mailbox
providers send it for the one-click button
(``List-Unsubscribe=One-Click``), and the page's own form sends it too. Neither needs a
cookie, a CSRF token or JavaScript: the HMAC-signed token in the URL is the whole credential.

A forged or altered token gets the same 404 as any unknown page, and a genuine token always
gets the same success page, so nothing tells a visitor whether an address is a supporter.
"""

from __future__ import annotations

import html
from typing import Final

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from messaging.compliance.suppression import SuppressionList
from messaging.content.unsubscribe import UnsubscribeClaim, UnsubscribeTokens
from workers.web.security import UNSUBSCRIBE_MAX_BODY, read_body

log = structlog.get_logger(__name__)

#: Reason and source recorded with the suppression (shown by ``rapid optout check``).
REASON: Final = "unsubscribe-link"
SOURCE: Final = "email-link"

#: Pages must not be cached by a proxy (one person's link) nor framed by another site.
_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.6rem 1.2rem}}</style></head>
<body><h1>{title}</h1>{content}</body></html>
"""


def mask_email(email: str) -> str:
    """``j***@example.org``: enough for a person to recognise their address on the page."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _page(title: str, content: str) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), content=content), headers=dict(_HEADERS)
    )


def _not_found() -> Response:
    return HTMLResponse(
        _PAGE.format(title="Not found", content="<p>This link is not valid.</p>"),
        status_code=404,
        headers=dict(_HEADERS),
    )


class UnsubscribePages:
    """``GET`` and ``POST /unsubscribe/{token}``."""

    def __init__(
        self, tokens: UnsubscribeTokens | None, suppressions: SuppressionList, org_name: str | None
    ) -> None:
        self._tokens = tokens
        self._suppressions = suppressions
        self._what = f"{org_name} emails" if org_name else "these emails"

    def routes(self) -> list[Route]:
        """The one route, both methods."""
        return [Route("/unsubscribe/{token}", self.page, methods=["GET", "POST"])]

    def _claim(self, request: Request) -> UnsubscribeClaim | None:
        if self._tokens is None:  # no key configured: no token can be genuine
            return None
        return self._tokens.verify(request.path_params["token"])

    async def page(self, request: Request) -> Response:
        """The confirmation page (GET) or the unsubscribe itself (POST)."""
        claim = self._claim(request)
        if claim is None:
            log.info("unsubscribe.rejected", method=request.method)
            return _not_found()
        address = html.escape(mask_email(claim.email))
        what = html.escape(self._what)
        # Starlette answers HEAD with the GET route: link scanners send HEAD, and it must
        # change nothing, so anything but POST gets the page (HEAD without its body).
        if request.method != "POST":
            return _page(
                "Unsubscribe",
                f"<p>Stop {what} to <strong>{address}</strong>?</p>"
                # Posts to this same URL; the body is what RFC 8058 mail clients send.
                '<form method="post">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Unsubscribe</button></form>',
            )
        # The body is read (bounded) but not required: the token is the credential, and
        # clients encode the one-click body in more than one way.
        await read_body(request, UNSUBSCRIBE_MAX_BODY)
        await run_in_threadpool(
            self._suppressions.add, "email", claim.email, reason=REASON, source=SOURCE
        )
        log.info("unsubscribe.done", blast_id=claim.blast_id)
        return _page(
            "You are unsubscribed",
            f"<p>Done: {what} will no longer be sent to <strong>{address}</strong>.</p>",
        )
