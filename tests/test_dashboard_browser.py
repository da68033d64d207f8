"""The war room in a real browser: Debian's chromium, driven by Playwright, over the fleet.

``rapid web``, intake, sender and scheduler run as separate processes (as the Procfile
runs them) against PostgreSQL, Redis, moto and the provider emulators. The browser logs in
with operator tokens, composes, watches a bar move without reloading, pauses and sees the
emulator stop receiving, and has a second operator approve.

With ``RAPID_SCREENSHOTS=DIR`` (``make screenshots``) each page is saved there as a PNG.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.conftest import _reset, free_port
from tests.fleet import EmulatorProcess, Fleet, blast_summary, fleet_env, rapid, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = os.environ.get("RAPID_CHROMIUM", "/usr/bin/chromium")
#: What the issue asks chromium to run with: headless, no sandbox (containers), and nothing
#: that reaches the network by itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOPIC = "debate"
#: Supporters per tag; a blast to one tag stays under the approval threshold, to both over.
PER_TAG = 300
THRESHOLD = 400
#: SMS per second fleet-wide: slow enough that a person (and the test) sees the bar move.
SMS_RATE = 10
SCREENSHOTS = os.environ.get("RAPID_SCREENSHOTS")


@dataclass
class Site:
    url: str
    env: dict[str, str]
    emulators: EmulatorProcess
    tokens: dict[str, str]
    fleet: Fleet


def _people(path: Path) -> None:
    lines = ["external_id,first_name,phone,topics,sms_opt_in,tags,postal_code"]
    for i in range(2 * PER_TAG):
        tag, zip_code = ("pa", "15213") if i < PER_TAG else ("oh", "43004")
        lines.append(f"p{i},Pat{i},+1412{3000000 + i:07d},{TOPIC},yes,{tag},{zip_code}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def site(
    _pg_engine: Engine, moto_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """One fleet for the module's tests (starting one is most of their cost)."""
    _reset(_pg_engine)
    work = tmp_path_factory.mktemp("dashboard")
    emulators = EmulatorProcess()
    port = free_port()
    env = fleet_env(
        db_url=_pg_engine.url.render_as_string(hide_password=False),
        moto_url=moto_url,
        prefix=f"d{uuid.uuid4().hex[:8]}",
        twilio_url=emulators.twilio_url,
        sendgrid_url=emulators.sendgrid_url,
        SMS_RATE_ACCOUNT=str(SMS_RATE),
        SMS_RATE_PER_SENDER=str(SMS_RATE),
        RAPID_APPROVAL_THRESHOLD=str(THRESHOLD),
        RAPID_SECRET_KEY="dashboard-browser-tests-secret-0123456789abcdef",
        PORT=str(port),
    )
    fleet = Fleet(env, work)
    try:
        rapid(env, "provision", "--topic", TOPIC)
        _people(work / "people.csv")
        rapid(env, "supporters", "import", str(work / "people.csv"))
        tokens = {
            name: json.loads(rapid(env, "operators", "add", name, "--role", role, "--json").stdout)[
                "token"
            ]
            for name, role in (("alice", "sender"), ("bob", "approver"), ("vera", "viewer"))
        }
        fleet.start("web", "web", "--host", "127.0.0.1")
        fleet.start("intake", "intake", "--wait-time", "1")
        fleet.start("sender", "sender", "--threads", "4", "--channels", "sms")
        fleet.start("scheduler", "scheduler")
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), "rapid web answering", timeout_s=60)
        yield Site(url, env, emulators, tokens, fleet)
    finally:
        fleet.stop()
        emulators.close()


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def as_operator(chromium: Any, site: Site) -> Iterator[Any]:
    """``as_operator(name)``: a logged-in page of its own browser context (own cookies)."""
    contexts: list[Any] = []

    def open_as(name: str, **context_options: Any) -> Any:
        context = chromium.new_context(viewport={"width": 1366, "height": 900}, **context_options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("dialog", lambda dialog: dialog.accept())  # every confirm: yes
        page.goto(f"{site.url}/dashboard")
        assert "/dashboard/login" in page.url
        shot(page, "login")
        page.get_by_label("Operator token").fill(site.tokens[name])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{site.url}/dashboard")
        return page

    yield open_as
    for context in contexts:
        context.close()


def shot(page: Any, name: str) -> None:
    """Save the page for the README (only under ``make screenshots``)."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def compose(page: Any, site: Site, *, tags: str, mode: str) -> None:
    page.goto(f"{site.url}/dashboard/compose")
    page.get_by_label("Topic").select_option(TOPIC)
    page.get_by_label("Priority").select_option("urgent")
    page.get_by_label("Text (Jinja2").fill(
        "Hi {{ first_name }}, did you see that answer? https://ex.am/p1"
    )
    page.get_by_label("Tags").fill(tags)
    page.get_by_role("button", name=mode, exact=True).click()


def _status(page: Any) -> str:
    return str(page.locator("#status").inner_text()).strip()


def _rendered(page: Any) -> str | None:
    """The status the server rendered the blast page with (not the live badge)."""
    try:
        return page.locator("[data-rendered-status]").get_attribute(
            "data-rendered-status", timeout=1000
        )
    except Exception:  # navigating
        return None


def _sms_received(site: Site) -> int:
    return len(site.emulators.sms())


def _bar(page: Any) -> int:
    return int(page.locator("progress").first.evaluate("el => el.value"))


def test_compose_send_watch_the_bar_move_and_pause_the_fleet(site: Site, as_operator: Any) -> None:
    # Given alice (sender) logged in, when she sends to one tag (under the threshold)
    page = as_operator("alice")
    compose(page, site, tags="pa", mode="Send")
    page.wait_for_url(f"{site.url}/dashboard/blasts/**")
    # (the page reloads itself once when the status moves on: its buttons depend on it)
    wait_until(lambda: _rendered(page) == "sending", "the blast page rendered sending", 60, 0.2)
    # Then its bar moves on the page without a reload (the marker survives)
    page.evaluate("window.__sameDocument = true")
    wait_until(lambda: _bar(page) > 0, "the bar leaving zero", 60, 0.2)
    first = _bar(page)
    wait_until(lambda: _bar(page) >= first + 10, "the bar moving on", 30, 0.2)
    assert page.evaluate("window.__sameDocument") is True
    assert page.locator("#live-state").inner_text() == "Live"
    # And the list page shows it running with a rate and an ETA
    blasts = page.context.new_page()
    blasts.goto(f"{site.url}/dashboard")
    card = blasts.locator("li.blast").first
    assert "sending" in card.inner_text()
    wait_until(lambda: "ETA —" not in card.inner_text(), "an ETA on the list", 30, 0.2)
    shot(blasts, "blasts")
    blasts.close()
    # When she pauses it (confirmed), then the page says paused and the fleet stops
    assert page.get_by_role("button", name="Resume").count() == 0  # resume: approvers only
    page.get_by_role("button", name="Pause").click()
    page.wait_for_url("**?done=pause")
    assert _status(page) == "paused"
    assert "operator" in page.locator("[data-f$='|pause']").first.inner_text()
    # (the kill switch's one second is measured in tests/test_flow_control.py; on a shared
    # 2-core machine a browser adds its own lateness, so this waits a little longer)
    time.sleep(2.0)
    stopped_at = _sms_received(site)
    time.sleep(2.0)
    assert _sms_received(site) == stopped_at, "the fleet kept sending after the pause"
    assert 0 < stopped_at < PER_TAG, stopped_at
    shot(page, "blast-paused")
    # And the audit log (paged) names alice and the dashboard
    page.goto(f"{site.url}/dashboard/audit")
    row = page.locator("tbody tr").filter(has_text="blast.pause").first
    assert "alice" in row.inner_text() and "dashboard" in row.inner_text()
    shot(page, "audit")
    # When bob (approver) resumes it, then it finishes
    bob = as_operator("bob")
    bob.goto(f"{site.url}/dashboard")
    bob.locator("li.blast a").first.click()
    bob.get_by_role("button", name="Resume").click()
    bob.wait_for_url("**?done=resume")
    blast_id = bob.url.split("/dashboard/blasts/")[1].split("?")[0]
    try:
        wait_until(lambda: _status(bob) == "completed", "the blast completing", 90, 0.5)
    except AssertionError:
        summary = blast_summary(site.env, blast_id)
        raise AssertionError(f"page {_status(bob)!r}, fleet {summary}") from None
    assert _sms_received(site) == PER_TAG


def test_a_second_operator_approves(site: Site, as_operator: Any) -> None:
    # Given alice sends to everyone: over the threshold, so it waits
    alice = as_operator("alice")
    compose(alice, site, tags="", mode="Send")
    alice.wait_for_url(f"{site.url}/dashboard/blasts/**")
    wait_until(
        lambda: _status(alice) == "awaiting_approval", "the blast awaiting approval", 60, 0.3
    )
    blast_url = alice.url.split("?")[0]
    # Then she sees the estimate and no Approve button (she asked for it)
    assert alice.get_by_role("button", name="Approve").count() == 0
    content = alice.locator("main").inner_text()
    assert "another operator must approve it" in content
    assert "Estimate for the approver" in content
    before = _sms_received(site)
    shot(alice, "blast-awaiting-approval")
    # And a viewer sees it too, with no buttons at all
    vera = as_operator("vera")
    vera.goto(blast_url)
    assert vera.locator("button.act").count() == 0
    # When bob approves (confirmed), then it sends, approved by bob
    bob = as_operator("bob")
    bob.goto(blast_url)
    bob.get_by_role("button", name="Approve").click()
    bob.wait_for_url("**?done=approve")
    assert "approved by bob" in bob.locator("section.blast .meta").first.inner_text()
    wait_until(lambda: _sms_received(site) > before, "the approved blast sending", 30, 0.2)
    # And alice's open page follows without her reloading it
    wait_until(lambda: _status(alice) in ("sending", "completed"), "alice's page", 30, 0.2)
    bob.get_by_role("button", name="Cancel").click()
    # A cancel answers once the sends in flight have landed (up to CANCEL_DRAIN_S, 15 s).
    bob.wait_for_url("**?done=cancel", timeout=45_000)
    wait_until(lambda: _status(bob) == "canceled", "the blast canceled", 30, 0.3)


def test_compose_with_a_dry_run(site: Site, as_operator: Any) -> None:
    page = as_operator("alice")
    before = _sms_received(site)
    compose(page, site, tags="oh", mode="Dry run")
    preview = page.locator("section.preview")
    preview.wait_for()
    text = preview.inner_text()
    assert "completed" in text and "recipients" in text
    assert f"{PER_TAG}" in text and "estimated cost" in text
    # with two messages rendered for real recipients
    assert "Rendered samples" in text and "Hi Pat300, did you see that answer?" in text
    # The form keeps what was typed, ready for a test send or the real one
    assert page.get_by_label("Tags").input_value() == "oh"
    assert _sms_received(site) == before
    shot(page, "compose-dry-run")
    # A phone-sized screen gets the same page in one column
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{site.url}/dashboard")
    shot(page, "blasts-phone")
    page.goto(f"{site.url}/dashboard/replies")
    assert page.get_by_role("heading", name="Replies").count() == 1
    shot(page, "replies")
