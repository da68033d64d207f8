"""Ledger size (issue #21, item 1): what the scheduler's reconcile, `rapid blast show` /
`list` and the `/metrics` scrape cost with 10 thousand, 1 million and 10 million ledger rows,
and how fast `rapid ledger prune` frees rows.

    python -m benchmarks.bench_ledger_size                          # 10k, 1M, 10M (~15 min)
    python -m benchmarks.bench_ledger_size --sizes 10000,100000     # the --quick shape

For each size, a throwaway PostgreSQL database holds that many rows of ended blasts (one
blast per million rows at most, the largest first) plus one live blast of ``--live-rows``
rows (pending, sending, sent), written with ``INSERT … SELECT generate_series`` through the
ledger's count triggers, then ``ANALYZE``. Then, the count deltas folded (as the scheduler
does every pass), the median of ``--repeats`` timings of:

- **reconcile**: ``state_counts`` of the live blasts (the scheduler's pass, ``sweep.py``);
- **show**: the summary of the largest ended blast (``rapid blast show``, counted from the
  system of record since it has ended) and **list**: the 50 newest (``rapid blast list``);
- **scrape**: ``fleet_counts`` + backlog + outcomes (the `/metrics` ledger families and the
  autoscaling backlog);
- **ledger count**, for comparison: a grouped count of the largest ended blast's rows,
  what `show` of an ended blast cost before the counts were kept.

Then **prune**: ``prune_batch`` 5,000 rows at a time on the oldest blast, up to
``--prune-rows``: rows/s and the longest batch (how long one transaction holds its locks).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text

from benchmarks.harness import DEFAULT_PG_URL, median, throwaway_pg
from messaging.store import open_stores
from messaging.store.db import create_db_engine
from messaging.store.schema import deliveries
from queues.backlog import compute_backlog, compute_outcomes

#: One ended blast holds at most this many of the ledger's rows.
BLAST_ROWS_MAX = 1_000_000
#: Row states of an ended blast (5 % failed, a third delivered) and of the live one.
ENDED_STATES_SQL = (
    "CASE WHEN g % 20 = 0 THEN 'failed' WHEN g % 3 = 0 THEN 'delivered' ELSE 'sent' END"
)
LIVE_STATES_SQL = (
    "CASE WHEN g % 10 < 5 THEN 'pending' WHEN g % 10 = 5 THEN 'sending' ELSE 'sent' END"
)
#: Rows per prune transaction (``rapid ledger prune``'s default).
PRUNE_BATCH_ROWS = 5_000


def _alert(blast_id: str) -> str:
    return json.dumps({"alert_id": blast_id, "sms": {"body": "Hi"}})


def _blast(
    conn: Any, blast_id: str, status: str, rows: int, states_sql: str, age: timedelta
) -> None:
    at = datetime.now(UTC) - age
    conn.execute(
        text(
            "INSERT INTO blasts (blast_id, topic, status, priority, alert, created_at, "
            "updated_at, expanded_at, ended_at) VALUES (:b, 'bench', :s, 'normal', :a, :t, :t, "
            ":t, :e)"
        ),
        {
            "b": blast_id,
            "s": status,
            "a": _alert(blast_id),
            "t": at,
            "e": at if status != "sending" else None,
        },
    )
    # One statement per blast: the statement-level count trigger adds one delta per state.
    conn.execute(
        text(
            "INSERT INTO deliveries (blast_id, channel, supporter_id, destination, state, "
            "attempts, created_at, updated_at) SELECT :b, 'sms', g, '+1' || (2000000000 + g), "
            f"{states_sql}, 1, :t, :t FROM generate_series(1, :n) g"
        ),
        {"b": blast_id, "n": rows, "t": at},
    )


def seed(engine: Engine, ended_rows: int, live_rows: int) -> list[str]:
    """Ended blasts of ``ended_rows`` rows in all, then one live blast; returns the ended
    blast ids, oldest first."""
    ended: list[str] = []
    left, n = ended_rows, 0
    while left > 0:
        rows = min(left, BLAST_ROWS_MAX)
        blast_id = f"ended-{n:03d}"
        with engine.begin() as conn:
            _blast(
                conn,
                blast_id,
                "completed",
                rows,
                ENDED_STATES_SQL,
                timedelta(days=400 - n),
            )
        ended.append(blast_id)
        left -= rows
        n += 1
    with engine.begin() as conn:
        _blast(
            conn,
            "live-0",
            "sending",
            live_rows,
            LIVE_STATES_SQL,
            timedelta(minutes=1),
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    return ended


def timed_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: connections, plans, caches
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return round(median(samples), 3)


def measure(url: str, ended_rows: int, live_rows: int, repeats: int) -> dict[str, Any]:
    engine = create_db_engine(url)
    try:
        started = time.monotonic()
        ended = seed(engine, ended_rows, live_rows)
        seed_s = time.monotonic() - started
        stores = open_stores(engine)
        while stores.retention.compact_counts(100_000):
            pass
        largest = stores.blasts.get(ended[0])
        assert largest is not None

        def reconcile() -> object:
            return stores.blasts.state_counts(["live-0"])

        def show() -> object:
            record = stores.blasts.get(ended[0])
            assert record is not None
            return stores.blasts.summaries([record])

        def listing() -> object:
            return stores.blasts.summaries(stores.blasts.recent(50))

        def scrape() -> object:
            return (
                stores.reports.fleet_counts(),
                compute_backlog(stores.reports),
                compute_outcomes(stores.reports),
            )

        grouped = (
            select(deliveries.c.channel, deliveries.c.state, func.count())
            .where(deliveries.c.blast_id == ended[0])
            .group_by(deliveries.c.channel, deliveries.c.state)
        )

        def ledger_count() -> object:
            with engine.connect() as conn:
                return conn.execute(grouped).all()

        shown = show()
        return {
            "ledger_rows": ended_rows + live_rows,
            "largest_blast_rows": min(ended_rows, BLAST_ROWS_MAX),
            "seed_s": round(seed_s, 1),
            "reconcile_ms": timed_ms(reconcile, repeats),
            "show_ms": timed_ms(show, repeats),
            "list_ms": timed_ms(listing, repeats),
            "scrape_ms": timed_ms(scrape, repeats),
            "ledger_count_ms": timed_ms(ledger_count, max(3, repeats // 5)),
            "shown_targeted": shown[0]["counts"]["sms"]["targeted"],  # type: ignore[index]
        }
    finally:
        engine.dispose()


def measure_prune(url: str, rows: int) -> dict[str, Any]:
    engine = create_db_engine(url)
    try:
        stores = open_stores(engine)
        cutoff = datetime.now(UTC) - timedelta(days=30)
        batches: list[float] = []
        deleted = 0
        started = time.perf_counter()
        while deleted < rows:
            t = time.perf_counter()
            n = stores.retention.prune_batch(cutoff, PRUNE_BATCH_ROWS)
            batches.append((time.perf_counter() - t) * 1000)
            if not n:
                break
            deleted += n
        elapsed = time.perf_counter() - started
        return {
            "rows": deleted,
            "batch_rows": PRUNE_BATCH_ROWS,
            "rows_per_s": round(deleted / elapsed) if elapsed else 0,
            "batch_ms_median": round(median(batches), 1),
            "batch_ms_max": round(max(batches), 1),
        }
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,1000000,10000000", help="ended-blast rows")
    parser.add_argument("--live-rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--prune-rows", type=int, default=200_000)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    prune: dict[str, Any] = {}
    for i, size in enumerate(sizes):
        with throwaway_pg(args.pg_url) as url:
            results.append(measure(url, size, args.live_rows, args.repeats))
            print(f"  {size:,} rows: {results[-1]}", file=sys.stderr, flush=True)
            if i == len(sizes) - 1:  # prune the largest ledger's oldest blast
                prune = measure_prune(url, args.prune_rows)
    small, large = results[0], results[-1]
    ratios = {
        op: round(large[op] / small[op], 2) if small[op] else None
        for op in ("reconcile_ms", "show_ms", "list_ms", "scrape_ms", "ledger_count_ms")
    }
    print(
        json.dumps(
            {
                "sizes": results,
                "largest_over_smallest": ratios,
                "target_ratio": 2.0,
                "prune": prune,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
