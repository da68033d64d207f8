"""Unsubscribe links (contract §7, RFC 8058) over real HTTP: only POST unsubscribes.

Mail scanners and link previewers fetch every link in a message with GET or HEAD before a
person ever sees it; neither may unsubscribe. The one-click POST mailbox providers send
(``List-Unsubscribe=One-Click``) unsubscribes at once, without a confirmation page.
"""

from __future__ import annotations

import pytest

from messaging.content.unsubscribe import UnsubscribeTokens
from tests.test_web import EMAIL, SECRET_KEY, Web, make_web  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def web(request: pytest.FixtureRequest) -> Web:
    """``rapid web`` on real PostgreSQL and Redis, as ``tests/test_web.py`` runs it."""
    server: Web = request.getfixturevalue("make_web")()
    return server


def _token(email: str = EMAIL) -> str:
    return UnsubscribeTokens(SECRET_KEY.encode()).make(email, "b1")


def test_head_and_get_change_nothing(web: Web) -> None:
    # Given a genuine unsubscribe link
    path = f"/unsubscribe/{_token()}"
    # When a link scanner sends HEAD (several times) and a previewer GETs it
    for _ in range(3):
        head = web.http.head(path)
        assert head.status_code == 200 and head.content == b""
    page = web.http.get(path)
    # Then the page asks for a confirmation (a button that POSTs) and nobody is unsubscribed
    assert page.status_code == 200
    assert '<form method="post">' in page.text and "<button" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert web.app.suppressions.lookup("email", EMAIL) is None


def test_the_confirm_button_unsubscribes(web: Web) -> None:
    # When the person presses the page's button (a form POST to the same URL)
    done = web.http.post(f"/unsubscribe/{_token()}", data={"List-Unsubscribe": "One-Click"})
    # Then the address is suppressed
    assert done.status_code == 200 and "unsubscribed" in done.text
    found = web.app.suppressions.lookup("email", EMAIL)
    assert found is not None and (found.reason, found.source) == ("unsubscribe-link", "email-link")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),
        (b"--x\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
         b"One-Click\r\n--x--\r\n", "multipart/form-data; boundary=x"),
        (b"", "application/x-www-form-urlencoded"),
    ],
)  # fmt: skip
def test_rfc_8058_one_click_post_unsubscribes_without_a_confirmation(
    web: Web, content: bytes, content_type: str
) -> None:
    # When a mailbox provider sends the one-click POST (as Gmail and Yahoo do, any encoding)
    response = web.http.post(
        f"/unsubscribe/{_token('ONE.click@Example.org')}",
        content=content,
        headers={"Content-Type": content_type},
    )
    # Then the address is suppressed straight away (lower-cased, as suppressions are kept)
    assert response.status_code == 200
    assert web.app.suppressions.lookup("email", "one.click@example.org") is not None


def test_forged_tokens_change_nothing_with_any_method(web: Web) -> None:
    token = _token()
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for method in ("HEAD", "GET", "POST"):
        assert web.http.request(method, f"/unsubscribe/{forged}").status_code == 404
    assert web.app.suppressions.lookup("email", EMAIL) is None
