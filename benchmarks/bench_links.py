"""Benchmark ``GET /l/{code}``: redirect latency of tracked short links through ``rapid web``.

    python -m benchmarks.bench_links                      # 20,000 recipients, 3,000 clicks
    python -m benchmarks.bench_links --recipients 2000 --clicks 500

Creates a throwaway PostgreSQL database, expands an SMS blast with a donation link over
``--recipients`` supporters, starts ``rapid web`` as its own process (uvicorn, as in
production), and follows ``--clicks`` short links of distinct recipients one after another
over keep-alive HTTP: each a first click (HMAC check, the link from the process cache after
its first read, one conditional ``UPDATE`` of the ledger row), then as many repeat clicks
(nothing to update). Prints one JSON object: p50/p99/max in milliseconds. Target: p99 of
first clicks <= 20 ms on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import structlog

from benchmarks.bench_export import _database

DEFAULT_PG_URL = "postgresql+psycopg://127.0.0.1:5432/postgres"
TOPIC = "bench-links"
BLAST_ID = "bench-links-1"
DONATE = "https://secure.actblue.com/donate/bench?amount=10"
#: Supporters written per import batch.
SEED_BATCH = 20_000


def seed(database_url: str, recipients: int, env: dict[str, str]) -> list[str]:
    """An expanded blast over ``recipients`` supporters; returns one short-link code each."""
    from config.settings import load_settings
    from messaging.blasts.expansion import Expander
    from messaging.content.alert import parse_alert
    from messaging.content.links import LinkCodes
    from messaging.memory import InMemorySendQueue
    from messaging.ports import SupporterRow
    from messaging.store import open_stores
    from messaging.store.db import create_db_engine

    engine = create_db_engine(database_url)
    stores = open_stores(engine)
    columns = frozenset({"first_name", "phone", "sms_opt_in", "topics"})
    for start in range(0, recipients, SEED_BATCH):
        stores.supporters.write_batch(
            [
                SupporterRow(
                    external_id=f"v{i:08d}",
                    first_name=f"Pat{i}",
                    phone=f"+1412{2000000 + i:07d}",
                    sms_opt_in=True,
                    topics=(TOPIC,),
                )
                for i in range(start, min(start + SEED_BATCH, recipients))
            ],
            columns,
        )
    document = {"alert_id": BLAST_ID, "sms": {"body": f"Chip in: {DONATE}"}}
    alert = parse_alert(json.dumps(document), fallback_id=BLAST_ID)
    blast, _ = stores.blasts.create(alert, TOPIC, None)
    # Nobody sends this blast: its send work stays in a queue in memory.
    Expander(stores.ledger, stores.blasts, InMemorySendQueue()).expand(blast)
    link_id = stores.links.register(BLAST_ID, "sms", [DONATE])[DONATE]
    keys = load_settings(env).unsubscribe_keys()
    codes = LinkCodes(keys[0], keys[1:])
    # The ledger's supporter ids are the import's, 1..recipients on a fresh database.
    sids = [c.supporter_id for c in stores.ledger.claim(BLAST_ID, "sms", range(1, recipients + 1))]
    engine.dispose()
    return [codes.make(link_id, sid) for sid in sids]


def _clicked(database_url: str) -> int:
    from messaging.store.db import create_db_engine
    from messaging.store.sql.links import click_counts

    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return click_counts(conn, [BLAST_ID]).get(BLAST_ID, {}).get("sms", 0)
    finally:
        engine.dispose()


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(ordered[-1], 2)}


def measure(env: dict[str, str], codes: list[str], port: int) -> dict[str, Any]:
    """Start ``rapid web`` and follow each code twice; latencies of first and repeat clicks."""
    import httpx

    web = subprocess.Popen(
        [sys.executable, "-m", "workers", "web"],
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    http.get("/l/warmup")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or web.poll() is not None:
                        raise
                    time.sleep(0.2)
            results: dict[str, Any] = {}
            for kind in ("first", "repeat"):
                samples: list[float] = []
                for code in codes:
                    started = time.perf_counter()
                    answer = http.get(f"/l/{code}")
                    samples.append((time.perf_counter() - started) * 1000)
                    assert answer.status_code == 302, answer.status_code
                results[kind] = _percentiles(samples)
    finally:
        web.terminate()
        web.wait(timeout=30)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--clicks", type=int, default=3_000)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--port", type=int, default=18_731)
    args = parser.parse_args(argv)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    url, drop = _database(args.pg_url)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "RAPID_PREFIX": f"bench{uuid.uuid4().hex[:6]}",
        "RAPID_ENV": "test",
        "RAPID_LOG_LEVEL": "WARNING",
        "RAPID_LOG_FORMAT": "json",
    }
    try:
        codes = seed(url, args.recipients, env)
        step = max(1, len(codes) // args.clicks)
        sample = codes[::step][: args.clicks]
        result = measure(env, sample, args.port)
        recorded = _clicked(url)
    finally:
        drop()
    json.dump(
        {
            "recipients": args.recipients,
            "clicks": len(sample),
            "code_chars": max(len(c) for c in sample),
            "first_click": result["first"],
            "repeat_click": result["repeat"],
            # Written by the server's click thread (and its flush at exit): one per recipient.
            "clicked_recorded": recorded,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
