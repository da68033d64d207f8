"""``rapid ledger prune``: old blasts' ledger rows go, in short batches; their counts stay
(issue #21, item 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from messaging.blasts.lifecycle import BlastStatus, RowState
from messaging.ports import Outcome
from messaging.store import open_stores
from messaging.store.db import create_db_engine
from tests.test_blast_counts import Backend, backend  # noqa: F401  (the per-backend fixture)
from tests.test_store_contract import alert, expand_all, ids_of, person, seed
from workers.commands.ledger import parse_age


def _ended_blast(on: Backend, blast_id: str, sent: int) -> None:
    """A blast of every seeded supporter, ``sent`` texts sent, the rest canceled, ended."""
    stores = on.stores
    expand_all(stores, alert(blast_id))
    ids = ids_of(stores, blast_id)
    stores.ledger.claim(blast_id, "sms", ids[:sent])
    stores.ledger.record(blast_id, "sms", [Outcome(i, RowState.SENT) for i in ids[:sent]])
    stores.ledger.close_open(blast_id, RowState.CANCELED, [RowState.PENDING])
    assert stores.blasts.set_status(blast_id, BlastStatus.CANCELED)


def test_prune_takes_ended_blasts_in_bounded_batches_and_keeps_counts(
    backend: Backend,  # noqa: F811  (the fixture imported above)
) -> None:
    stores = backend.stores
    # Given two ended blasts and one still sending
    seed(stores, [person(i) for i in range(1, 12)])
    _ended_blast(backend, "old-1", sent=4)
    _ended_blast(backend, "old-2", sent=0)
    expand_all(stores, alert("live-1"))
    stores.blasts.set_status("live-1", BlastStatus.SENDING)
    before = stores.blasts.state_counts(["old-1", "old-2", "live-1"])
    # When rows of blasts ended before a cutoff in the future ("older than 0") are pruned
    # five at a time
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    batches = []
    while n := stores.retention.prune_batch(cutoff, max_rows=5):
        batches.append(n)
    # Then each transaction took at most five rows, both ended blasts' 22 rows went
    assert max(batches) <= 5 and sum(batches) == 22
    assert backend.ledger_counts("old-1") == {} and backend.ledger_counts("old-2") == {}
    # And the live blast kept its rows, and every blast reports what it reported before
    assert backend.ledger_counts("live-1") == before["live-1"]
    stores.retention.compact_counts(max_rows=10_000)
    assert stores.blasts.state_counts(["old-1", "old-2", "live-1"]) == before
    assert before["old-1"] == {"sms": {RowState.SENT: 4, RowState.CANCELED: 7}}


def test_prune_spares_blasts_that_ended_after_the_cutoff(
    backend: Backend,  # noqa: F811
) -> None:
    seed(backend.stores, [person(i) for i in range(1, 4)])
    _ended_blast(backend, "recent-1", sent=1)
    # When the cutoff is an hour ago
    pruned = backend.stores.retention.prune_batch(datetime.now(UTC) - timedelta(hours=1), 100)
    # Then nothing is pruned
    assert pruned == 0
    assert backend.ledger_counts("recent-1") == {"sms": {RowState.SENT: 1, RowState.CANCELED: 2}}


def test_ages_parse_and_bad_ones_are_refused() -> None:
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age("36h") == timedelta(hours=36)
    assert parse_age("30m") == timedelta(minutes=30)
    for bad in ("90", "d", "-1d", "1w", ""):
        with pytest.raises(ValueError, match="not an age"):
            parse_age(bad)


@pytest.mark.integration
def test_rapid_ledger_prune_command(rapid_env: dict[str, str], db_url: str) -> None:
    from tests.fleet import rapid

    # Given an ended blast in a provisioned database
    rapid(rapid_env, "provision")
    engine = create_db_engine(db_url)
    try:
        stores = open_stores(engine)
        seed(stores, [person(i) for i in range(1, 8)])
        _ended_blast(Backend(stores, engine), "cli-1", sent=3)
    finally:
        engine.dispose()
    # When `rapid ledger prune` runs with a bad age, then with 0 minutes
    bad = subprocess.run(
        [sys.executable, "-m", "workers", "ledger", "prune", "--older-than", "soon"],
        env=rapid_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "not an age" in bad.stderr
    out = rapid(rapid_env, "ledger", "prune", "--older-than", "0m", "--batch-rows", "2", "--json")
    # Then it reports the rows and batches, and the blast still shows its counts
    report = json.loads(out.stdout)
    assert report["rows_deleted"] == 7 and report["batches"] == 4
    shown = json.loads(rapid(rapid_env, "blast", "show", "cli-1", "--json").stdout)
    assert shown["counts"]["sms"]["targeted"] == 7
    assert shown["counts"]["sms"]["sent"] == 3
    assert shown["counts"]["sms"]["canceled"] == 4
