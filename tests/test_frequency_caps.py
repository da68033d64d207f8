"""Frequency caps (contract §2: ``SMS_FREQUENCY_CAP``, ``EMAIL_FREQUENCY_CAP``, ``N/24h``).

The cap ledger is tested against its memory twin and the real Redis the fleet shares: the
cap holds, a retried page is not counted twice, a dry run takes nothing, and two blasts
expanding at once cannot both take a supporter's last slot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config.names import Names
from messaging.compliance.frequency_caps import (
    CapLedger,
    FrequencyCap,
    FrequencyCaps,
    InMemoryCapLedger,
    parse_frequency_cap,
)
from queues.flow.caps import RedisCapLedger
from tests.conftest import REDIS_TEST_URL
from tests.factories import live_redis
from tests.fleet import EmulatorProcess, emulators  # noqa: F401 - the fixture

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
    client = live_redis()
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


# --- wired into expansion -------------------------------------------------------------------


def _expand(stores: Any, caps: FrequencyCaps, alert: dict[str, Any]) -> Any:
    from messaging.blasts.expansion import Expander
    from messaging.content.alert import parse_alert
    from messaging.memory import InMemoryProgressCounters, InMemorySendQueue

    record, _ = stores.blasts.create(parse_alert(json.dumps(alert), fallback_id="x"), "t", None)
    queue, progress = InMemorySendQueue(), InMemoryProgressCounters()
    Expander(stores.ledger, stores.blasts, queue, page_size=2, caps=caps, progress=progress).expand(
        record
    )
    queued = sorted(sid for w in queue.items for sid in w.supporter_ids)
    return (
        queued,
        progress.read([record.blast_id])[record.blast_id],
        stores.blasts.get(record.blast_id),
    )


def test_expansion_writes_supporters_over_the_cap_capped_and_queues_nothing_for_them() -> None:
    from messaging.blasts.lifecycle import RowState
    from messaging.ports import SupporterRow
    from messaging.store import memory_stores

    # Given three subscribers, one of whom (1) was already texted by another blast today,
    # and a cap of one text a day
    stores = memory_stores()
    columns = frozenset({"phone", "sms_opt_in", "topics"})
    stores.supporters.write_batch(
        [
            SupporterRow(f"e{i}", phone=f"+1412555000{i}", sms_opt_in=True, topics=("t",))
            for i in (1, 2, 3)
        ],
        columns,
    )
    ledger = InMemoryCapLedger()
    caps = FrequencyCaps(ledger, {"sms": FrequencyCap(1, 86_400)})
    ledger.reserve("sms", "earlier", [1], caps.by_channel["sms"])
    # When a dry run looks first, then the blast is sent
    _, _, dry = _expand(stores, caps, {"alert_id": "d", "sms": {"body": "x"}, "dry_run": True})
    queued, live, blast = _expand(stores, caps, {"alert_id": "b", "sms": {"body": "x"}})
    # Then the dry run counted 1 as capped without taking anyone's slot
    assert dry.stats["would_send"]["sms"] == {RowState.PENDING: 2, RowState.CAPPED: 1}
    # And the blast writes 1 capped, queues only 2 and 3, and counts it live
    assert queued == [2, 3]
    assert stores.blasts.state_counts(["b"])["b"]["sms"] == {
        RowState.PENDING: 2,
        RowState.CAPPED: 1,
    }
    assert live["sms"] == {RowState.PENDING: 2, RowState.CAPPED: 1}
    assert blast.stats["sms"]["eligible"] == 3
    # And a test send to a capped supporter is neither capped nor uses a slot
    queued, _, _ = _expand(
        stores, caps, {"alert_id": "t1", "sms": {"body": "x"}, "test_recipients": ["+14125550001"]}
    )
    assert queued == [1]
    assert ledger.reserve("sms", "later", [2, 3], caps.by_channel["sms"], dry_run=True) == {2, 3}


@pytest.mark.e2e
@pytest.mark.integration
def test_caps_from_the_outside(
    emulators: EmulatorProcess,  # noqa: F811 - the fixture
    moto_url: str,
    prefix: str,
    tmp_path: Path,
) -> None:
    from collections import Counter

    from tests.fleet import (
        Fleet,
        aws_clients,
        rapid,
        topic_arn,
        wait_ended,
        write_people,
    )

    # Given a fleet capped at one text per supporter a day, two intake workers, and 300
    # subscribers who have had no text yet
    env = emulators.env(SMS_FREQUENCY_CAP="1/24h")
    fleet = Fleet(env, tmp_path)
    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        rapid(env, "provision", "--topic", "debate-night")
        phones = write_people(tmp_path / "people.csv", 300, "debate-night")
        rapid(env, "supporters", "import", str(tmp_path / "people.csv"))
        fleet.start("intake-a", "intake", "--wait-time", "1")
        fleet.start("intake-b", "intake", "--wait-time", "1")
        fleet.start("sender", "sender", "--threads", "4")
        # When two blasts are published at once
        sns, _ = aws_clients(moto_url)
        arn = topic_arn(sns, prefix, "debate-night")
        for blast in ("cap-1", "cap-2"):
            sns.publish(
                TopicArn=arn, Message=json.dumps({"alert_id": blast, "sms": {"body": blast}})
            )
        counts = [wait_ended(env, blast)["counts"]["sms"] for blast in ("cap-1", "cap-2")]
        # Then every supporter got exactly one of the two texts, the other blast counted
        # them capped, and blast show says so
        texted = Counter(m["to"] for m in emulators.sms())
        assert set(texted) == set(phones) and max(texted.values()) == 1
        assert sum(c["sent"] for c in counts) == 300
        assert sum(c["capped"] for c in counts) == 300
        assert all(c["targeted"] == c["sent"] + c["capped"] for c in counts)
        # And a dry run counts everyone as capped, and blast show has the column
        third = ["alert", "send", "--topic", "debate-night", "--sms-body", "third"]
        dry = json.loads(rapid(env, *third, "--dry-run", "--json").stdout)
        assert {k: n for k, n in dry["would_send"]["sms"].items() if n} == {"capped": 300}
        assert "capped" in rapid({**env, "COLUMNS": "200"}, "blast", "show", "cap-2").stdout
    finally:
        fleet.stop()
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
