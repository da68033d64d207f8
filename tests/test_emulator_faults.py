"""The emulators' newer knobs and reads: refused credentials, odd answers, filtered
callbacks, the message log and the cheap authenticated reads ``rapid doctor`` makes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from python_http_client.exceptions import ForbiddenError, UnauthorizedError
from sendgrid import SendGridAPIClient
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from emulators.faults import Faults
from emulators.server import Emulator
from tests.factories import fresh_emulator_fixture
from tests.openapi_check import assert_conforms
from tests.test_emulators import EmulatorHttpClient

ACCOUNT_SID = "AC" + "fedcba9876543210" * 2
AUTH_TOKEN = "faults-auth-token"
API_KEY = "SG.faults-key"
SENDER = "+14155550100"


twilio = fresh_emulator_fixture("twilio_emulator")
sendgrid = fresh_emulator_fixture("sendgrid_emulator")


def _client(emu: Emulator) -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=EmulatorHttpClient(emu.url))


def test_message_log_lists_newest_first_filtered_and_paged(twilio: Emulator) -> None:
    # Given five messages to two numbers from two senders
    client = _client(twilio)
    sids = [
        client.messages.create(to=to, from_=sender, body=f"m{i}").sid
        for i, (to, sender) in enumerate(
            [
                ("+14155550001", SENDER),
                ("+14155550002", SENDER),
                ("+14155550001", "+14155550199"),
                ("+14155550001", SENDER),
                ("+14155550001", SENDER),
            ]
        )
    ]
    # When the log is listed by To (and From), two per page, through the official client
    to_one = client.messages.list(to="+14155550001", page_size=2)
    both = client.messages.list(to="+14155550001", from_=SENDER, page_size=2)
    # Then it answers newest first, across pages (the client follows next_page_uri)
    assert [m.sid for m in to_one] == [sids[4], sids[3], sids[2], sids[0]]
    assert [m.sid for m in both] == [sids[4], sids[3], sids[0]]
    assert [m.body for m in both] == ["m4", "m3", "m0"]
    # And a DateSent filter matches only sent messages (none has a sent date without callbacks)
    assert client.messages.list(to="+14155550001", date_sent=datetime.now(UTC)) == []
    # And every request the client made conforms to Twilio's API description
    for request in twilio.recorder.requests():
        assert_conforms(request)
    pages = [r for r in twilio.recorder.requests() if r.method == "GET"]
    assert len(pages) >= 4  # 2 + 2 pages for the two listings, at least


def test_account_fetch_and_sendgrid_scopes_are_cheap_authenticated_reads(
    twilio: Emulator, sendgrid: Emulator
) -> None:
    account = _client(twilio).api.v2010.accounts(ACCOUNT_SID).fetch()
    assert (account.sid, account.status) == (ACCOUNT_SID, "active")
    scopes = SendGridAPIClient(API_KEY, host=sendgrid.url).client.scopes.get()
    assert "mail.send" in scopes.to_dict["scopes"]
    with pytest.raises(UnauthorizedError):
        SendGridAPIClient("SG.wrong", host=sendgrid.url).client.scopes.get()


@pytest.mark.parametrize("status", [401, 403])
def test_reject_credentials_refuses_even_good_ones(
    twilio: Emulator, sendgrid: Emulator, status: int
) -> None:
    # Given both emulators told to refuse credentials
    twilio.faults.update(reject_credentials=True, reject_status=status)
    sendgrid.faults.update(reject_credentials=True, reject_status=status)
    # Then a send with the right token / key is refused with that status
    with pytest.raises(TwilioRestException) as refused:
        _client(twilio).messages.create(to="+14155550001", from_=SENDER, body="hi")
    assert refused.value.status == status
    error = UnauthorizedError if status == 401 else ForbiddenError
    with pytest.raises(error):
        SendGridAPIClient(API_KEY, host=sendgrid.url).client.scopes.get()
    assert twilio.recorder.messages() == [] and sendgrid.recorder.messages() == []


def test_resource_overrides_change_only_the_answer(twilio: Emulator) -> None:
    # Given the answer's num_segments set to what a mock of the API description sends
    twilio.faults.update(resource_overrides={"num_segments": "laboris enim magna"})
    message = _client(twilio).messages.create(to="+14155550001", from_=SENDER, body="hi")
    # Then the client sees it, while the message itself was recorded as sent
    assert message.num_segments == "laboris enim magna"
    assert message.sid.startswith("SM")
    assert [m["sid"] for m in twilio.recorder.messages()] == [message.sid]


def test_callback_error_rate_draws_a_seeded_share() -> None:
    faults = Faults(callback_error_rate=0.25, callback_error_code=30034, seed=7)
    draws = [faults.callback_error() for _ in range(2000)]
    assert set(draws) == {None, 30034}
    assert 0.2 < draws.count(30034) / len(draws) < 0.3
    with pytest.raises(ValueError, match="callback_error_rate"):
        faults.update(callback_error_rate=1.5)
    with pytest.raises(ValueError, match="reject_status"):
        faults.update(reject_status=500)
