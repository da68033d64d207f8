"""Frequency caps (contract §2: ``SMS_FREQUENCY_CAP``, ``EMAIL_FREQUENCY_CAP``, ``N/24h``).

The cap ledger is tested against its memory twin and the real Redis the fleet shares: the
cap holds, a retried page is not counted twice, a dry run takes nothing, and two blasts
expanding at once cannot both take a supporter's last slot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from config.names import Names
from messaging.compliance.frequency_caps import (
    CapLedger,
    FrequencyCap,
    InMemoryCapLedger,
    parse_frequency_cap,
)
from queues.flow.caps import RedisCapLedger
from tests.conftest import REDIS_TEST_URL

DAY = FrequencyCap(limit=3, window_s=86_400)


@pytest.mark.parametrize(
    ("raw", "cap"),
    [
        ("3/24h", FrequencyCap(3, 86_400)),
        (" 1 / 1h ", FrequencyCap(1, 3_600)),
        ("5/7d", FrequencyCap(5, 7 * 86_400)),
        ("10/48H", FrequencyCap(10, 48 * 3_600)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_caps_are_read_in_n_per_window_form(raw: str, cap: FrequencyCap | None) -> None:
    assert parse_frequency_cap(raw) == cap


@pytest.mark.parametrize("raw", ["3", "3/24", "0/24h", "3/0h", "3/32d", "-1/24h", "3 per day"])
def test_malformed_caps_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"must be|count|window"):
        parse_frequency_cap(raw)


def test_caps_print_as_they_are_written() -> None:
    assert [str(FrequencyCap(3, 86_400)), str(FrequencyCap(5, 7 * 86_400))] == ["3/24h", "5/7d"]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def caps(request: pytest.FixtureRequest, prefix: str) -> Iterator[CapLedger]:
    """The cap ledger: the memory twin, then Redis."""
    if request.param == "memory":
        yield InMemoryCapLedger()
        return
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not answering at {REDIS_TEST_URL}: {exc}", pytrace=False)
    yield RedisCapLedger(client, Names(prefix))
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_the_cap_holds_across_blasts_and_channels(caps: CapLedger) -> None:
    # Given a cap of 3 a day, when four blasts each reach supporters 1 and 2 by SMS
    results = [caps.reserve("sms", f"b{i}", [1, 2], DAY) for i in range(4)]
    # Then the first three reach them and the fourth finds them capped
    assert results == [set(), set(), set(), {1, 2}]
    # And email has its own count
    assert caps.reserve("email", "b4", [1, 2], DAY) == set()


def test_a_retried_page_is_not_counted_twice(caps: CapLedger) -> None:
    # Given blast b1 took slots for supporters 1-3, and the cap is one a day
    one = FrequencyCap(1, 86_400)
    assert caps.reserve("sms", "b1", [1, 2, 3], one) == set()
    # When its page is retried after a crash, then nobody is capped by b1's own slots
    assert caps.reserve("sms", "b1", [1, 2, 3], one) == set()
    # But another blast is
    assert caps.reserve("sms", "b2", [3, 4], one) == {3}


def test_a_dry_run_counts_and_takes_nothing(caps: CapLedger) -> None:
    one = FrequencyCap(1, 86_400)
    caps.reserve("sms", "b1", [1], one)
    # When a dry run asks about supporters 1 and 2, then 1 would be capped
    assert caps.reserve("sms", "dry", [1, 2], one, dry_run=True) == {1}
    # And it took nothing: 2 is still free for a real blast
    assert caps.reserve("sms", "b2", [2], one) == set()


@pytest.mark.integration
def test_slots_free_up_when_the_window_passes(prefix: str) -> None:
    caps = RedisCapLedger(redis.Redis.from_url(REDIS_TEST_URL), Names(prefix))
    second = FrequencyCap(1, 1)  # a one-second window, only for this test
    assert caps.reserve("sms", "b1", [1], second) == set()
    assert caps.reserve("sms", "b2", [1], second) == {1}
    time.sleep(1.1)
    assert caps.reserve("sms", "b3", [1], second) == set()


def test_memory_slots_free_up_when_the_window_passes() -> None:
    now = [0.0]
    caps = InMemoryCapLedger(clock=lambda: now[0])
    assert caps.reserve("sms", "b1", [1], FrequencyCap(1, 3_600)) == set()
    now[0] = 3_599.0
    assert caps.reserve("sms", "b2", [1], FrequencyCap(1, 3_600)) == {1}
    now[0] = 3_600.0
    assert caps.reserve("sms", "b3", [1], FrequencyCap(1, 3_600)) == set()


@pytest.mark.integration
def test_two_blasts_at_once_cannot_both_take_the_last_slot(prefix: str) -> None:
    # Given 2,000 supporters with one slot left each (cap 3, two used)
    client = redis.Redis.from_url(REDIS_TEST_URL)
    names = Names(prefix)
    supporters = list(range(1, 2_001))
    setup = RedisCapLedger(client, names)
    for blast in ("old1", "old2"):
        assert setup.reserve("sms", blast, supporters, DAY) == set()
    # When eight blasts expand at once, each from its own process-like client
    capped: dict[str, set[int]] = {}
    start = threading.Barrier(8)

    def expand(blast: str) -> None:
        ledger = RedisCapLedger(redis.Redis.from_url(REDIS_TEST_URL), names)
        start.wait()
        for page in range(0, len(supporters), 250):
            capped.setdefault(blast, set()).update(
                ledger.reserve("sms", blast, supporters[page : page + 250], DAY)
            )

    threads = [threading.Thread(target=expand, args=(f"new{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every supporter got exactly one of the eight: seven blasts found them capped
    for sid in supporters:
        assert sum(sid not in capped[b] for b in capped) == 1, sid
    keys = list(client.scan_iter(f"{prefix}:*"))
    client.delete(*keys)
    client.close()


def test_settings_read_the_caps_and_name_a_malformed_one() -> None:
    from config.settings import load_settings
    from messaging.errors import ConfigError

    settings = load_settings({"SMS_FREQUENCY_CAP": "3/24h", "EMAIL_FREQUENCY_CAP": "off"})
    assert (settings.sms_frequency_cap, settings.email_frequency_cap) == (DAY, None)
    assert load_settings({}).sms_frequency_cap is None  # the contract's default: off
    with pytest.raises(ConfigError, match=r"^EMAIL_FREQUENCY_CAP: "):
        load_settings({"EMAIL_FREQUENCY_CAP": "3 a day"})
