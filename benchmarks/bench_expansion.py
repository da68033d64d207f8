"""Expansion at scale: a 1,000,000-subscriber topic into ledger rows and send work.

    python -m benchmarks.bench_expansion                    # 1,000,000 subscribers, 3 runs
    python -m benchmarks.bench_expansion --quick            # 100,000 subscribers, 3 runs
    python -m benchmarks.bench_expansion --subscribers 250000 --runs 5 --channels sms,email

Seeds a throwaway PostgreSQL database once, then, per run, on an emptied ledger:

- **ours**: the real intake (``App.intake.handle``, what ``rapid intake`` does with one
  alert) in a child process, timed from the call until it returns, by which point every
  ledger row is written and every send batch is in the dramatiq Redis lane (no sender runs;
  both are verified, then the prefix's Redis keys are deleted). Its peak RSS is that
  child's ``ru_maxrss``.
- **ceilings**: the database alone writing the same rows into the same table and indexes on
  a fresh blast: one server-side ``INSERT … SELECT`` over the same join, and a ``COPY FROM
  STDIN`` of the same rows prepared in memory beforehand.

Prints one JSON object; ``ratio_to_*`` is our median time over the ceiling's.
Targets: <= 10 s (or near the COPY ceiling) and <= 150 MB.

This parent process imports nothing heavy: a child's high-water mark includes the pages it
inherited at fork, so seeding, SQLAlchemy and the measured work all run in children.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

from benchmarks.child import run_child

#: Where the throwaway database is created (and dropped).
DEFAULT_PG_URL = "postgresql+psycopg://127.0.0.1:5432/postgres"
#: The topic every seeded supporter follows.
TOPIC = "bench-expand"
#: Columns the ceilings write: exactly what expansion writes for a new row.
_COLUMNS = "blast_id, channel, supporter_id, destination, state, created_at, updated_at"


def _rows_sql(channel: str) -> str:
    """The same recipients expansion selects (topic, consent, an address), as plain SQL."""
    opt_in, address = ("sms_opt_in", "phone") if channel == "sms" else ("email_opt_in", "email")
    destination = "p.phone" if channel == "sms" else "lower(p.email)"
    return (
        f"SELECT %(blast)s, '{channel}', s.supporter_id, {destination}, 'pending', now(), now() "
        "FROM subscriptions s JOIN supporters p ON p.id = s.supporter_id "
        f"WHERE s.topic = %(topic)s AND p.{opt_in} AND p.{address} IS NOT NULL"
    )


# --- the children ----------------------------------------------------------------------------


def _raw(db_url: str) -> Any:
    """A plain psycopg connection (autocommit) to the benchmark database."""
    import psycopg

    return psycopg.connect(
        db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )


def _setup(admin_url: str, name: str, subscribers: int) -> None:
    from sqlalchemy import text

    from benchmarks.harness import seed_subscribers
    from messaging.store.db import create_db_engine, migrate

    admin = create_db_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    db_url = _db_url(admin_url, name)
    engine = create_db_engine(db_url)
    migrate(engine)
    engine.dispose()
    seed_subscribers(db_url, {TOPIC: subscribers})
    with _raw(db_url) as conn:
        # A settled database, as in production: autovacuum must not start mid-measurement.
        conn.execute("VACUUM ANALYZE supporters")
        conn.execute("VACUUM ANALYZE subscriptions")


def _drop(admin_url: str, name: str) -> None:
    with _raw(admin_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset(db_url: str) -> None:
    """An empty ledger and a clean checkpoint before every measured write."""
    with _raw(db_url) as conn:
        conn.execute("TRUNCATE deliveries")
        conn.execute("CHECKPOINT")


def _new_blast(conn: Any, blast_id: str) -> None:
    conn.execute(
        "INSERT INTO blasts (blast_id, topic, status, priority, alert, created_at, updated_at) "
        "VALUES (%s, %s, 'sending', 'normal', '{}', now(), now())",
        (blast_id, TOPIC),
    )


def _ceiling(db_url: str, kind: str, channels: list[str]) -> None:
    """The database's own time for the same rows: INSERT … SELECT, or COPY of prepared rows."""
    blast_id = f"ceiling-{kind}-{uuid.uuid4().hex[:8]}"
    params = {"blast": blast_id, "topic": TOPIC}
    with _raw(db_url) as conn:
        _new_blast(conn, blast_id)
        if kind == "insert_select":
            started = time.perf_counter()
            with conn.transaction():
                for channel in channels:
                    conn.execute(
                        f"INSERT INTO deliveries ({_COLUMNS}) {_rows_sql(channel)}", params
                    )
            seconds = time.perf_counter() - started
        else:
            # Prepare the rows first (not timed), so only the COPY into the table is measured.
            import psycopg

            chunks: list[bytes] = []
            with psycopg.ClientCursor(conn) as cur:
                for channel in channels:
                    query = cur.mogrify(_rows_sql(channel), params)
                    with cur.copy(f"COPY ({query}) TO STDOUT") as out:
                        chunks.extend(bytes(chunk) for chunk in out)
                started = time.perf_counter()
                with conn.transaction(), cur.copy(f"COPY deliveries ({_COLUMNS}) FROM STDIN") as c:
                    for chunk in chunks:
                        c.write(chunk)
                seconds = time.perf_counter() - started
        rows = conn.execute("SELECT count(*) FROM deliveries WHERE blast_id = %s", (blast_id,))
        print(json.dumps({"seconds": seconds, "rows": rows.fetchone()[0]}))


def _expand(db_url: str, channels: list[str], profile: str | None) -> None:
    """The measured child: the real intake handles one alert; nothing else runs here."""
    from benchmarks.harness import fleet_env
    from config.logging import configure_logging
    from config.settings import load_settings
    from workers.app import App

    prefix = f"benchx{uuid.uuid4().hex[:6]}"
    unused = {"twilio": "http://127.0.0.1:9", "sendgrid": "http://127.0.0.1:9"}
    settings = load_settings(fleet_env(db_url, unused, prefix))
    configure_logging(settings, stream=sys.stderr)
    app = App(settings)
    blast_id = f"expand-{uuid.uuid4().hex[:8]}"
    content: dict[str, Any] = {}
    if "sms" in channels:
        content["sms"] = {"body": "Hi {{ first_name }}, watch this clip: https://ex.am/p1"}
    if "email" in channels:
        content["email"] = {"subject": "Hi {{ first_name }}", "text": "Watch: https://ex.am/p1"}
    body = json.dumps({"alert_id": blast_id, "topic": TOPIC, **content})
    # Connections and the broker's scripts ready, as in a running `rapid intake`.
    app.redis.ping()
    with app.engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    _ = app.intake, app.lanes
    profiler: Any = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
    started = time.perf_counter()
    app.intake.handle(body)
    seconds = time.perf_counter() - started
    if profile and profiler is not None:
        profiler.stop()
        with open(profile, "w") as out:
            out.write(profiler.output_text(unicode=True, show_all=False))
    try:
        with app.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT channel, count(*) FROM deliveries WHERE blast_id = %(b)s "
                "AND state = 'pending' GROUP BY channel",
                {"b": blast_id},
            ).all()
        # Every batch in its lane, counted by the recipients it carries (batch sizes are
        # the product's business): dramatiq keeps queued messages in a hash per queue.
        queued: dict[str, dict[str, int]] = {}
        for channel in channels:
            bodies = app.redis.hvals(f"{prefix}-dramatiq:{channel}-normal.msgs")
            queued[channel] = {
                "batches": len(bodies),
                "recipients": sum(len(json.loads(b)["args"][1]) for b in bodies),
            }
    finally:
        keys = list(app.redis.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            app.redis.delete(*keys)
        app.close()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": {str(c): int(n) for c, n in rows},
                "batches": queued,
                "vm_hwm_mb": _vm_hwm_mb(),
            }
        )
    )


def _vm_hwm_mb() -> float:
    """This process's own high-water mark since exec (a cross-check of ``ru_maxrss``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- the parent ------------------------------------------------------------------------------


def _db_url(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _child(*args: str) -> tuple[dict[str, Any], float, float]:
    """Run a step of this script in a child: (its last JSON line, wall s, peak RSS MB)."""
    stdout, wall, peak_mb = run_child("benchmarks.bench_expansion", *args)
    lines = stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines else {}), wall, peak_mb


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _span(values: list[float], digits: int = 2) -> dict[str, float]:
    return {
        "median": round(_median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def main(argv: list[str] | None = None) -> int:
    """Seed once, then per run: both ceilings and our expansion, each on an emptied ledger."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=None, help="default 1,000,000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 subscribers")
    parser.add_argument("--channels", default="sms", help="sms, email or sms,email")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--profile", help="write a pyinstrument profile of the last run here")
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    channels = args.channels.split(",")
    if args.step:
        step, *rest = args.step
        if step == "setup":
            _setup(args.pg_url, rest[0], int(rest[1]))
        elif step == "drop":
            _drop(args.pg_url, rest[0])
        elif step == "reset":
            _reset(rest[0])
        elif step == "ceiling":
            _ceiling(rest[0], rest[1], channels)
        elif step == "expand":
            _expand(rest[0], channels, rest[1] if len(rest) > 1 else None)
        return 0

    subscribers = args.subscribers or (100_000 if args.quick else 1_000_000)
    name = f"rapid_bench_{uuid.uuid4().hex[:10]}"
    db_url = _db_url(args.pg_url, name)
    common = ["--pg-url", args.pg_url, "--channels", args.channels]
    started = time.perf_counter()
    _child("--step", "setup", name, str(subscribers), *common)
    seed_s = time.perf_counter() - started
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.runs):
            run: dict[str, Any] = {}
            for kind in ("insert_select", "copy"):
                _child("--step", "reset", db_url, *common)
                out, _, _ = _child("--step", "ceiling", db_url, kind, *common)
                run[f"ceiling_{kind}_s"] = round(out["seconds"], 2)
            _child("--step", "reset", db_url, *common)
            profile = [args.profile] if args.profile and i == args.runs - 1 else []
            out, wall, peak_mb = _child("--step", "expand", db_url, *profile, *common)
            run.update(
                expand_s=round(out["seconds"], 2),
                child_wall_s=round(wall, 2),
                peak_rss_mb=round(peak_mb, 1),
                vm_hwm_mb=round(out["vm_hwm_mb"], 1),
                ledger_rows=out["rows"],
                enqueued=out["batches"],
            )
            runs.append(run)
            print(json.dumps(run), file=sys.stderr)
    finally:
        _child("--step", "drop", name, *common)
    expand = [r["expand_s"] for r in runs]
    result: dict[str, Any] = {
        "subscribers": subscribers,
        "channels": channels,
        "runs": len(runs),
        "seed_s": round(seed_s, 1),
        "expand_s": _span(expand),
        "peak_rss_mb": _span([r["peak_rss_mb"] for r in runs], 1),
        "rows_per_s": round(sum(sum(r["ledger_rows"].values()) for r in runs) / sum(expand)),
    }
    for kind in ("insert_select", "copy"):
        ceiling = [r[f"ceiling_{kind}_s"] for r in runs]
        result[f"ceiling_{kind}_s"] = _span(ceiling)
        result[f"ratio_to_{kind}"] = round(_median(expand) / _median(ceiling), 2)
    result.update(
        target_s=10,
        target_rss_mb=150,
        load_avg_1m=round(os.getloadavg()[0], 2),
        cpus=os.cpu_count(),
        per_run=runs,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
